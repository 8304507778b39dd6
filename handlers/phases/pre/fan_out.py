"""The pre phase of a run over many subscriptions: queue messages of a few subscriptions each.

ARM throttles writes per subscription, so a run's requests fall into lanes, one per
subscription, that do not compete. One worker sends up to MAINTENANCE_SUBSCRIPTIONS_PER_WORKER
lanes itself (each lane with workers of its own, `handlers.adapters.operations`). A run over more
subscriptions is split (step `fan-out`): the worker that takes the pre event (the coordinator)
finds the run's machines and hands each group of that many subscriptions to the work queue as a
message of its own. The Functions host runs those messages side by side, and on more instances
as the queue grows, so a large estate is not bound to one worker's threads, CPU or timeout.

The coordinator also reads the machines' views (state, tags, disks) for the whole run, once, and
stores each group's machines and views for it (`handlers.adapters.handoffs`) before queueing its
message: Resource Graph's quota is the identity's, shared by every instance, and groups that
each asked again would be throttled. Each group's worker claims its phase
(`phase-pre-lane-<hash>`) and runs the pre phase's steps for its subscriptions' machines (scope
`group`: their rows, starts, snapshots and waiting) but not the verdict. The last group to
finish queues the verdict; so does the coordinator, up front (step `fallback-verdict`), with
the message invisible until a little after the deadline, in case a group never finishes (its
worker failing on every attempt). A run that is not split gets that fallback too: a worker
failing on every attempt must not let an unchecked run go ahead. The verdict message claims
`phase-pre-verdict` (the first message wins) and runs the steps of scope `verdict`: `collect`
(below), the checks over the whole run, the verdict and the cancel; then it completes the pre
phase, which the post event waits for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from azure.core.exceptions import AzureError

from handlers.adapters.handoffs import delete_handoffs, write_handoff
from handlers.adapters.inventory import MachineKind, find_run_machines, find_unreadable_subscriptions, get_vm_views
from handlers.adapters.operations import describe_error
from handlers.core.errors import SettingsError
from handlers.core.events import MaintenanceEvent
from handlers.core.ids import subscription_of
from handlers.core.status import Outcome
from handlers.core.tag_values import tag_is_set
from handlers.core.work import LANE_PHASE_PREFIX, Step, WorkMessage, lane_phase, send_work
from handlers.ledger import MachineRecord, PhaseStatus
from handlers.phases.pre.cancel import cutoff_of
from handlers.phases.pre.state import PreWork, is_due
from handlers.phases.steps import Ended, PhaseRun
from handlers.runtime import Runtime

# What the verdict keeps back before the cutoff for the cancel, when its discovery is slow.
_CANCEL_RESERVE = timedelta(seconds=15)


def queue_fallback_verdict(run: PhaseRun[PreWork]) -> None:
    """Queue the verdict for the deadline once per run (the first attempt that can): it is what
    checks and cancels the run when every attempt of this phase fails. A queue that fails now
    does not stop the phase; the heartbeat tries again on each beat."""
    beat = run.beat
    if beat is None or beat.claim.row.get("FallbackQueuedAt"):
        return
    runtime, work = run.runtime, run.work

    def queue() -> bool:
        verdict = replace(work, step=Step.VERDICT, lanes=(), takeovers=0, deferrals=0)
        send_work(runtime.work_queue(), verdict, delay_seconds=verdict_delay(runtime, work.event))
        beat.record({"FallbackQueuedAt": runtime.clock.utcnow()})
        return True

    try:
        queue()
    except Exception as exc:
        run.log.warning("could not queue the fallback verdict yet (retried while this phase runs): %s", exc)
        beat.add_duty(queue)


def dispatch(run: PhaseRun[PreWork]) -> None:
    """Split a run over more subscriptions than one worker takes: queue them in groups."""
    runtime, event, machines = run.runtime, run.event, run.state.machines
    lanes = sorted({subscription_of(m.resource_id) for m in machines})
    size = runtime.settings.subscriptions_per_worker
    if len(lanes) <= size:
        return
    groups = [lanes[i : i + size] for i in range(0, len(lanes), size)]
    runtime.ledger.open_phases(event.correlation_id, [lane_phase(group) for group in groups])
    queue = runtime.work_queue()
    hand_off = _hand_off(run)
    handed = sum(hand_off(group) for group in groups)
    # The messages go out together, after every hand-off: a host fetches another batch only once
    # no more than newBatchThreshold messages still run, so messages trickling in fill each host
    # to just past that and leave the last one waiting for a group to end (measured: 14 minutes).
    for group in groups:
        send_work(queue, WorkMessage(event, Step.LANES, tuple(group)))
    runtime.ledger.update_run(event.correlation_id, {"MachineCount": len(machines), "SplitMessages": len(groups),
                                                     "HandedOff": handed})
    run.log.info("%d machines over %d subscriptions: split into %d queue messages of up to %d subscriptions "
                 "(%d handed their machines' views)", len(machines), len(lanes), len(groups), size, handed)
    run.end(Ended.DISPATCHED, machines=len(machines), subscriptions=len(lanes), messages=len(groups), dispatched=True)


def _hand_off(run: PhaseRun[PreWork]) -> Callable[[list[str]], bool]:
    """What stores a group's machines and their views for it (`handlers.adapters.handoffs`),
    saying whether it did (a group without one asks Resource Graph itself). The views come
    from one discovery for the whole run, here."""
    runtime, event, machines = run.runtime, run.event, run.state.machines
    try:
        container = runtime.handoff_container()
        views = get_vm_views(runtime.clients.resource_graph(), event.subscription_ids,
                             [m.resource_id for m in machines if m.kind is not MachineKind.OTHER])
    except (AzureError, SettingsError) as exc:
        run.log.warning("the machines' views could not be read for the groups (each group reads its own): %s",
                        describe_error(exc) if isinstance(exc, AzureError) else exc)
        return lambda group: False

    failed: list[str] = []

    def hand_off(group: list[str]) -> bool:
        if failed:  # storage is failing: the groups after it are not held up by more attempts
            return False
        mine = [m for m in machines if subscription_of(m.resource_id) in group]
        try:
            write_handoff(container, event.correlation_id, lane_phase(group), mine, views)
        except AzureError as exc:
            failed.append(describe_error(exc))
            run.log.warning("could not store the groups' hand-offs in %s (from subscription(s) %s on, each group "
                            "reads its own machines): %s", runtime.settings.handoff_container, ", ".join(group),
                            failed[0])
            return False
        return True

    return hand_off


def verdict_delay(runtime: Runtime, event: MaintenanceEvent) -> float:
    """Seconds from now until the fallback verdict is due: a little after the deadline (half the
    safety margin, at most a minute), so the worker's own verdict comes first when it is alive."""
    deadline = cutoff_of(event) - timedelta(seconds=runtime.settings.cutoff_safety_seconds)
    margin = min(60.0, runtime.settings.cutoff_safety_seconds / 2)
    return max(0.0, runtime.clock.seconds_until(deadline) + margin)


def lanes_finished(runtime: Runtime, event: MaintenanceEvent) -> bool:
    statuses = runtime.ledger.phase_statuses(event.correlation_id, LANE_PHASE_PREFIX)
    return bool(statuses) and all(status == PhaseStatus.COMPLETED.value for status in statuses.values())


def collect(run: PhaseRun[PreWork]) -> None:
    """What the groups recorded, for the verdict over the whole run, once every group is done or
    the deadline has come. When every group finished, their rows are the run's machines (what the
    coordinator found), as a run that is not split has its own. When one did not, the run's
    machines are found again: one that no group recorded, and a start or snapshot a group left
    pending, count against the run. The machines' tags are read again either way (the hold tag).
    When Resource Graph cannot say which machines the run has before the cutoff, the verdict
    fails closed. The coordinator's hand-offs are deleted: the groups have read them."""
    runtime, event, log, work = run.runtime, run.event, run.log, run.state
    ledger = runtime.ledger
    graph = runtime.clients.resource_graph()
    groups = ledger.phase_statuses(event.correlation_id, LANE_PHASE_PREFIX)
    run_row = ledger.get_run(event.correlation_id) or {}
    work.records = {r.resource_id.lower(): r for r in ledger.list_machines(event.correlation_id)}
    work.snapshots = {r.row_key(): r for r in ledger.list_snapshots(event.correlation_id)}
    if groups:
        unfinished = not lanes_finished(runtime, event)
        _delete_handoffs(run)
    else:  # not split: its one worker died, unless it finished and left the verdict to an approval
        unfinished = not run_row.get("AwaitingApprovalSince")
    unfinished = unfinished or any(map(is_due, work.records.values())) or any(map(is_due, work.snapshots.values()))
    budget = max(1.0, runtime.clock.seconds_until(cutoff_of(event) - _CANCEL_RESERVE))
    bounded = {"timeout": budget, "retry_backoff_max": min(5.0, budget / 4)}
    machines = []
    work.unreadable = [s for s in str(run_row.get("UnreadableSubscriptions") or "").split(",") if s]
    if unfinished:
        log.warning("deciding at the deadline with work unfinished: what was not recorded counts as timed out")
        try:
            machines = find_run_machines(graph, event.subscription_ids, event.correlation_id, log=log,
                                         options=bounded)
            work.unreadable = find_unreadable_subscriptions(graph, event.subscription_ids, options=bounded)
        except AzureError as exc:
            work.unchecked = f"Resource Graph: {describe_error(exc)}"
            log.error("the run's machines could not be found at the deadline: %s", work.unchecked)
    detail = "its subscription's work had not finished at the deadline"
    for key, record in work.records.items():
        if is_due(record):
            work.records[key] = replace(record, pre_outcome=Outcome.TIMED_OUT.value, pre_detail=detail)
    for key, snapshot in work.snapshots.items():
        if is_due(snapshot):
            work.snapshots[key] = replace(snapshot, outcome=Outcome.TIMED_OUT.value, detail=detail)
    for machine in machines:
        if machine.resource_id.lower() not in work.records and machine.kind is MachineKind.VM:
            work.records[machine.resource_id.lower()] = MachineRecord(
                resource_id=machine.resource_id, kind=machine.kind.value, subscription_id=machine.subscription_id,
                resource_group=machine.resource_group, name=machine.name, pre_outcome=Outcome.UNKNOWN.value,
                pre_detail=f"not recorded: {detail}", lane=subscription_of(machine.resource_id))
    hold = runtime.settings.hold_tag
    if not work.unchecked and "no-hold-tag" in runtime.settings.pre_checks:  # the only check that reads tags
        ids = [r.resource_id for r in work.records.values() if r.kind != MachineKind.OTHER.value]
        try:  # only the held machines' views are kept: 20,000 views would be tens of MB
            work.views = get_vm_views(graph, event.subscription_ids, ids, options=bounded,
                                      keep=lambda view: tag_is_set(dict(view.tags), hold) is not None)
        except AzureError as exc:
            work.unchecked = f"Resource Graph (machine tags): {describe_error(exc)}"


def _delete_handoffs(run: PhaseRun[PreWork]) -> None:
    """The groups have read their hand-offs. One that cannot be deleted now is left to the work
    container's lifecycle rule (the Bicep deletes its blobs a day after they were written)."""
    runtime = run.runtime
    try:
        deleted = delete_handoffs(runtime.handoff_container(), run.event.correlation_id)
    except (AzureError, SettingsError) as exc:
        run.log.warning("the coordinator's hand-offs could not be deleted (the container's lifecycle rule will): %s",
                        exc)
        return
    if deleted:
        run.log.info("deleted the %d hand-off(s) the coordinator stored for the groups", deleted)
