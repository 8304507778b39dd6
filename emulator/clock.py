"""Simulated time: a scaled wall clock the whole emulator shares."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


def arm_time(value: datetime) -> str:
    """An aware datetime as the ISO 8601 text ARM uses (UTC, `Z` suffix)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EmulatorClock:
    """Simulated seconds since creation; `time_scale` real seconds pass per simulated second.

    The clock keeps running in real time (scaled) so that background LRO pollers and thread
    pools see time move on their own; `advance()` jumps ahead for tests that must not wait.
    Processes on one machine share it by passing the same `epoch` and `origin` (a reading of
    `time.monotonic()`, whose clock the machine's processes share) and no `advance()`: the
    emulator serving in one process, the Functions hosts in others.
    """

    def __init__(self, time_scale: float = 1.0, *, epoch: datetime | None = None,
                 origin: float | None = None) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = time_scale
        self.epoch = epoch or datetime.now(UTC)
        self.origin = time.monotonic() if origin is None else origin
        self._t0 = self.origin
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Simulated seconds elapsed since the clock was created."""
        with self._lock:
            offset = self._offset
        return (time.monotonic() - self._t0) / self.time_scale + offset

    def advance(self, seconds: float) -> None:
        """Jump simulated time forward without sleeping."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds` simulated seconds (scaled to real time)."""
        if seconds > 0:
            time.sleep(seconds * self.time_scale)

    def to_datetime(self, t: float) -> datetime:
        """The aware UTC datetime of simulated instant `t`."""
        return self.epoch + timedelta(seconds=t)

    def isoformat(self, t: float) -> str:
        """`t` as the ISO 8601 text ARM uses (UTC, `Z` suffix)."""
        return arm_time(self.to_datetime(t))

    def utcnow(self) -> datetime:
        """The current simulated time as an aware UTC datetime."""
        return self.to_datetime(self.now())


def operation_status(now: float, ends: float, *, failed: bool) -> str:
    """An async operation's status as ARM reports it, for one that ends at simulated time `ends`."""
    if now < ends:
        return "InProgress"
    return "Failed" if failed else "Succeeded"
