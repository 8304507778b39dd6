"""The pre phase of a run over many subscriptions: queue messages of a few subscriptions each.

ARM throttles writes per subscription, so a run's requests fall into lanes, one per
subscription, that do not compete. One worker sends up to MAINTENANCE_SUBSCRIPTIONS_PER_WORKER
lanes itself (each lane with workers of its own, `handlers.adapters.operations`). A run over more
subscriptions is split: the worker that takes the pre event (the coordinator) finds the run's
machines and hands each group of that many subscriptions to the work queue as a message of its
own. The Functions host runs those messages side by side, and on more instances as the queue
grows, so a large estate is not bound to one worker's threads, CPU or timeout.

Each group's worker claims its phase (`phase-pre-lane-<hash>`) and runs the pre phase for its
subscriptions' machines (their views, rows, starts, snapshots and waiting, as one worker does
for a smaller run) but not the verdict. The last group to finish queues the
verdict; so does the coordinator, up front, with the message invisible until a little after
the deadline, in case a group never finishes (its worker failing on every attempt). A run that
is not split gets that fallback too: a worker failing on every attempt must not let an
unchecked run go ahead. The verdict step claims
`phase-pre-verdict` (the first message wins), runs the checks over the whole run, cancels when
needed and completes the pre phase, which the post event waits for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from azure.core.exceptions import AzureError

from handlers.adapters.inventory import (
    MachineKind,
    VmView,
    find_run_machines,
    find_unreadable_subscriptions,
    get_vm_views,
)
from handlers.adapters.operations import describe_error
from handlers.core.events import MaintenanceEvent
from handlers.core.logs import RunLogger
from handlers.core.work import LANE_PHASE_PREFIX, VERDICT_PHASE, Step, WorkMessage, lane_phase, send_work
from handlers.ledger import MachineRecord, PhaseStatus, subscription_of, utcnow
from handlers.phases.pre.checks import CheckContext
from handlers.phases.pre.prepare import is_due, run_pre, summarize
from handlers.phases.pre.verdict import decide
from handlers.runtime import Runtime

__all__ = ["LANE_PHASE_PREFIX", "VERDICT_PHASE", "dispatch", "lane_phase", "lanes_finished", "run_lanes",
           "run_verdict", "verdict_delay"]
# What the verdict keeps back before the cutoff for the cancel, when its discovery is slow.
_CANCEL_RESERVE = timedelta(seconds=15)


def dispatch(
    runtime: Runtime, event: MaintenanceEvent, lanes: list[str], machines: int, log: RunLogger
) -> dict[str, Any]:
    """Queue the run's subscriptions in groups."""
    ledger = runtime.ledger
    queue = runtime.work_queue()
    size = runtime.settings.subscriptions_per_worker
    groups = [lanes[i : i + size] for i in range(0, len(lanes), size)]
    ledger.open_phases(event.correlation_id, [lane_phase(group) for group in groups])
    for group in groups:
        send_work(queue, WorkMessage(event, Step.LANES, tuple(group)))
    ledger.update_run(event.correlation_id, {"MachineCount": machines, "SplitMessages": len(groups)})
    log.info("%d machines over %d subscriptions: split into %d queue messages of up to %d subscriptions",
             machines, len(lanes), len(groups), size)
    return {"machines": machines, "subscriptions": len(lanes), "messages": len(groups), "dispatched": True}


def run_lanes(runtime: Runtime, event: MaintenanceEvent, lanes: list[str], log: RunLogger, *,
              stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """The pre phase for these subscriptions' machines, without the verdict. A retried message
    finds the rows of its earlier attempt and reads the state of what they left pending."""
    summary = run_pre(runtime, event, log, scope=lanes, stop=stop)
    return {"subscriptions": lanes, "machines": summary.get("machines", 0), "outcomes": summary.get("outcomes", {}),
            "snapshots": summary.get("snapshots", {}), **({"late": summary["late"]} if "late" in summary else {})}


def verdict_delay(runtime: Runtime, event: MaintenanceEvent) -> float:
    """Seconds from now until the fallback verdict is due: a little after the deadline (half the
    safety margin, at most a minute), so the worker's own verdict comes first when it is alive."""
    assert event.cancellation_cutoff is not None
    deadline = event.cancellation_cutoff - timedelta(seconds=runtime.settings.cutoff_safety_seconds)
    margin = min(60.0, runtime.settings.cutoff_safety_seconds / 2)
    return max(0.0, (deadline - utcnow()).total_seconds() + margin)


def lanes_finished(runtime: Runtime, event: MaintenanceEvent) -> bool:
    statuses = runtime.ledger.phase_statuses(event.correlation_id, LANE_PHASE_PREFIX)
    return bool(statuses) and all(status == PhaseStatus.COMPLETED.value for status in statuses.values())


def run_verdict(runtime: Runtime, event: MaintenanceEvent, log: RunLogger) -> dict[str, Any]:
    """The checks over the whole run and the cancel when they fail, once every group is done or
    the deadline has come. The run's machines are found again: one that no group recorded, and a
    start or snapshot a group left pending, count against the run. When Resource Graph cannot
    say which machines the run has before the cutoff, the verdict fails closed."""
    ledger = runtime.ledger
    graph = runtime.clients.resource_graph()
    unfinished = not lanes_finished(runtime, event)
    records = {r.resource_id.lower(): r for r in ledger.list_machines(event.correlation_id)}
    snapshots = {r.row_key(): r for r in ledger.list_snapshots(event.correlation_id)}
    assert event.cancellation_cutoff is not None
    budget = max(1.0, (event.cancellation_cutoff - _CANCEL_RESERVE - utcnow()).total_seconds())
    bounded = {"timeout": budget, "retry_backoff_max": min(5.0, budget / 4)}
    unchecked = ""
    unreadable: list[str] = []
    views: dict[str, VmView] = {}
    try:
        machines = find_run_machines(graph, event.subscription_ids, event.correlation_id, log=log, options=bounded)
        unreadable = find_unreadable_subscriptions(graph, event.subscription_ids, options=bounded)
    except AzureError as exc:
        unchecked = f"Resource Graph: {describe_error(exc)}"
        log.error("the run's machines could not be found at the deadline: %s", unchecked)
        machines = []
    if unfinished:
        log.warning("deciding at the deadline with work unfinished: what was not recorded counts as timed out")
    detail = "its subscription's work had not finished at the deadline"
    for key, record in records.items():
        if is_due(record):
            records[key] = replace(record, pre_outcome="timed-out", pre_detail=detail)
    for key, snapshot in snapshots.items():
        if is_due(snapshot):
            snapshots[key] = replace(snapshot, outcome="timed-out", detail=detail)
    for machine in machines:
        if machine.resource_id.lower() not in records and machine.kind is MachineKind.VM:
            records[machine.resource_id.lower()] = MachineRecord(
                resource_id=machine.resource_id, kind=machine.kind.value, subscription_id=machine.subscription_id,
                resource_group=machine.resource_group, name=machine.name, pre_outcome="unknown",
                pre_detail=f"not recorded: {detail}", lane=subscription_of(machine.resource_id))
    if not unchecked:
        ids = [r.resource_id for r in records.values() if r.kind != MachineKind.OTHER.value]
        try:
            views = get_vm_views(graph, event.subscription_ids, ids, options=bounded)  # tags now, for the hold tag
        except AzureError as exc:
            unchecked = f"Resource Graph (machine tags): {describe_error(exc)}"
    context = CheckContext(runtime, records, views, list(snapshots.values()), unreadable_subscriptions=unreadable)
    verdict = decide(runtime, event, context, log, unchecked=unchecked)
    return summarize(records, snapshots, verdict=verdict.verdict, cancel=verdict.cancel)
