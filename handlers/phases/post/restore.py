"""The post event's work: put back exactly the VMs the pre event started, nothing else.

The ledger is the only source of "what did we start": with no record of the run, nothing is
stopped. (Stopping every VM of the run is what the documented sample does, and it turns off
machines that were running before the window.)

A restore keeps trying until MAINTENANCE_RESTORE_TIMEOUT_SECONDS: a request whose outcome is
uncertain, or an operation that failed, is followed by a read of the VM's state and sent again
while the VM is not back. What is still running at the end is alerted, by name.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from azure.core.exceptions import AzureError

from handlers.adapters.inventory import describe_machine, get_vm_views
from handlers.adapters.operations import describe_error, run_operations
from handlers.adapters.power import RESTORE_ACTIONS, power_operation
from handlers.core.events import MaintenanceEvent
from handlers.core.logs import RunLogger
from handlers.ledger import MachineRecord, PhaseStatus, utcnow
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.post.retention import run_retention
from handlers.runtime import Runtime

# Current power states that already satisfy a restore action.
_ALREADY_DONE = {"deallocate": {"deallocated"}, "power-off": {"stopped", "deallocated"}}
NO_LEDGER_HINT = (
    "no ledger record of the pre event for this run, so no VM is stopped: only VMs this toolkit "
    "started are ever turned off. (Was the pre event delivered to this app, to the same ledger table?)"
)


class PreStillRunningError(Exception):
    """The post event arrived while the pre phase is still working; try again later."""


def run_post(runtime: Runtime, event: MaintenanceEvent, log: RunLogger) -> dict[str, Any]:
    settings = runtime.settings
    ledger = runtime.ledger
    run_status = event.run_status.value if event.run_status else "unknown"
    log.info("maintenance run ended with status %s (%s)", event.status or "(none)", run_status)
    ledger.update_run(event.correlation_id, {"PostStatus": event.status or "", "RunStatus": run_status})

    pre_phase = ledger.get_phase(event.correlation_id, "pre")
    if pre_phase is None:
        log.warning(NO_LEDGER_HINT)
        return {"run_status": run_status, "restore": "no-ledger-record", "machines": 0}
    if pre_phase.get("Status") != PhaseStatus.COMPLETED.value:
        raise PreStillRunningError
    records = ledger.list_machines(event.correlation_id)
    if not records:
        log.info("the pre event recorded no machines; nothing to restore")
        return {"run_status": run_status, "restore": "nothing-recorded", "machines": 0}

    # Only rows whose start was really attempted: a dry run's "planned" starts never happened.
    started = [r for r in records if r.pre_action == "start" and r.pre_outcome not in ("planned", "pending")
               and r.restore_outcome not in ("succeeded", "skipped")]
    if not settings.restore_vms:
        log.info("MAINTENANCE_RESTORE_VMS is false: leaving %d started VM(s) running", len(started))
        ledger.save_rows(event.correlation_id, [
            replace(r, restore_action="none", restore_outcome="skipped",
                    restore_detail="MAINTENANCE_RESTORE_VMS is false")
            for r in started])
        return _summary(records, run_status, restored="disabled")

    try:
        views = get_vm_views(runtime.clients.resource_graph(), event.subscription_ids,
                             [r.resource_id for r in started])
    except AzureError as exc:
        # Only used to skip VMs already back; the restore requests are idempotent, so send them all.
        log.warning("Resource Graph failed (%s): restoring every VM we started without checking which are "
                    "already back", describe_error(exc))
        views = {}
    actions = []
    settled: list[MachineRecord] = []
    for record in started:
        action = RESTORE_ACTIONS.get(record.original_power_state, "")
        current = views.get(record.resource_id.lower())
        state = current.power_state if current else ""
        if not action:
            settled.append(replace(record, restore_action="none", restore_outcome="skipped",
                                   restore_detail=f"original state {record.original_power_state!r} needs nothing"))
        elif state in _ALREADY_DONE[action]:
            log.info("%s is already %s; nothing to do", record.resource_id, state)
            settled.append(replace(record, restore_action=action, restore_outcome="skipped",
                                   restore_detail=f"already {state}"))
        elif settings.dry_run:
            log.info("dry run: would %s %s (was %s before the run)", action, record.resource_id,
                     record.original_power_state)
            settled.append(replace(record, restore_action=action, restore_outcome="planned"))
        else:
            machine = describe_machine(record.resource_id)
            assert machine is not None  # the row was written from a parsed id
            actions.append((machine, action, record))

    by_id = {record.resource_id.lower(): record for _, _, record in actions}
    if actions:
        ledger.save_rows(event.correlation_id, [
            replace(r, restore_action=a, restore_outcome="issued") for _, a, r in actions])
    deadline = utcnow() + timedelta(seconds=settings.restore_timeout_seconds)
    tasks = [[power_operation(runtime.clients, m, a, persistent=True)] for m, a, _ in actions]
    results = run_operations(runtime.clients, tasks,
                             parallelism=settings.parallelism, deadline=deadline, log=log,
                             progress=runtime.progress)
    for key, result in results.items():
        record = by_id[key]
        action = RESTORE_ACTIONS[record.original_power_state]
        settled.append(replace(record, restore_action=action, restore_outcome=result.outcome,
                               restore_detail=result.detail, restored_at=result.finished_at))
    ledger.save_rows(event.correlation_id, settled)
    failed = [r for r in settled if r.restore_outcome in ("failed", "timed-out")]
    if failed:
        names = ", ".join(r.resource_id for r in failed[:20]) + (" ..." if len(failed) > 20 else "")
        raise_alert(ledger, event.correlation_id, AlertKind.LEFT_RUNNING,
                    f"{len(failed)} VM(s) this toolkit started could not be put back by the deadline and may still "
                    f"be running (billed): {names}", machines=[r.resource_id for r in failed])
    merged = {r.resource_id.lower(): r for r in records}
    merged.update({r.resource_id.lower(): r for r in settled})
    return _summary(list(merged.values()), run_status, restored="failed" if failed else "ok")


def run_post_with_retention(runtime: Runtime, event: MaintenanceEvent, log: RunLogger) -> dict[str, Any]:
    """Restore first (the VMs matter most), then clean up expired snapshots. A retention that
    fails is recorded on the run and does not fail the phase (the VMs are back either way)."""
    summary = run_post(runtime, event, log)
    try:
        summary["retention"] = run_retention(runtime, event, log)
    except Exception as exc:
        detail = describe_error(exc) if isinstance(exc, AzureError) else f"{type(exc).__name__}: {exc}"
        log.warning("snapshot retention failed (expired snapshots are left for the next run): %s", detail)
        runtime.ledger.update_run(event.correlation_id, {"RetentionError": detail})
        summary["retention"] = {"error": detail}
    return summary


def _summary(records: list[MachineRecord], run_status: str, *, restored: str) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for record in records:
        if record.restore_outcome:
            outcomes[record.restore_outcome] = outcomes.get(record.restore_outcome, 0) + 1
    return {"run_status": run_status, "machines": len(records), "restore_outcomes": outcomes, "restore": restored}
