"""The pre phase of a run over many subscriptions: queue messages of a few subscriptions each.

ARM throttles writes per subscription, so a run's requests fall into lanes, one per
subscription, that do not compete. One worker sends up to MAINTENANCE_SUBSCRIPTIONS_PER_WORKER
lanes itself (each lane with workers of its own, `handlers.operations`). A run over more
subscriptions is split: the worker that takes the pre event (the coordinator) plans the run and
stores its rows as usual, and hands each group of that many subscriptions to the work queue as a
message of its own as soon as the group's rows are stored. The Functions host runs those
messages side by side, and on more instances as the queue grows, so a large estate is not bound
to one worker's threads, CPU or timeout.

Each group's worker claims its phase (`phase-pre-lane-<hash>`), sends its starts and snapshots,
waits for them until the deadline and records the outcomes. The last group to finish queues the
verdict; so does the coordinator, up front, with the message invisible until the deadline, in
case a group never finishes (its worker failing on every attempt). The verdict step claims
`phase-pre-verdict` (the first message wins), runs the checks over the whole run, cancels when
needed and completes the pre phase, which the post event waits for.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from handlers.checks import CheckContext
from handlers.events import MaintenanceEvent
from handlers.intake import WORK_MESSAGE_VERSION
from handlers.inventory import MachineKind, RunMachine, get_vm_views
from handlers.ledger import MachineRecord, PhaseStatus, SnapshotRecord, utcnow
from handlers.logs import RunLogger
from handlers.prepare import (
    interleave,
    is_due,
    log_machines,
    machines_to_start,
    reconcile_existing,
    remember,
    send_due,
    summarize,
)
from handlers.runtime import Runtime
from handlers.verdict import decide

LANE_PHASE_PREFIX = "pre-lane-"
VERDICT_PHASE = "pre-verdict"


def lane_phase(lanes: list[str]) -> str:
    """The ledger phase of a group of lanes."""
    return LANE_PHASE_PREFIX + hashlib.sha256("|".join(sorted(lanes)).encode()).hexdigest()[:16]


def step_message(event: MaintenanceEvent, step: str, lanes: list[str] | None = None) -> str:
    """A work message for one step of a split pre phase: "lanes" (with its lanes) or "verdict"."""
    body: dict[str, Any] = {"version": WORK_MESSAGE_VERSION, "phase": event.kind.value, "step": step,
                            "event": event.to_dict()}
    if lanes is not None:
        body["lanes"] = lanes
    return json.dumps(body)


def dispatch(
    runtime: Runtime, event: MaintenanceEvent, deadline: datetime, records: dict[str, MachineRecord],
    snapshots: dict[str, SnapshotRecord], new_rows: list[Any], log: RunLogger,
) -> dict[str, Any]:
    """Store the run's rows group by group and queue each group once its rows are stored."""
    ledger = runtime.ledger
    queue = runtime.work_queue()
    rows: list[MachineRecord | SnapshotRecord] = [*records.values(), *snapshots.values()]
    due = [r for r in rows if is_due(r)]
    size = runtime.settings.subscriptions_per_worker
    lanes = sorted({r.lane for r in due})
    groups = [lanes[i : i + size] for i in range(0, len(lanes), size)]
    group_of = {lane: index for index, group in enumerate(groups) for lane in group}
    ledger.open_phases(event.correlation_id, [lane_phase(group) for group in groups])
    # The verdict, should a group never finish: invisible until the deadline.
    until_deadline = max(0, int((deadline - utcnow()).total_seconds()) + 1)
    queue.send_message(step_message(event, "verdict"), visibility_timeout=until_deadline)

    # Rows group by group; within a group, the starts of its subscriptions in turn, then their
    # snapshots (the order their worker sends them in).
    unwritten = {row.row_key(): row for row in new_rows}
    order: list[Any] = []
    for group in groups:
        mine = [r for r in due if r.row_key() in unwritten and r.lane in group]
        order += interleave([r for r in mine if isinstance(r, MachineRecord)], lambda r: r.lane)
        order += interleave([r for r in mine if isinstance(r, SnapshotRecord)], lambda r: r.lane)
    waiting = Counter(group_of[r.lane] for r in order)
    ordered = {r.row_key() for r in order}
    order += [r for key, r in unwritten.items() if key not in ordered]

    def release(index: int) -> None:
        queue.send_message(step_message(event, "lanes", groups[index]))
        log.info("queued the work of subscription(s) %s", ", ".join(groups[index]))

    for index in range(len(groups)):
        if not waiting[index]:
            release(index)  # its rows were stored by an earlier attempt
    for chunk in ledger.add_rows_in_order(event.correlation_id, order):
        remember(records, snapshots, chunk)
        for row in chunk:
            if row.row_key() in ordered:
                waiting[group_of[row.lane]] -= 1
                if waiting[group_of[row.lane]] == 0:
                    release(group_of[row.lane])
    log_machines(records, log)
    ledger.update_run(event.correlation_id, {"MachineCount": len(records), "Lanes": len(groups)})
    log.info("%d machines over %d subscriptions: sent from %d queue messages of up to %d subscriptions",
             len(records), len(lanes), len(groups), size)
    return {"machines": len(records), "subscriptions": len(lanes), "messages": len(groups), "dispatched": True}


def run_lanes(
    runtime: Runtime, event: MaintenanceEvent, lanes: list[str], *, attempt: int, log: RunLogger
) -> dict[str, Any]:
    """Send these subscriptions' starts and snapshots, wait for them until the deadline, record outcomes."""
    ledger = runtime.ledger
    assert event.cancellation_cutoff is not None
    deadline = event.cancellation_cutoff - timedelta(seconds=runtime.settings.cutoff_safety_seconds)
    run = event.correlation_id
    records = {r.resource_id.lower(): r for lane in lanes for r in ledger.list_machines(run, lane=lane)}
    snapshots = {r.row_key(): r for lane in lanes for r in ledger.list_snapshots(run, lane=lane)}
    machines = [_machine(r) for r in records.values() if is_due(r)]
    to_snapshot = [s for s in snapshots.values() if is_due(s)]
    if attempt > 1:
        # An earlier attempt may have sent some of these: look before sending again.
        machines = machines_to_start(runtime, event, machines, records, set(), log)
        if to_snapshot:
            reconciled = reconcile_existing(runtime, event, to_snapshot)
            snapshots.update(reconciled)
            ledger.save_rows(event.correlation_id, [r for r in reconciled.values() if not is_due(r)])
            to_snapshot = [s for s in reconciled.values() if is_due(s)]
    log.info("subscription(s) %s: %d start(s), %d snapshot(s) (attempt %d)", ", ".join(lanes), len(machines),
             len(to_snapshot), attempt)
    send_due(runtime, event, records, snapshots, machines, to_snapshot, [], deadline, log)
    summary = summarize(records, snapshots, verdict="", cancel="")
    return {"subscriptions": lanes, "machines": summary["machines"], "outcomes": summary["outcomes"],
            "snapshots": summary["snapshots"]}


def lanes_finished(runtime: Runtime, event: MaintenanceEvent) -> bool:
    statuses = runtime.ledger.phase_statuses(event.correlation_id, LANE_PHASE_PREFIX)
    return bool(statuses) and all(status == PhaseStatus.COMPLETED.value for status in statuses.values())


def run_verdict(runtime: Runtime, event: MaintenanceEvent, log: RunLogger) -> dict[str, Any]:
    """The checks over the whole run and the cancel when they fail, once every lane is done or
    the deadline has come. A start or snapshot still pending then counts as timed out."""
    ledger = runtime.ledger
    unfinished = not lanes_finished(runtime, event)
    records = {r.resource_id.lower(): r for r in ledger.list_machines(event.correlation_id)}
    snapshots = {r.row_key(): r for r in ledger.list_snapshots(event.correlation_id)}
    if unfinished:
        log.warning("deciding at the deadline with lanes unfinished: what they have not recorded counts as timed out")
        detail = "its lane had not finished at the deadline"
        for key, record in records.items():
            if is_due(record):
                records[key] = replace(record, pre_outcome="timed-out", pre_detail=detail)
        for key, snapshot in snapshots.items():
            if is_due(snapshot):
                snapshots[key] = replace(snapshot, outcome="timed-out", detail=detail)
    ids = [r.resource_id for r in records.values() if r.kind != MachineKind.OTHER.value]
    views = get_vm_views(runtime.clients.resource_graph(), event.subscription_ids, ids)  # tags now, for the hold tag
    verdict = decide(runtime, event, CheckContext(runtime, records, views, list(snapshots.values())), log)
    return summarize(records, snapshots, verdict=verdict.verdict, cancel=verdict.cancel)


def _machine(record: MachineRecord) -> RunMachine:
    return RunMachine(record.resource_id, MachineKind(record.kind), record.subscription_id, record.resource_group,
                      record.name)
