"""Capped exponential backoff, and outage logging that says one thing per outage."""

from __future__ import annotations

import logging
from collections.abc import Callable


class Backoff:
    """Doubling delays from `initial` up to `maximum`; `ready()` says whether to try again."""

    def __init__(self, initial: float, maximum: float, *, monotonic: Callable[[], float]) -> None:
        self._initial = initial
        self._maximum = maximum
        self._monotonic = monotonic
        self._failures = 0
        self._next_at = 0.0

    @property
    def failures(self) -> int:
        return self._failures

    def ready(self) -> bool:
        return self._monotonic() >= self._next_at

    def failed(self) -> float:
        """Record a failure; returns the delay before the next attempt."""
        delay = min(self._maximum, self._initial * (2 ** min(self._failures, 32)))
        self._failures += 1
        self._next_at = self._monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self._failures = 0
        self._next_at = 0.0


class OutageLog:
    """Logs the start of an outage and its end (with its duration), nothing in between.

    An endpoint that is down for ten minutes would otherwise log hundreds of identical lines
    (the agent polls every second); operators need to know when it started and ended.
    """

    def __init__(self, what: str, logger: logging.Logger, *, monotonic: Callable[[], float]) -> None:
        self._what = what
        self._log = logger
        self._monotonic = monotonic
        self._since: float | None = None
        self._failures = 0

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    def failed(self, reason: str, *, retry_in: float, level: int = logging.WARNING) -> None:
        self._failures += 1
        if self._since is None:
            self._since = self._monotonic()
            self._log.log(level, "%s unavailable: %s; retrying with backoff (next in %.1f s)",
                          self._what, reason, retry_in)
        else:
            self._log.debug("%s still unavailable (%d failures): %s", self._what, self._failures, reason)

    def recovered(self, detail: str = "") -> None:
        if self._since is None:
            return
        duration = self._monotonic() - self._since
        self._log.info("%s available again after %.1f s (%d failed attempts)%s",
                       self._what, duration, self._failures, f"; {detail}" if detail else "")
        self._since = None
        self._failures = 0
