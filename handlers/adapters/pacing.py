"""Client-side pacing of ARM requests to the published throttling limits.

Azure Resource Manager refills its per-subscription buckets at a fixed rate (writes 10/s after a
burst of 200, reads 25/s after 250, Resource Graph about 15 queries per 5 s). A fleet's worth of
requests sent as fast as threads allow runs the bucket dry, and every request past it costs a
429 and a retry. The transport wrapper here takes a token from a bucket of the same shape before
each request leaves (retries included), so requests go out at the rate ARM accepts them. 429s
that still happen (other clients share the buckets) are handled by the retry policy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from azure.core.pipeline.transport import HttpTransport

from handlers.core.clock import Ticker
from handlers.core.ids import subscription_of_url


@dataclass(frozen=True)
class Rate:
    burst: float
    per_second: float


# Published limits (per principal, subscription and region): the refill rate as published (a
# slower one would cost a fleet's whole send stretch: 2000 writes at 9.5/s are 10 s longer than
# at 10/s), the burst a little short of it, so that requests that reach ARM bunched (one delayed
# in the pipeline, the next not) still find a token.
DEFAULT_RATES = {
    "read": Rate(240, 25.0),
    "write": Rate(190, 10.0),
    "delete": Rate(190, 10.0),
    "graph": Rate(14, 3.0),
}


class _Bucket:
    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = rate.burst
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token; returns how long to wait for it (the token is reserved either way)."""
        self.tokens = min(self.rate.burst, self.tokens + (now - self.updated) * self.rate.per_second)
        self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate.per_second


class PacedTransport(HttpTransport[Any, Any]):
    """Wraps the real transport: before each request (retries included) waits for a token."""

    def __init__(self, inner: HttpTransport[Any, Any], clock: Ticker, rates: dict[str, Rate] | None = None) -> None:
        self._inner = inner
        self._clock = clock
        self._rates = rates or DEFAULT_RATES
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def send(self, request: Any, **kwargs: Any) -> Any:
        kind, scope = classify(request.method, str(request.url))
        with self._lock:
            bucket = self._buckets.get((kind, scope))
            if bucket is None:
                bucket = self._buckets[(kind, scope)] = _Bucket(self._rates[kind], self._clock.now())
            wait = bucket.take(self._clock.now())
        if wait > 0:
            self._clock.sleep(wait)
        return self._inner.send(request, **kwargs)

    def sleep(self, duration: float) -> None:
        self._inner.sleep(duration)

    def open(self) -> None:
        self._inner.open()

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> PacedTransport:
        self._inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self._inner.__exit__(*args)


def classify(method: str, url: str) -> tuple[str, str]:
    """(bucket kind, scope) of a request: Resource Graph is per caller, the rest per subscription."""
    if "/providers/microsoft.resourcegraph/" in url.lower():
        return "graph", ""
    scope = subscription_of_url(url)
    method = method.upper()
    if method in ("GET", "HEAD"):
        return "read", scope
    if method == "DELETE":
        return "delete", scope
    return "write", scope
