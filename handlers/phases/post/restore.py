"""Step `restore-power`: put back exactly the VMs the pre event started, nothing else, unless a
VM's `maintenance-after` tag says what to do with it after patching (`deallocate`, `stop`,
`leave-running`; `restore`, the default, is the rule above), whatever its state before.

The ledger is the only source of "what did we start": with no record of the run, nothing is
stopped. (Stopping every VM of the run is what the documented sample does, and it turns off
machines that were running before the window.)

A restore keeps trying until MAINTENANCE_RESTORE_TIMEOUT_SECONDS from the post phase's start
(recorded on the run row as `RestoreDeadline`): a request whose outcome is uncertain, or an
operation that failed, is followed by a read of the VM's state and sent again while the VM is
not back. That can take longer than one invocation may run: when this invocation's time is spent
first, the restores still running stay recorded as `issued` and the step goes on in a new
invocation, which follows them (their state is read back; nothing is sent twice that took
effect). What is still running at the restore deadline is alerted, by name. Waves
(`maintenance-wave`) go down in reverse order: the highest wave first, each lower one once every
restore of the wave above it has ended (a restore that keeps failing holds the waves below it
until the restore deadline, then they are alerted with it). Within a wave the deallocations go
out first: they take longest.

The step runs beside the ones after it (`Step.beside`): once what it will send is stored, the
steps after it go on while it sends and waits; `tags` also waits for its requests to be out
(`PostWork.restores_sent`: the tags' writes come after the restores' in ARM's write budget). So it
keeps its own list of the run's machines (not `run.state.records`) and stores only its columns of
their rows (RESTORE_FIELDS).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError

from handlers.adapters.inventory import RunMachine, get_vm_views
from handlers.adapters.operations import describe_error, run_operations
from handlers.adapters.power import RESTORE_ACTIONS, power_operation
from handlers.core.status import Outcome, PreAction
from handlers.ledger import RESTORE_FIELDS, MachineRecord
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.chains import Chain, Waves, waves_of
from handlers.phases.guest import machine_of
from handlers.phases.post.state import PostWork
from handlers.phases.signals import ContinueLater
from handlers.phases.steps import PhaseRun

STEP = "restore-power"
RESTORE_POLLS_APART = 2  # poll intervals between a restore's status polls
# Current power states that already satisfy a restore action.
_ALREADY_DONE = {"deallocate": {"deallocated"}, "power-off": {"stopped", "deallocated"}}


@dataclass
class _Plan:
    records: list[MachineRecord]  # every machine of the run, as the ledger had them
    started: list[MachineRecord] = field(default_factory=list)  # restores still to settle
    settled: list[MachineRecord] = field(default_factory=list)  # needing nothing (already back, no action)
    actions: list[tuple[RunMachine, str, MachineRecord]] = field(default_factory=list)


def restore_power(run: PhaseRun[PostWork]) -> None:
    run.state.restores_sent.clear()  # before the steps after it start: the tags wait for the requests
    try:
        _restore_power(run)
    finally:
        run.state.restores_sent.set()


def _restore_power(run: PhaseRun[PostWork]) -> None:
    runtime, event, log = run.runtime, run.event, run.log
    ledger = runtime.ledger
    plan = _plan(run)
    if plan is None:
        return
    if not runtime.settings.restore_vms:
        log.info("MAINTENANCE_RESTORE_VMS is false: leaving %d started VM(s) running", len(plan.started))
        plan.settled = [replace(r, restore_action="none", restore_outcome=Outcome.SKIPPED.value,
                                restore_detail="MAINTENANCE_RESTORE_VMS is false") for r in plan.started]
        _save(run, plan, "disabled")
        return
    deadline = _restore_deadline(run)
    wait_until = min(deadline, run.invocation_end)
    issued = [replace(r, restore_action=a, restore_outcome=Outcome.ISSUED.value) for _, a, r in plan.actions
              if r.restore_outcome != Outcome.ISSUED]
    ledger.save_rows(event.correlation_id, issued, only=RESTORE_FIELDS)
    # A restore an earlier invocation sent is followed (its state read back), not sent again.
    # Waves go down in reverse: wave k's restores once every restore of wave k+1 has ended.
    # Polled half as often as the pre phase's operations: nobody waits on a restore's end closely
    # (the report does, minutes later), and a fleet's restores polled every interval would take most
    # of ARM's read budget from the deletes and health checks beside them.
    every = RESTORE_POLLS_APART * runtime.settings.poll_interval_seconds
    waves = Waves(waves_of(((r.wave, Chain(r.resource_id.lower(), [replace(
        power_operation(runtime.clients, m, a, persistent=True), follow_only=r.restore_outcome == Outcome.ISSUED,
        poll_every=every)])) for m, a, r in plan.actions), descending=True), strict=False, halted=lambda: "")
    waves.open()
    # What it will send is stored: the steps after it go on while it sends and waits (the tags once
    # its requests are out).
    run.go_on()
    results = run_operations(runtime.clients, waves.first(), parallelism=runtime.settings.parallelism,
                             deadline=wait_until, log=log, progress=runtime.progress,
                             sent=run.state.restores_sent.set)
    still_running = []
    for _, action, record in plan.actions:
        result = results.get(record.resource_id.lower())
        if wait_until < deadline and (result is None or result.outcome == Outcome.TIMED_OUT):
            still_running.append(record)  # this invocation's time ran out, not the restore's
        elif result is None:
            plan.settled.append(replace(record, restore_action=action, restore_outcome=Outcome.TIMED_OUT.value,
                                        restore_detail="not sent: the wave above it was not down by the deadline"))
        else:
            plan.settled.append(replace(record, restore_action=action, restore_outcome=result.outcome,
                                        restore_detail=result.detail, restored_at=result.finished_at))
    if still_running:
        ledger.save_rows(event.correlation_id, plan.settled, only=RESTORE_FIELDS)
        raise ContinueLater(STEP, f"{len(still_running)} restore(s) still running when this invocation's time ran "
                                  f"out; the restore deadline is {deadline.isoformat()}")
    failed = [r for r in plan.settled if r.restore_outcome in (Outcome.FAILED, Outcome.TIMED_OUT)]
    if failed:
        names = ", ".join(r.resource_id for r in failed[:20]) + (" ..." if len(failed) > 20 else "")
        raise_alert(ledger, event.correlation_id, AlertKind.LEFT_RUNNING,
                    f"{len(failed)} VM(s) this toolkit started could not be put back by the deadline and may still "
                    f"be running (billed): {names}", machines=[r.resource_id for r in failed])
    _save(run, plan, "failed" if failed else "ok")


def preview_restore(run: PhaseRun[PostWork]) -> None:
    """A dry run: which VMs would be put back, and how."""
    plan = _plan(run)
    if plan is None:
        return
    for machine, action, record in plan.actions:
        run.log.info("dry run: would %s %s (was %s before the run)", action, machine.resource_id,
                     record.original_power_state)
        plan.settled.append(replace(record, restore_action=action, restore_outcome=Outcome.PLANNED.value))
    _save(run, plan, "ok")


def _plan(run: PhaseRun[PostWork]) -> _Plan | None:
    """The restores to settle; None (and the summary said) when the run recorded no machines."""
    runtime, event, log = run.runtime, run.event, run.log
    if run.state.nothing_to_restore:
        return None
    records = runtime.ledger.list_machines(event.correlation_id)
    if not records:
        log.info("the pre event recorded no machines; nothing to restore")
        run.summary.update(restore="nothing-recorded", machines=0)
        return None
    plan = _Plan(records, started=[
        r for r in records if (started_by_toolkit(r) or r.after_action in ("deallocate", "stop"))
        and r.restore_outcome not in (Outcome.SUCCEEDED, Outcome.SKIPPED)])
    if not runtime.settings.restore_vms:
        return plan
    try:
        views = get_vm_views(runtime.clients.resource_graph(), event.subscription_ids,
                             [r.resource_id for r in plan.started])
    except AzureError as exc:
        # Only used to skip VMs already back; the restore requests are idempotent, so send them all.
        log.warning("Resource Graph failed (%s): restoring every VM we started without checking which are "
                    "already back", describe_error(exc))
        views = {}
    for record in plan.started:
        action, why = power_after(record)
        current = views.get(record.resource_id.lower())
        state = current.power_state if current else ""
        if not action:
            plan.settled.append(replace(record, restore_action="none", restore_outcome=Outcome.SKIPPED.value,
                                        restore_detail=why))
        elif state in _ALREADY_DONE[action]:
            log.info("%s is already %s; nothing to do", record.resource_id, state)
            plan.settled.append(replace(record, restore_action=action, restore_outcome=Outcome.SKIPPED.value,
                                        restore_detail=f"already {state}"))
        else:
            plan.actions.append((machine_of(record), action, record))
    plan.actions.sort(key=lambda item: item[1] != "deallocate")  # the longest first, in order otherwise
    return plan


def started_by_toolkit(record: MachineRecord) -> bool:
    """Its start was really attempted: a dry run's "planned" starts never happened."""
    return record.pre_action == PreAction.START and record.pre_outcome not in (Outcome.PLANNED, Outcome.PENDING)


def power_after(record: MachineRecord) -> tuple[str, str]:
    """How a VM's power is set after the window ("deallocate", "power-off", or "" for nothing),
    and why: the `maintenance-after` tag first, else the state the toolkit found it in, for the
    VMs it started (the others stay as they are)."""
    if record.kind != "vm" or record.opted_out:
        return "", "not a VM the toolkit powers"
    tagged = {"deallocate": "deallocate", "stop": "power-off"}.get(record.after_action)
    if tagged:
        return tagged, f"maintenance-after={record.after_action}"
    if record.after_action == "leave-running":
        return "", "left running: maintenance-after=leave-running"
    if not started_by_toolkit(record):
        return "", "not started by the toolkit"
    action = RESTORE_ACTIONS.get(record.original_power_state, "")
    return action, "" if action else f"original state {record.original_power_state!r} needs nothing"


def _restore_deadline(run: PhaseRun[PostWork]) -> datetime:
    """When the restores stop being retried: MAINTENANCE_RESTORE_TIMEOUT_SECONDS after the first
    invocation of the post phase began them, whichever invocation this is."""
    ledger, event = run.runtime.ledger, run.event
    recorded = (ledger.get_run(event.correlation_id) or {}).get("RestoreDeadline")
    if isinstance(recorded, datetime):
        return recorded
    deadline = run.runtime.clock.utcnow() + timedelta(seconds=run.runtime.settings.restore_timeout_seconds)
    ledger.update_run(event.correlation_id, {"RestoreDeadline": deadline})
    return deadline


def _save(run: PhaseRun[PostWork], plan: _Plan, restored: str) -> None:
    run.runtime.ledger.save_rows(run.event.correlation_id, plan.settled, only=RESTORE_FIELDS)
    merged = {r.resource_id.lower(): r for r in plan.records}
    merged.update({r.resource_id.lower(): r for r in plan.settled})
    outcomes: dict[str, int] = {}
    for record in merged.values():
        if record.restore_outcome:
            outcomes[record.restore_outcome] = outcomes.get(record.restore_outcome, 0) + 1
    summary: dict[str, Any] = {"machines": len(merged), "restore_outcomes": outcomes, "restore": restored}
    run.summary.update(summary)
    run.runtime.ledger.update_run(run.event.correlation_id, {"RestoreSummary": json.dumps(summary, sort_keys=True)})
