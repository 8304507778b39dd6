"""The pre event's work: find the run's machines, snapshot their disks, start the ones that are
off, run the pre-checks, and cancel the run while a cancel is still honoured when anything fails.

Everything due is sent first (starts, then snapshots, each once its ledger row is stored) and
then waited on until the deadline: the
cancellation cutoff minus MAINTENANCE_CUTOFF_SAFETY_SECONDS. What is still running then counts as
failed, so the verdict (and a cancel) always comes before the cutoff.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar

from handlers.adapters.inventory import (
    MachineKind,
    RunMachine,
    VmView,
    find_run_machines,
    find_unreadable_subscriptions,
    get_vm_views,
)
from handlers.adapters.operations import Operation, OperationResult, run_operations
from handlers.adapters.power import STARTABLE_STATES, power_operation, read_power_states
from handlers.adapters.snapshots import (
    find_existing,
    plan_snapshots,
    read_storage_profiles,
    reconcile,
    snapshot_operation,
)
from handlers.core.events import MaintenanceEvent
from handlers.core.logs import RunLogger
from handlers.ledger import LeaseLostError, MachineRecord, SnapshotRecord, subscription_of, utcnow
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.pre.checks import CheckContext, run_checks, tag_is_set
from handlers.phases.pre.verdict import decide
from handlers.runtime import Runtime

_T = TypeVar("_T")
# Outcomes after which a retried worker leaves a machine or a snapshot alone.
_FINAL = frozenset({"succeeded", "failed", "skipped", "not-needed", "unknown", "planned", "reused"})
TAKEN_OVER = "this worker's claim was taken over by another worker"
EMPTY_RUN_HINT = (
    "no machines found for this run. Likely causes: the app's identity has no Reader role on a "
    "target subscription (Resource Graph then returns nothing rather than an error), the run's "
    "scope holds only machines outside these subscriptions (Arc-enabled servers are listed but "
    "never started), or the dynamic scope matched nothing"
)


def run_pre(
    runtime: Runtime, event: MaintenanceEvent, log: RunLogger, *, machines: list[RunMachine] | None = None,
    fan_out: bool = False, scope: list[str] | None = None, stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """The pre phase. `machines` replaces discovery (a rehearsal of a run that has not happened).

    With `fan_out` (the queue worker), a run over more subscriptions than
    MAINTENANCE_SUBSCRIPTIONS_PER_WORKER is split once its machines are known: each group of that
    many subscriptions goes out as a queue message (`handlers.phases.pre.fan_out`), the summary says
    `"dispatched"` and the verdict comes later. Each group's worker runs this again with `scope`
    (its subscriptions, lower-case): everything for those subscriptions' machines but the verdict.
    `stop` says when to send nothing more (this worker's claim was taken over).

    A pre event that comes once its window has begun, or after the run's post event, starts
    nothing: what it started, nothing would turn off.
    """
    settings = runtime.settings
    ledger = runtime.ledger
    assert event.cancellation_cutoff is not None  # parse_event requires it on pre events
    late = ledger.late_pre_reason(event)
    if late:
        ledger.note_late_pre(event, late)
        raise_alert(ledger, event.correlation_id, AlertKind.LATE_PRE_EVENT, late)
        return {"machines": 0, "verdict": "late", "late": late}
    deadline = event.cancellation_cutoff - timedelta(seconds=settings.cutoff_safety_seconds)
    graph = runtime.clients.resource_graph()
    subscriptions = scope or event.subscription_ids

    if machines is None:
        machines = find_run_machines(graph, subscriptions, event.correlation_id, log=log)
    unreadable: list[str] = []
    if scope is not None:
        machines = [m for m in machines if subscription_of(m.resource_id) in scope]
    else:
        unreadable = _unreadable_subscriptions(runtime, event, machines, log)
        if not machines and not unreadable:
            log.warning(EMPTY_RUN_HINT)
            ledger.update_run(event.correlation_id, {"Verdict": "empty", "MachineCount": 0})
            return {"machines": 0, "verdict": "empty"}
    if machines and all(m.kind is MachineKind.ARC for m in machines):
        log.warning("every machine of this run is an Arc-enabled server: none can be started or snapshotted "
                    "from Azure")
    lanes = sorted({subscription_of(m.resource_id) for m in machines})
    if fan_out and scope is None and not settings.dry_run and len(lanes) > settings.subscriptions_per_worker:
        from handlers.phases.pre.fan_out import dispatch

        return dispatch(runtime, event, lanes, len(machines), log)

    views = get_vm_views(graph, subscriptions, [m.resource_id for m in machines if m.kind is not MachineKind.OTHER])
    if settings.snapshot_disks != "none":
        views = read_storage_profiles(runtime.clients, machines, views, parallelism=settings.parallelism)
    records, new_records = _plan_machines(runtime, event, machines, views, scope)
    snapshots, new_snapshots = _plan_snapshots(runtime, event, machines, views, scope)
    new_rows: list[Any] = [*new_records, *new_snapshots]
    to_snapshot = [s for s in snapshots.values() if s.outcome not in _FINAL]
    to_start = _machines_to_start(runtime, event, machines, records, {r.resource_id.lower() for r in new_records},
                                 log)
    if settings.dry_run:
        _remember(records, snapshots, ledger.add_rows(event.correlation_id, new_rows))
        _log_machines(records, log)
        for record in records.values():
            if record.pre_action == "start":
                log.info("dry run: would start %s (%s)", record.resource_id, record.original_power_state)
        for snapshot in snapshots.values():
            if snapshot.outcome == "planned":
                log.info("dry run: would snapshot %s as %s", snapshot.disk_id, snapshot.snapshot_id)
        context = CheckContext(runtime, records, views, list(snapshots.values()), unreadable_subscriptions=unreadable)
        results = run_checks(context, log.info)
        failing = [f"{r.name}: {f.reason}" for r in results for f in r.findings]
        for reason in failing:
            log.info("dry run: would cancel the run because %s", reason)
        ledger.update_run(event.correlation_id, {"Verdict": "dry-run", "MachineCount": len(records),
                                                 "FailingReasons": "\n".join(failing)})
        return summarize(records, snapshots, verdict="dry-run", cancel="not-requested (dry run)")

    def halted() -> str:
        if stop is not None and stop():
            return TAKEN_OVER
        if utcnow() >= event.start:
            return "the maintenance window had begun"
        return ""

    _send_due(runtime, event, records, snapshots, to_start, to_snapshot, new_rows, deadline, log, halted)
    _log_machines(records, log)
    if scope is not None:
        return summarize(records, snapshots, verdict="", cancel="")

    context = CheckContext(runtime, records, views, list(snapshots.values()), unreadable_subscriptions=unreadable)
    verdict = decide(runtime, event, context, log)
    return summarize(records, snapshots, verdict=verdict.verdict, cancel=verdict.cancel)


def _unreadable_subscriptions(
    runtime: Runtime, event: MaintenanceEvent, machines: list[RunMachine], log: RunLogger
) -> list[str]:
    """The event's subscriptions the app cannot read (warned about and recorded; the
    subscriptions-readable check fails the run for them), and those holding none of the run's
    machines (warned about and recorded only: a dynamic scope may match nothing there)."""
    unreadable = find_unreadable_subscriptions(runtime.clients.resource_graph(), event.subscription_ids)
    for subscription in unreadable:
        log.warning("subscription %s is not readable by the app's identity: Resource Graph shows nothing of it, so "
                    "its machines can be neither found nor started. The likely cause is a missing Reader role "
                    "assignment for the identity on that subscription", subscription)
    with_machines = {subscription_of(m.resource_id) for m in machines}
    empty = [s for s in event.subscription_ids if s not in with_machines and s not in unreadable]
    for subscription in empty:
        log.warning("subscription %s is readable but holds none of this run's machines", subscription)
    if unreadable or empty:
        runtime.ledger.update_run(event.correlation_id, {"UnreadableSubscriptions": ",".join(unreadable),
                                                         "SubscriptionsWithoutMachines": ",".join(empty)})
    return unreadable


def _plan_machines(
    runtime: Runtime, event: MaintenanceEvent, machines: list[RunMachine], views: dict[str, VmView],
    scope: list[str] | None,
) -> tuple[dict[str, MachineRecord], list[MachineRecord]]:
    """Every machine's record: the ledger's when an earlier attempt wrote one, else a new plan
    (returned apart, not yet written).

    A machine's first row keeps its power state from before we touched anything; a retried
    worker reuses it instead of re-planning from a VM we may already have started.
    """
    records = {r.resource_id.lower(): r for r in _rows(runtime.ledger.list_machines, event, scope)}
    vms = [m for m in machines if m.kind is MachineKind.VM and m.resource_id.lower() not in records]
    # Resource Graph can miss a VM (a new VM not yet indexed, a partial read permission):
    # only those few get an instance-view GET of their own.
    unseen = [m for m in vms if not (views.get(m.resource_id.lower()) or VmView("", "")).power_state]
    direct = read_power_states(runtime.clients, unseen, parallelism=runtime.settings.parallelism)
    new = []
    for machine in machines:
        key = machine.resource_id.lower()
        if key not in records:
            view = views.get(key)
            state = (view.power_state if view else "") or direct.get(key, "")
            records[key] = _plan(machine, view, state, runtime)
            new.append(records[key])
    return records, new


def _plan_snapshots(
    runtime: Runtime, event: MaintenanceEvent, machines: list[RunMachine], views: dict[str, VmView],
    scope: list[str] | None,
) -> tuple[dict[str, SnapshotRecord], list[SnapshotRecord]]:
    """Snapshot records (the ledger's, and new ones apart), reconciled with snapshots of those
    names that already exist."""
    rows = {r.row_key(): r for r in _rows(runtime.ledger.list_snapshots, event, scope)}
    planned = [replace(r, lane=subscription_of(r.snapshot_id or r.disk_id))
               for r in plan_snapshots(runtime.settings, event.correlation_id, machines, views)
               if r.row_key() not in rows]
    due = [r for r in list(rows.values()) + planned if r.outcome not in _FINAL]
    if due and not runtime.settings.dry_run:
        reconciled = _reconcile_existing(runtime, event, due, scope)
        planned = [reconciled.get(r.row_key(), r) for r in planned]
        rows.update({k: v for k, v in reconciled.items() if k in rows})
    rows.update({r.row_key(): r for r in planned})
    return rows, planned


def _reconcile_existing(
    runtime: Runtime, event: MaintenanceEvent, due: list[SnapshotRecord], scope: list[str] | None
) -> dict[str, SnapshotRecord]:
    """Due snapshot records given the snapshots of those names that exist already (an earlier
    attempt made them, or is making them): one Resource Graph query by the run's tag."""
    found = find_existing(runtime.clients, scope or event.subscription_ids, event.correlation_id, due)
    return {r.row_key(): reconcile(r, found.get(r.snapshot_id.lower())) for r in due}


def _rows(read: Callable[..., list[_T]], event: MaintenanceEvent, scope: list[str] | None) -> list[_T]:
    """The run's rows of one kind, or (a group of a split run) those of the group's subscriptions."""
    if scope is None:
        return read(event.correlation_id)
    return [row for lane in scope for row in read(event.correlation_id, lane=lane)]


def _send_due(
    runtime: Runtime, event: MaintenanceEvent, records: dict[str, MachineRecord], snapshots: dict[str, SnapshotRecord],
    to_start: list[tuple[RunMachine, bool]], to_snapshot: list[SnapshotRecord], new_rows: list[Any],
    deadline: Any, log: RunLogger, halted: Callable[[], str],
) -> None:
    """Store the new rows, send every start and snapshot due as its row is stored, wait until
    the deadline, record the outcomes (in `records` and `snapshots` too). Once `halted` gives a
    reason, nothing more is sent."""
    now = utcnow()
    snapshot_ops = {s.row_key(): snapshot_operation(runtime.clients, runtime.settings, s,
                                                    correlation_id=event.correlation_id, now=now)
                    for s in to_snapshot}
    start_ops = {m.resource_id.lower(): replace(power_operation(runtime.clients, m, "start"), follow_only=on_its_way)
                 for m, on_its_way in to_start}
    planned = _ordered_tasks(snapshot_ops, start_ops)
    lanes = len({subscription_of(task[0].resource_id) for task in planned})
    tasks = _recorded_first(runtime, event, planned, records, snapshots, new_rows, halted)
    results = _send_and_wait(runtime, event, records, snapshots, tasks, sum(map(len, planned)), lanes, deadline,
                             log, halted)
    unsent = [task[0] for task in planned if task[0].key not in results]
    if unsent:
        _record_unsent(runtime, event, records, snapshots, unsent, halted() or "not sent", log)


def _record_unsent(
    runtime: Runtime, event: MaintenanceEvent, records: dict[str, MachineRecord], snapshots: dict[str, SnapshotRecord],
    unsent: list[Operation], reason: str, log: RunLogger,
) -> None:
    """Starts and snapshots never sent because the phase halted: recorded as not done, so that
    the post phase (which restores only what was started) leaves those VMs alone."""
    log.warning("%d start(s) and snapshot(s) not sent: %s", len(unsent), reason)
    rows: list[Any] = []
    for operation in unsent:
        if operation.action == "start":
            records[operation.key] = replace(records[operation.key], pre_action="none", pre_outcome="skipped",
                                             pre_detail=f"not started: {reason}")
            rows.append(records[operation.key])
        else:
            snapshots[operation.key] = replace(snapshots[operation.key], outcome="skipped",
                                               detail=f"not taken: {reason}")
            rows.append(snapshots[operation.key])
    runtime.ledger.save_rows(event.correlation_id, rows)


def _recorded_first(
    runtime: Runtime, event: MaintenanceEvent, tasks: list[list[Operation]], records: dict[str, MachineRecord],
    snapshots: dict[str, SnapshotRecord], new_rows: list[Any], halted: Callable[[], str],
) -> Iterator[list[Operation]]:
    """The tasks, each handed out once its ledger row is stored (none once `halted` says so),
    and every new row written.

    Rows go to the ledger in the tasks' order, many transactions at a time, so the first
    requests leave after the first transaction rather than after the whole fleet's rows: a row
    is written before the start or snapshot it records, never after. Rows that need no request
    (running VMs, skipped disks) follow.
    """
    unwritten = {row.row_key(): row for row in new_rows}
    ordered: list[Any] = []
    waiting: dict[str, list[Operation]] = {}
    for task in tasks:
        row = _row_of(task[0], records, snapshots)
        if row.row_key() in unwritten:
            ordered.append(unwritten.pop(row.row_key()))
            waiting[row.row_key()] = task
        elif not halted():
            yield task  # recorded by an earlier attempt
    ordered += unwritten.values()
    for chunk in runtime.ledger.add_rows_in_order(event.correlation_id, ordered):
        _remember(records, snapshots, chunk)
        for stored in chunk:
            released = waiting.pop(stored.row_key(), None)
            if released is not None and is_due(stored) and not halted():
                yield released


def _row_of(operation: Operation, records: dict[str, MachineRecord],
            snapshots: dict[str, SnapshotRecord]) -> MachineRecord | SnapshotRecord:
    return records[operation.key] if operation.action == "start" else snapshots[operation.key]


def is_due(row: MachineRecord | SnapshotRecord) -> bool:
    """Still to do, as stored (a concurrent attempt's row wins over our plan)."""
    if isinstance(row, MachineRecord):
        return row.pre_action == "start" and row.pre_outcome not in _FINAL
    return row.outcome not in _FINAL


def _remember(records: dict[str, MachineRecord], snapshots: dict[str, SnapshotRecord], stored: list[Any]) -> None:
    for row in stored:
        if isinstance(row, MachineRecord):
            records[row.resource_id.lower()] = row
        else:
            snapshots[row.row_key()] = row


def _log_machines(records: dict[str, MachineRecord], log: RunLogger) -> None:
    for record in records.values():
        if record.pre_action != "start":
            log.info("%s: %s, %s (%s)", record.resource_id, record.pre_outcome, record.pre_detail,
                     record.original_power_state or "state unknown")


def _ordered_tasks(snapshot_ops: dict[str, Operation], start_ops: dict[str, Operation]) -> list[list[Operation]]:
    """Starts first, then snapshots. A start takes about twice as long as an incremental
    snapshot, and both draw on the same write bucket, so the fleet is ready soonest when starts
    lead. Every snapshot is still taken before the window, of the disk as it is before patching
    (crash-consistent, as for any VM that was running).

    Subscriptions alternate within each: rows are stored and requests released in this order,
    and each subscription has its own ARM buckets and its own lane of workers, so every
    subscription's requests start with the first transaction rather than after the others'."""
    def subscription(task: list[Operation]) -> str:
        return subscription_of(task[0].resource_id)

    return (_interleave([[start] for start in start_ops.values()], subscription)
            + _interleave([[snapshot] for snapshot in snapshot_ops.values()], subscription))


def _interleave(items: list[_T], group: Callable[[_T], str]) -> list[_T]:
    """The items with their groups alternating (a1, b1, a2, b2, a3), each group's in its order."""
    groups: dict[str, list[_T]] = {}
    for item in items:
        groups.setdefault(group(item), []).append(item)
    queues = list(groups.values())
    return [q[i] for i in range(max((len(q) for q in queues), default=0)) for q in queues if i < len(q)]


def _send_and_wait(
    runtime: Runtime, event: MaintenanceEvent, records: dict[str, MachineRecord],
    snapshots: dict[str, SnapshotRecord], tasks: Iterable[list[Operation]], total: int, subscriptions: int,
    deadline: Any, log: RunLogger, halted: Callable[[], str],
) -> dict[str, OperationResult]:
    """Send the tasks, wait until the deadline, record outcomes.

    No separate "sent" write: a row still pending after a worker died may or may not have been
    sent, and the retried worker checks each such VM's state (`_machines_to_start`) and each
    such snapshot by name (`_plan_snapshots`) before sending anything again.
    """
    results = run_operations(runtime.clients, tasks, parallelism=runtime.settings.parallelism,
                             deadline=deadline, log=log, progress=runtime.progress, total=total,
                             subscriptions=subscriptions, cancelled=lambda: halted() == TAKEN_OVER)
    if halted() == TAKEN_OVER:
        # Another worker took the phase over: it reads these operations' state and records them.
        raise LeaseLostError(halted())
    updated: list[Any] = []
    for key, result in results.items():
        if result.action == "snapshot":
            snapshots[key] = replace(snapshots[key], outcome=result.outcome, detail=result.detail,
                                     requested_at=result.sent_at, finished_at=result.finished_at)
            updated.append(snapshots[key])
        else:
            ready_at = result.finished_at if result.outcome == "succeeded" else None
            records[key] = replace(records[key], pre_outcome=result.outcome, pre_detail=result.detail,
                                   started_at=result.sent_at, ready_at=ready_at)
            updated.append(records[key])
    runtime.ledger.save_rows(event.correlation_id, updated)
    return results


def _plan(machine: RunMachine, view: VmView | None, state: str, runtime: Runtime) -> MachineRecord:
    """What to do with a machine at first sighting, recorded before anything is touched."""
    settings = runtime.settings
    location = view.location if view else ""
    base = MachineRecord(
        resource_id=machine.resource_id, kind=machine.kind.value, subscription_id=machine.subscription_id,
        resource_group=machine.resource_group, name=machine.name,
        location=location, original_power_state=state, lane=subscription_of(machine.resource_id),
    )
    if machine.kind is MachineKind.ARC:
        return replace(base, pre_action="skip", pre_outcome="skipped",
                       pre_detail="Arc-enabled server: it cannot be powered on from Azure")
    if machine.kind is MachineKind.OTHER:
        return replace(base, pre_action="skip", pre_outcome="skipped", pre_detail="not a virtual machine")
    if tag_is_set(dict(view.tags) if view else {}, settings.opt_out_tag) is not None:
        return replace(base, opted_out=True, pre_action="skip", pre_outcome="skipped",
                       pre_detail=f"opted out by tag {settings.opt_out_tag}")
    if state in ("running", "starting"):
        return replace(base, pre_outcome="not-needed", pre_detail=f"already {state}")
    if state in STARTABLE_STATES:
        if not settings.start_vms:
            return replace(base, pre_outcome="skipped", pre_detail="MAINTENANCE_START_VMS is false")
        return replace(base, pre_action="start", pre_outcome="planned" if settings.dry_run else "pending")
    detail = "VM not found" if state == "not-found" else f"power state {state or 'unknown'}: left alone"
    return replace(base, pre_outcome="unknown", pre_detail=detail)


def _machines_to_start(
    runtime: Runtime, event: MaintenanceEvent, machines: list[RunMachine], records: dict[str, MachineRecord],
    fresh: set[str], log: RunLogger,
) -> list[tuple[RunMachine, bool]]:
    """VMs whose start is still due, each with whether an earlier attempt's start is already on
    its way. Those an earlier attempt recorded (`fresh` are this attempt's) may have been started
    already: their current state is read first. Running: done; starting: followed, not sent again."""
    due = [m for m in machines if records[m.resource_id.lower()].pre_action == "start"
           and records[m.resource_id.lower()].pre_outcome not in _FINAL]
    retried = [m for m in due if m.resource_id.lower() not in fresh]
    if not retried:
        return [(m, False) for m in due]
    current = read_power_states(runtime.clients, retried, parallelism=runtime.settings.parallelism)
    confirmed = []
    for machine in retried:
        key = machine.resource_id.lower()
        if current.get(key) == "running":
            log.info("%s already running after an earlier attempt", machine.resource_id)
            records[key] = replace(records[key], pre_outcome="succeeded", ready_at=utcnow())
            confirmed.append(records[key])
    runtime.ledger.save_rows(event.correlation_id, confirmed)
    return [(m, current.get(m.resource_id.lower()) == "starting") for m in due
            if records[m.resource_id.lower()].pre_outcome not in _FINAL]


def summarize(
    records: dict[str, MachineRecord], snapshots: dict[str, SnapshotRecord], *, verdict: str, cancel: str
) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for record in records.values():
        outcomes[record.pre_outcome] = outcomes.get(record.pre_outcome, 0) + 1
    snapshot_outcomes: dict[str, int] = {}
    for snapshot in snapshots.values():
        snapshot_outcomes[snapshot.outcome] = snapshot_outcomes.get(snapshot.outcome, 0) + 1
    return {"machines": len(records), "outcomes": outcomes, "snapshots": snapshot_outcomes,
            "verdict": verdict, "cancel": cancel}
