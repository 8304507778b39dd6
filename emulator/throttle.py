"""Token buckets in simulated time, with the limits Azure documents (DOMAIN.md section 6)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_PER_MINUTE = 1 / 60


@dataclass(frozen=True)
class BucketSpec:
    """A bucket's burst size and refill rate (tokens per simulated second)."""

    capacity: float
    refill_per_second: float


# Policy names are the keys a caller may override with AzureEmulator(buckets=...).
DEFAULT_BUCKETS: Mapping[str, BucketSpec] = {
    # Azure Resource Manager, per subscription (really per principal and region too).
    "arm.read": BucketSpec(250, 25),
    "arm.write": BucketSpec(200, 10),
    "arm.delete": BucketSpec(200, 10),
    # Compute resource provider: per VM and per subscription, refills per minute.
    "compute.update.vm": BucketSpec(12, 4 * _PER_MINUTE),
    "compute.update.subscription": BucketSpec(1500, 500 * _PER_MINUTE),
    "compute.delete.vm": BucketSpec(12, 4 * _PER_MINUTE),
    "compute.delete.subscription": BucketSpec(1500, 500 * _PER_MINUTE),
    "compute.get.vm": BucketSpec(36, 12 * _PER_MINUTE),
    "compute.get.subscription": BucketSpec(24000, 8000 * _PER_MINUTE),
    "compute.operation.vm": BucketSpec(45, 15 * _PER_MINUTE),
    "compute.operation.subscription": BucketSpec(15000, 5000 * _PER_MINUTE),
    # Snapshot create/update (PUT), per subscription. DOMAIN.md's table has no policy for disks or
    # snapshots; the disk RP reports `x-ms-ratelimit-remaining-resource:
    # Microsoft.Compute/CreateUpdateDisks3Min;999,...30Min;7999` after one write, i.e. 1000 writes
    # per 3 minutes (observed in Azure/azure-libraries-for-java#1252). So: 1000 burst, refilled over
    # 3 minutes. Snapshot deletes draw only on arm.delete.
    "compute.snapshot.subscription": BucketSpec(1000, 1000 / 180),
    # Resource Graph: about 15 queries per 5 seconds per user; one caller here.
    "graph": BucketSpec(15, 3),
}


class TokenBucket:
    """A token bucket that refills continuously in simulated time."""

    def __init__(self, spec: BucketSpec, now: float) -> None:
        self.spec = spec
        self._tokens = float(spec.capacity)
        self._updated = now

    def tokens(self, now: float) -> float:
        """Tokens available at `now`."""
        if now > self._updated:
            gained = (now - self._updated) * self.spec.refill_per_second
            self._tokens = min(float(self.spec.capacity), self._tokens + gained)
            self._updated = now
        return self._tokens

    def wait_time(self, now: float) -> float:
        """Simulated seconds until one token is available (0 if one is now)."""
        missing = 1.0 - self.tokens(now)
        if missing <= 0:
            return 0.0
        if self.spec.refill_per_second <= 0:
            return math.inf
        return missing / self.spec.refill_per_second

    def time_to_full(self, now: float) -> float:
        """Simulated seconds until the bucket is full again."""
        missing = self.spec.capacity - self.tokens(now)
        if missing <= 0 or self.spec.refill_per_second <= 0:
            return 0.0
        return missing / self.spec.refill_per_second

    def take(self, now: float) -> None:
        """Consume one token (the caller checked `wait_time` first)."""
        self._tokens = self.tokens(now) - 1.0


class Throttler:
    """Buckets keyed by (policy, scope); not thread-safe: the emulator's lock guards it."""

    def __init__(self, specs: Mapping[str, BucketSpec | tuple[float, float]] | None = None) -> None:
        merged = dict(DEFAULT_BUCKETS)
        for name, spec in (specs or {}).items():
            if name not in DEFAULT_BUCKETS:
                raise ValueError(f"unknown bucket {name!r}; known: {', '.join(sorted(DEFAULT_BUCKETS))}")
            merged[name] = spec if isinstance(spec, BucketSpec) else BucketSpec(*spec)
        self.specs: dict[str, BucketSpec] = merged
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def bucket(self, policy: str, scope: str, now: float) -> TokenBucket:
        """The bucket of `policy` for `scope` (created full on first use)."""
        key = (policy, scope.lower())
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.specs[policy], now)
        return bucket

    def acquire(self, keys: Iterable[tuple[str, str]], now: float) -> float | None:
        """Take one token from every bucket, or none: returns None or the Retry-After in seconds.

        All-or-nothing, because a request refused by one limit is not charged by the others.
        """
        buckets = [self.bucket(policy, scope, now) for policy, scope in keys]
        wait = max((b.wait_time(now) for b in buckets), default=0.0)
        if wait > 0:
            return wait
        for b in buckets:
            b.take(now)
        return None


def retry_after_header(wait: float) -> str:
    """Whole seconds, at least 1, as ARM sends them."""
    if math.isinf(wait):
        return "3600"
    return str(max(1, math.ceil(wait)))
