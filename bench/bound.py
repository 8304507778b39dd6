"""The lower bound the throttling model allows for a fleet: no client can finish sooner.

For each subscription s (subscriptions run in parallel: their ARM and compute buckets are
separate), with S_s starts, P_s snapshot PUTs and B(C, r) a bucket of burst C and refill r/s:

    writes   t_w(s) = max( (S_s + P_s - 200) / 10,          ARM writes        B(200, 10/s)
                           (S_s - 1500) / (500/60),         compute Update VM B(1500, 500/min)
                           (P_s - 1000) / (1000/180),       disk writes       B(1000, 1000/3min)
                           0 )
             the last write is sent no sooner than t_w(s), then its operation runs D(s): the longest
             operation of the work (a start, 60 s, when there is any; else a snapshot, 30 s). The
             app sends every snapshot before any start, so its last write is a start.
    reads    every operation needs at least one status poll that sees it finished (the poll that
             costs nothing extra); R_s = S_s + P_s (+ one instance-view GET per VM when the
             client reads those, as the baseline does), drawn from ARM reads B(250, 25/s) and
             compute Get operation B(15000, 5000/min):
             t_r(s) = max( (R_s - 250) / 25, (R_s - 15000) / (5000/60), 0 )
    T(s) = max( t_w(s) + D(s), t_r(s) ) + 2 * latency       (the last write's and the last poll's
                                                              round trips)

Discovery comes first (the plan needs it) and is one caller's sequence of Resource Graph queries,
each a round trip, against B(15, 15 per 5 s):

    Q = ceil(machines / 1000)      pages of the run's applyUpdates rows (PAGE_SIZE)
      + ceil(VMs / 200)            VM views: power state, tags, disks (IDS_PER_QUERY)
      + ceil(snapshots / 200)      existing snapshots of those names (IDS_PER_QUERY)
    T_graph = max( Q * latency, (Q - 15) / 3 + latency )

    bound = T_graph + max over s of T(s)

Not in the bound: polling granularity (an operation is seen done only at the next poll), the
ledger (Table storage) and the CPU time of the client, which are the client's own costs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from emulator.throttle import DEFAULT_BUCKETS, BucketSpec

PAGE_SIZE = 1000  # handlers/inventory.py PAGE_SIZE
IDS_PER_QUERY = 200  # handlers/inventory.py IDS_PER_QUERY (also used for existing-snapshot lookups)


@dataclass(frozen=True)
class Work:
    """What one subscription's share of the run needs."""

    starts: int = 0
    snapshots: int = 0
    extra_reads: int = 0  # reads beyond one poll per operation (e.g. instance-view GETs)


@dataclass(frozen=True)
class Bound:
    total: float
    graph_queries: int
    graph_seconds: float
    per_subscription: dict[str, float]
    limiting: str  # which term decided the slowest subscription

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _drain(count: float, spec: BucketSpec) -> float:
    """Seconds until the `count`-th token of a full bucket can be taken."""
    return max(0.0, (count - spec.capacity) / spec.refill_per_second)


def lower_bound(
    work: Mapping[str, Work],
    *,
    machines: int,
    vms: int,
    snapshots: int,
    start_seconds: float,
    snapshot_seconds: float,
    latency: float,
    graph: bool = True,
    buckets: Mapping[str, BucketSpec] = DEFAULT_BUCKETS,
) -> Bound:
    """The bound of the module docstring; `graph=False` for a client that asks Resource Graph nothing."""
    queries = 0
    graph_seconds = 0.0
    if graph and machines:
        queries = (math.ceil(machines / PAGE_SIZE) + math.ceil(vms / IDS_PER_QUERY)
                   + math.ceil(snapshots / IDS_PER_QUERY))
        graph_seconds = max(queries * latency, _drain(queries, buckets["graph"]) + latency)
    per_subscription: dict[str, float] = {}
    limiting: dict[str, str] = {}
    for subscription, w in work.items():
        operations = w.starts + w.snapshots
        if operations == 0 and w.extra_reads == 0:
            continue
        writes = {
            "arm.write": _drain(operations, buckets["arm.write"]),
            "compute.update": _drain(w.starts, buckets["compute.update.subscription"]),
            "disk writes": _drain(w.snapshots, buckets["compute.snapshot.subscription"]),
        }
        duration = start_seconds if w.starts else snapshot_seconds if w.snapshots else 0.0
        write_term, write_name = max((v, k) for k, v in writes.items())
        reads = operations + w.extra_reads
        read_term = max(_drain(reads, buckets["arm.read"]),
                        _drain(operations, buckets["compute.operation.subscription"]))
        if read_term > write_term + duration:
            per_subscription[subscription] = read_term + 2 * latency
            limiting[subscription] = "arm.read"
        else:
            per_subscription[subscription] = write_term + duration + 2 * latency
            limiting[subscription] = f"{write_name} + operation" if write_term > 0 else "operation duration"
    slowest = max(per_subscription, key=lambda s: per_subscription[s], default="")
    total = graph_seconds + (per_subscription[slowest] if slowest else 0.0)
    return Bound(total=total, graph_queries=queries, graph_seconds=graph_seconds,
                 per_subscription=per_subscription, limiting=limiting.get(slowest, "-"))
