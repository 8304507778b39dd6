"""The one clock: monotonic seconds (pacing, poll schedules, waiting) and wall time (deadlines,
records), injected through the runtime so that an emulator or a test can run either on its own
time. Nothing else in the toolkit reads the time."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol


class Ticker(Protocol):
    """Seconds on a monotonic clock, and a way to wait on it."""

    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


def system_utcnow() -> datetime:
    return datetime.now(UTC)


class Clock:
    """Monotonic seconds and a way to wait on them (`ticker`), and wall time (`wall`)."""

    def __init__(self, ticker: Ticker | None = None, wall: Callable[[], datetime] | None = None) -> None:
        self._ticker = ticker
        self._wall = wall or system_utcnow

    def now(self) -> float:
        return self._ticker.now() if self._ticker is not None else time.monotonic()

    def sleep(self, seconds: float) -> None:
        if self._ticker is not None:
            self._ticker.sleep(seconds)
        elif seconds > 0:
            time.sleep(seconds)

    def utcnow(self) -> datetime:
        """Aware UTC wall time."""
        return self._wall()

    def seconds_until(self, when: datetime) -> float:
        """Wall seconds from now until `when` (negative once it has passed)."""
        return (when - self.utcnow()).total_seconds()


SYSTEM_CLOCK = Clock()
