"""Step `send`: store the new rows, send every start, run command and snapshot due as its row is
stored (a machine's run commands after its start, its snapshot after them, wave by wave:
`handlers.phases.pre.in_guest`), wait until the deadline (the cancellation cutoff less
MAINTENANCE_CUTOFF_SAFETY_SECONDS, or this invocation's end if that comes first), record the
outcomes. What is still running then counts as
timed out, so the verdict (and a cancel) always comes before the cutoff.

No separate "sent" write: a row still pending after a worker died may or may not have been
sent, and the retried worker checks each such VM's state (`starts`) and each such snapshot by
name (`plan`) before sending anything again. Once the phase halts (its claim taken over, or the
window begun) nothing more is sent, and what was not sent is recorded as not done, so the post
phase (which restores only what was started) leaves those VMs alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar

from handlers.adapters.operations import Operation, OperationResult, run_operations
from handlers.core import telemetry
from handlers.core.ids import subscription_of
from handlers.core.status import Outcome, PreAction
from handlers.ledger import LeaseLostError, MachineRecord, SnapshotRecord
from handlers.phases.guest import GUEST_FINAL
from handlers.phases.pre.cancel import cutoff_of
from handlers.phases.pre.in_guest import chained, preview_guest, settle_guest
from handlers.phases.pre.state import PreWork, is_due
from handlers.phases.steps import PhaseRun

_T = TypeVar("_T")
TAKEN_OVER = "this worker's claim was taken over by another worker"


def send_and_wait(run: PhaseRun[PreWork]) -> None:
    runtime, work, event = run.runtime, run.state, run.event
    deadline = min(cutoff_of(event) - timedelta(seconds=runtime.settings.cutoff_safety_seconds), run.invocation_end)

    def halted() -> str:
        if run.stopped():
            return TAKEN_OVER
        if runtime.clock.utcnow() >= event.start:
            return "the maintenance window had begun"
        return ""

    # Starts (with what is chained after them) first, then the snapshots that wait for nothing: a
    # start takes about twice as long as an incremental snapshot, and both draw on the same write
    # bucket, so the fleet is ready soonest when starts lead. Every snapshot is still taken before
    # the window. Subscriptions alternate within each: rows are stored and requests released in
    # this order, and each subscription has its own ARM buckets and lane of workers.
    waves, immediate, every = chained(work, halted)
    planned = _interleave(waves.first(), _subscription) + _interleave(immediate, _subscription)
    tasks = _then(_recorded_first(run, planned, halted), waves.open)
    with Outcomes(run) as outcomes:
        results = run_operations(runtime.clients, tasks, parallelism=runtime.settings.parallelism,
                                 deadline=deadline, log=run.log, progress=runtime.progress,
                                 total=sum(map(len, planned)),
                                 subscriptions=len({subscription_of(task[0].resource_id) for task in planned}),
                                 cancelled=lambda: halted() == TAKEN_OVER, on_result=outcomes.record)
        if halted() == TAKEN_OVER:
            # Another worker took the phase over: it reads these operations' state and records them.
            raise LeaseLostError(halted())
        for result in results.values():
            if result.key not in outcomes.recorded:  # still running at the deadline
                outcomes.record(result)
    updated = outcomes.rows
    unsent = [op for op in every if op.key not in results and op.action in ("start", "snapshot")]
    if unsent:
        _record_unsent(run, unsent, lambda op: waves.not_sent.get(_machine_key(work, op)) or halted() or "not sent")
    guest_rows = settle_guest(run, results, waves, halted())
    # One row once per transaction (a machine's start and its commands share its row): the latest.
    last = {row.row_key(): row for row in [*updated, *guest_rows]}
    runtime.ledger.save_rows(event.correlation_id, list(last.values()))
    _log_machines(run)


class Outcomes:
    """Each start's and snapshot's outcome, applied to the phase's rows as it ends and stored in the
    background, CHUNK rows at a time (the Table service's batch), while the others are still being
    waited on: when the last operation ends, only the last chunk is left to store before the
    verdict. On the way out every stored chunk has been written (a failed write raises there);
    `rows` are those not yet stored."""

    CHUNK = 100

    def __init__(self, run: PhaseRun[PreWork]) -> None:
        self.run = run
        self.rows: list[Any] = []
        self.recorded: set[str] = set()
        self._writes: list[Future[None]] = []
        self._pool = telemetry.InvocationPool(max_workers=1, thread_name_prefix="ledger")

    def record(self, result: OperationResult) -> None:
        work = self.run.state
        if result.action == "snapshot":
            work.snapshots[result.key] = replace(work.snapshots[result.key], outcome=result.outcome,
                                                 detail=result.detail, requested_at=result.sent_at,
                                                 finished_at=result.finished_at)
            self.rows.append(work.snapshots[result.key])
        elif result.action == "start":
            ready_at = result.finished_at if result.outcome == Outcome.SUCCEEDED else None
            work.records[result.key] = replace(work.records[result.key], pre_outcome=result.outcome,
                                               pre_detail=result.detail, started_at=result.sent_at,
                                               ready_at=ready_at)
            self.rows.append(work.records[result.key])
        else:
            return  # run commands: settled with their machine's row (`settle_guest`)
        self.recorded.add(result.key)
        if len(self.rows) >= self.CHUNK:
            chunk, self.rows = self.rows, []
            self._writes.append(self._pool.submit(self.run.runtime.ledger.save_rows,
                                                  self.run.event.correlation_id, chunk))

    def __enter__(self) -> Outcomes:
        return self

    def __exit__(self, failure: type[BaseException] | None, *exc: object) -> None:
        self._pool.shutdown(wait=True)
        if failure is None:  # else that failure is the one to hear of
            for write in self._writes:
                write.result()


def preview_sends(run: PhaseRun[PreWork]) -> None:
    """A dry run: the rows as planned (nothing sent), and what would be."""
    work = run.state
    preview_guest(run)
    planned = [replace(row, pre_outcome=Outcome.PLANNED.value) if isinstance(row, MachineRecord) and is_due(row)
               else replace(row, outcome=Outcome.PLANNED.value) if isinstance(row, SnapshotRecord) and is_due(row)
               else row for row in work.new_rows]
    _remember(work, run.runtime.ledger.add_rows(run.event.correlation_id, planned))
    _log_machines(run)
    for record in work.records.values():
        if record.pre_action == PreAction.START and record.pre_outcome == Outcome.PLANNED:
            run.log.info("dry run: would start %s (%s)", record.resource_id, record.original_power_state)
    for snapshot in work.snapshots.values():
        if snapshot.outcome == Outcome.PLANNED:
            run.log.info("dry run: would snapshot %s as %s", snapshot.disk_id, snapshot.snapshot_id)


def _record_unsent(run: PhaseRun[PreWork], unsent: list[Operation], reason: Callable[[Operation], str]) -> None:
    work = run.state
    run.log.warning("%d start(s) and snapshot(s) not sent: %s", len(unsent), reason(unsent[0]))
    rows: list[Any] = []
    for operation in unsent:
        if operation.action == "start":
            work.records[operation.key] = replace(
                work.records[operation.key], pre_action=PreAction.NONE.value, pre_outcome=Outcome.SKIPPED.value,
                pre_detail=f"not started: {reason(operation)}")
            rows.append(work.records[operation.key])
        else:
            work.snapshots[operation.key] = replace(work.snapshots[operation.key], outcome=Outcome.SKIPPED.value,
                                                    detail=f"not taken: {reason(operation)}")
            rows.append(work.snapshots[operation.key])
    run.runtime.ledger.save_rows(run.event.correlation_id, rows)


def _machine_key(work: PreWork, operation: Operation) -> str:
    if operation.action == "snapshot":
        return work.snapshots[operation.key].vm_id.lower()
    return operation.key.split("|", 1)[0]


def _then(first: Iterator[list[Operation]], then: Callable[[], list[list[Operation]]]) -> Iterator[list[Operation]]:
    yield from first
    yield from then()


def _recorded_first(
    run: PhaseRun[PreWork], tasks: list[list[Operation]], halted: Callable[[], str]
) -> Iterator[list[Operation]]:
    """The tasks, each handed out once its ledger row is stored (none once `halted` says so),
    and every new row written.

    Rows go to the ledger in the tasks' order, many transactions at a time, so the first
    requests leave after the first transaction rather than after the whole fleet's rows: a row
    is written before the start or snapshot it records, never after. Rows that need no request
    (running VMs, skipped disks) follow.
    """
    work = run.state
    unwritten = {row.row_key(): row for row in work.new_rows}
    ordered: list[Any] = []
    waiting: dict[str, list[Operation]] = {}
    for task in tasks:
        op = task[0]
        row = work.snapshots[op.key] if op.action == "snapshot" else work.records[_machine_key(work, op)]
        if row.row_key() in unwritten:
            ordered.append(unwritten.pop(row.row_key()))
            waiting[row.row_key()] = task
        elif not halted():
            yield task  # recorded by an earlier attempt
    ordered += unwritten.values()
    for chunk in run.runtime.ledger.add_rows_in_order(run.event.correlation_id, ordered):
        _remember(work, chunk)
        for stored in chunk:
            released = waiting.pop(stored.row_key(), None)
            if released is not None and _due(released[0], stored) and not halted():
                yield released


def _remember(work: PreWork, stored: list[Any]) -> None:
    for row in stored:
        if isinstance(row, MachineRecord):
            work.records[row.resource_id.lower()] = row
        else:
            work.snapshots[row.row_key()] = row


def _log_machines(run: PhaseRun[PreWork]) -> None:
    for record in run.state.records.values():
        if record.pre_action != PreAction.START:
            run.log.info("%s: %s, %s (%s)", record.resource_id, record.pre_outcome, record.pre_detail,
                         record.original_power_state or "state unknown")


def _due(operation: Operation, stored: Any) -> bool:
    """The stored row still wants this operation (a concurrent attempt's row wins over our plan)."""
    if isinstance(stored, MachineRecord) and operation.action != "start":
        return stored.guest_pre_outcome not in GUEST_FINAL
    return is_due(stored)


def _subscription(task: list[Operation]) -> str:
    return subscription_of(task[0].resource_id)


def _interleave(items: list[_T], group: Callable[[_T], str]) -> list[_T]:
    """The items with their groups alternating (a1, b1, a2, b2, a3), each group's in its order."""
    groups: dict[str, list[_T]] = {}
    for item in items:
        groups.setdefault(group(item), []).append(item)
    queues = list(groups.values())
    return [q[i] for i in range(max((len(q) for q in queues), default=0)) for q in queues if i < len(q)]
