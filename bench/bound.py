"""The lower bound the throttling model allows for a fleet: no client can finish sooner.

Bucket B(C, r): burst C, refill r per second; the k-th token of a full bucket is there at
t(k; B) = max(0, (k - C) / r). Per subscription s (subscriptions run in parallel: their ARM and
compute buckets are separate), with S_s starts and P_s snapshot PUTs, W_s = S_s + P_s writes:

    every write draws on ARM writes B(200, 10/s); starts also on compute Update VM B(1500, 500/min),
    snapshot PUTs also on disk writes B(1000, 1000 per 3 min).
    Whatever the order, the last start is at best the S_s-th write and the last write of all the
    W_s-th; a start then runs D_start (60 s), a snapshot D_snap (30 s). (The best order sends the
    starts first; a client that must request a VM's snapshot before its start cannot do better
    than the (S_s + min(S_s, P_s))-th write for its last start: `snapshot_before_start=True`.)

    T_start(s) = max( t(S_s; arm.write), t(S_s; compute.update) ) + D_start
    T_snap(s)  = max( t(W_s; arm.write), t(P_s; disk writes) ) + D_snap
    T_read(s)  = max( t(R_s; arm.read B(250, 25/s)), t(R_s; Get operation B(15000, 5000/min)) )
                 R_s = S_s + P_s + extra reads: every operation needs at least the one status poll
                 that sees it finished; a client that GETs each VM (the baseline) adds those
    T(s) = max(T_start(s), T_snap(s), T_read(s)) + 2 * latency   (the last write's and the last
                                                                  poll's round trips)

In-guest commands (the in-guest run, `--guest-fraction`): G_s run commands, K_s of them on machines
that are off. A tagged machine's chain is start (if off) -> command -> snapshot, one after another:

    T_chain(s) = max( t(K_s; arm.write), t(S_s + G_s; compute.update) ) + [D_start if K_s] + D_script + D_snap

and the commands are writes too (W_s = S_s + P_s + G_s). D_script includes the guest agent's pickup
(the emulator's start delay, 1 s). Their deletes come after the verdict and are not in the bound.

Discovery comes first (the plan needs it): one caller's queries, one after another, each a round
trip, against Resource Graph's B(15, 15 per 5 s). A query returns at most 1000 rows, so any client
needs at least the pages of the run's machines and the pages of their views (state, tags, disks):

    Q = ceil(machines / 1000) + ceil(VMs / 1000)
    T_graph = max( Q * latency, t(Q; graph) + latency )

    bound = T_graph + max over s of T(s)

Not in it: polling granularity (an end is seen at the next poll), the ledger (Table storage) and
the client's CPU: those are the client's own costs.

The issue that asked for this benchmark wrote the bound as "the writes against the write bucket,
then + the longest operation after the last write", with lookups in chunks of 200 ids and the
existing-snapshot lookups counted. That holds for a client that sends every snapshot before any
start, but not for one that sends starts first (the app does since 2026-11-22): it is kept as
`issue_formula` in the results, for comparison, and not used for the ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from emulator.throttle import DEFAULT_BUCKETS, BucketSpec

PAGE_SIZE = 1000  # Resource Graph's largest page


@dataclass(frozen=True)
class Work:
    """What one subscription's share of the run needs."""

    starts: int = 0
    snapshots: int = 0
    extra_reads: int = 0  # reads beyond one poll per operation (e.g. instance-view GETs)
    commands: int = 0  # run commands (stop services in the guest; each machine's snapshot waits for it)
    chained_starts: int = 0  # of those, machines that are off: start, then the command, then the snapshot


@dataclass(frozen=True)
class Bound:
    total: float
    graph_queries: int
    graph_seconds: float
    per_subscription: dict[str, float]
    limiting: str  # which term decided the slowest subscription
    issue_formula: float  # the issue's formula (see the module docstring); not a bound for every order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _t(count: float, spec: BucketSpec) -> float:
    """Seconds until the `count`-th token of a full bucket can be taken."""
    return max(0.0, (count - spec.capacity) / spec.refill_per_second)


def _graph_seconds(queries: int, latency: float, buckets: Mapping[str, BucketSpec]) -> float:
    return max(queries * latency, _t(queries, buckets["graph"]) + latency) if queries else 0.0


def lower_bound(
    work: Mapping[str, Work],
    *,
    machines: int,
    vms: int,
    snapshots: int,
    start_seconds: float,
    snapshot_seconds: float,
    latency: float,
    script_seconds: float = 0.0,
    graph: bool = True,
    snapshot_before_start: bool = False,
    buckets: Mapping[str, BucketSpec] = DEFAULT_BUCKETS,
) -> Bound:
    """The bound of the module docstring; `graph=False` for a client that asks Resource Graph nothing."""
    queries = math.ceil(machines / PAGE_SIZE) + math.ceil(vms / PAGE_SIZE) if graph and machines else 0
    graph_seconds = _graph_seconds(queries, latency, buckets)
    per_subscription: dict[str, float] = {}
    limiting: dict[str, str] = {}
    issue: list[float] = []
    write, read = buckets["arm.write"], buckets["arm.read"]
    for subscription, w in work.items():
        operations = w.starts + w.snapshots + w.commands
        if operations == 0 and w.extra_reads == 0:
            continue
        terms: list[tuple[float, float, str]] = []  # (finish, throttling wait, name)
        if w.starts:
            before = w.starts + min(w.starts, w.snapshots) if snapshot_before_start else w.starts
            for name, wait in (("starts: arm.write", _t(before, write)),
                               ("starts: compute.update", _t(w.starts, buckets["compute.update.subscription"]))):
                terms.append((wait + start_seconds, wait, name))
        if w.snapshots:
            for name, wait in (("snapshots: arm.write", _t(operations, write)),
                               ("snapshots: disk writes", _t(w.snapshots, buckets["compute.snapshot.subscription"]))):
                terms.append((wait + snapshot_seconds, wait, name))
        if w.commands:
            # A tagged machine's chain: its start (if off), its command, its snapshot, one after another.
            # The last chained start is at best the chained_starts-th write; commands and starts both
            # draw on compute Update VM.
            chain = script_seconds + snapshot_seconds + (start_seconds if w.chained_starts else 0.0)
            for name, wait in (("chain: arm.write", _t(w.chained_starts, write)),
                               ("chain: compute.update", _t(w.starts + w.commands,
                                                            buckets["compute.update.subscription"]))):
                terms.append((wait + chain, wait, name))
        reads = operations + w.extra_reads
        wait = max(_t(reads, read), _t(operations, buckets["compute.operation.subscription"]))
        terms.append((wait, wait, "reads: arm.read"))
        value, wait, name = max(terms)
        name = name if wait > 0 else "operation duration (no throttling wait)"
        per_subscription[subscription] = value + 2 * latency
        limiting[subscription] = name
        # The issue's formula: every write, then the longest operation.
        longest = start_seconds if w.starts else snapshot_seconds if w.snapshots else 0.0
        issue.append(max(_t(operations, write), _t(w.starts, buckets["compute.update.subscription"]),
                         _t(w.snapshots, buckets["compute.snapshot.subscription"])) + longest + 2 * latency)
    slowest = max(per_subscription, key=lambda s: per_subscription[s], default="")
    total = graph_seconds + (per_subscription[slowest] if slowest else 0.0)
    issue_queries = (math.ceil(machines / PAGE_SIZE) + math.ceil(vms / 200) + math.ceil(snapshots / 200)
                     if graph and machines else 0)
    issue_total = _graph_seconds(issue_queries, latency, buckets) + max(issue, default=0.0)
    return Bound(total=total, graph_queries=queries, graph_seconds=graph_seconds,
                 per_subscription=per_subscription, limiting=limiting.get(slowest, "-"), issue_formula=issue_total)


# The post phase (module docstring of `post_bound`).


@dataclass(frozen=True)
class PostWork:
    """What one subscription's share of the post phase needs."""

    deallocates: int = 0  # restores of VMs that were deallocated
    power_offs: int = 0  # restores of VMs that were stopped
    deletes: int = 0  # expired snapshots of earlier runs
    tags: int = 0  # machines whose result tags are written
    checks: int = 0  # machines expected on after the run (their instance view is read)


def post_bound(
    work: Mapping[str, PostWork],
    *,
    machines: int,
    snapshots: int,
    deallocate_seconds: float,
    power_off_seconds: float,
    delete_seconds: float,
    latency: float,
    buckets: Mapping[str, BucketSpec] = DEFAULT_BUCKETS,
) -> Bound:
    """The post phase's lower bound: no client can finish the restores, the deletes and the tags sooner.

    Per subscription s, with D_s deallocates, O_s power offs (R_s = D_s + O_s restores), X_s
    snapshot deletes, T_s tag writes and C_s instance-view reads:

        restores and tags are ARM writes B(200, 10/s); deallocates also draw on compute Delete VM
        B(1500, 500/min), power offs on Update VM B(1500, 500/min); deletes on ARM deletes
        B(200, 10/s). Writes are granted one after another, so the best order sends the longest
        operations first (an exchange argument: swapping a longer operation to an earlier token
        never ends later): the deallocates, then the power offs, then the tags, which end when
        they are answered. With the durations D_deallocate >= D_power_off:

        T_restore(s) = max( max(t(D_s; write), t(D_s; delete VM)) + D_deallocate,
                            max(t(R_s; write), t(O_s; update VM)) + D_power_off )
        T_tags(s)    = max( t(R_s + T_s; write), G + t(T_s; write) )
        T_delete(s)  = G + t(X_s; delete) + D_delete
        T_read(s)    = max( t(R_s + X_s + C_s; arm.read), t(R_s + X_s; Get operation) )
                       (a poll per operation that sees it end, a read per machine checked)
        T(s) = max(T_restore, T_tags, T_delete, T_read) + 2 * latency

    G: the Resource Graph pages a client reads before its first delete or tag (the toolkit's
    snapshots, the patch results), one after another against B(15, 15 per 5 s):
    Q = ceil(snapshots / 1000) + ceil(machines / 1000). The restores need no query (the ledger
    says what was started), so G is not added to them. bound = max over s of T(s).

    Not in it: the ledger, the report's upload, the client's CPU; and the order a client keeps for
    its own reasons (the toolkit reads patch results before it tags): those are the client's costs.
    `issue_formula` here is what a client that runs the restores, the deletes and the tags one
    after another cannot beat (the restores' term + the deletes' + t(T_s; write)): for comparison.
    """
    queries = math.ceil(snapshots / PAGE_SIZE) + math.ceil(machines / PAGE_SIZE)
    graph_seconds = _graph_seconds(queries, latency, buckets)
    write, delete, read = buckets["arm.write"], buckets["arm.delete"], buckets["arm.read"]
    longer, shorter = sorted([("deallocates", deallocate_seconds, "compute.delete.subscription"),
                              ("power offs", power_off_seconds, "compute.update.subscription")],
                             key=lambda kind: -kind[1])
    per_subscription: dict[str, float] = {}
    limiting: dict[str, str] = {}
    one_after_another: list[float] = []
    for subscription, w in work.items():
        counts = {"deallocates": w.deallocates, "power offs": w.power_offs}
        restores = w.deallocates + w.power_offs
        terms: list[tuple[float, float, str]] = []
        before = 0
        for name, seconds, policy in (longer, shorter):
            count = counts[name]
            if not count:
                continue
            before += count
            for bucket, wait in (("arm.write", _t(before, write)), (policy, _t(count, buckets[policy]))):
                terms.append((wait + seconds, wait, f"{name}: {bucket}"))
        if w.tags:
            for name, wait in (("tags: arm.write", _t(restores + w.tags, write)),
                               ("tags: resource graph, arm.write", graph_seconds + _t(w.tags, write))):
                terms.append((wait, wait, name))
        if w.deletes:
            wait = _t(w.deletes, delete)
            terms.append((graph_seconds + wait + delete_seconds, wait, "deletes: arm.delete"))
        operations = restores + w.deletes
        wait = max(_t(operations + w.checks, read), _t(operations, buckets["compute.operation.subscription"]))
        terms.append((wait, wait, "reads: arm.read"))
        value, wait, name = max(terms)
        per_subscription[subscription] = value + 2 * latency
        limiting[subscription] = name if wait > 0 else "operation duration (no throttling wait)"
        one_after_another.append(max((v for v, _, n in terms if n.startswith(("deallocates", "power offs"))),
                                     default=0.0) + (graph_seconds + _t(w.deletes, delete) + delete_seconds
                                                     if w.deletes else 0.0) + _t(w.tags, write) + 2 * latency)
    slowest = max(per_subscription, key=lambda s: per_subscription[s], default="")
    total = per_subscription[slowest] if slowest else 0.0
    return Bound(total=total, graph_queries=queries, graph_seconds=graph_seconds,
                 per_subscription=per_subscription, limiting=limiting.get(slowest, "-"),
                 issue_formula=max(one_after_another, default=0.0))
