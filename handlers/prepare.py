"""The pre event's work: find the run's machines, start the ones that are off, and cancel the
run when they are not running by the deadline (the cancellation cutoff minus a safety margin).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from azure.core.exceptions import AzureError

from handlers.cancellation import cancel_run
from handlers.events import MaintenanceEvent
from handlers.inventory import MachineKind, RunMachine, VmView, find_run_machines, get_vm_views
from handlers.ledger import MachineRecord, utcnow
from handlers.logs import RunLogger
from handlers.power import STARTABLE_STATES, read_power_states, run_power_actions
from handlers.runtime import Runtime

# Outcomes after which a retried worker leaves a machine alone.
_FINAL = frozenset({"succeeded", "failed", "skipped", "not-needed", "unknown", "planned"})
_FALSE_TAG_VALUES = frozenset({"false", "no", "0", "off"})
EMPTY_RUN_HINT = (
    "no machines found for this run. Likely causes: the app's identity has no Reader role on a "
    "target subscription (Resource Graph then returns nothing rather than an error), the run's "
    "scope holds only machines outside these subscriptions, or the dynamic scope matched nothing"
)


def run_pre(runtime: Runtime, event: MaintenanceEvent, log: RunLogger) -> dict[str, Any]:
    settings = runtime.settings
    ledger = runtime.ledger
    assert event.cancellation_cutoff is not None  # parse_event requires it on pre events
    deadline = event.cancellation_cutoff - timedelta(seconds=settings.cutoff_safety_seconds)
    graph = runtime.clients.resource_graph()

    machines = find_run_machines(graph, event.subscription_ids, event.correlation_id, log=log)
    if not machines:
        log.warning(EMPTY_RUN_HINT)
        ledger.update_run(event.correlation_id, {"Verdict": "empty", "MachineCount": 0})
        return {"machines": 0, "verdict": "empty"}

    vms = [m for m in machines if m.kind is MachineKind.VM]
    views = get_vm_views(graph, event.subscription_ids, [m.resource_id for m in vms])
    # Resource Graph can miss a VM (a new VM not yet indexed, a partial read permission):
    # only those few get an instance-view GET of their own.
    unseen = [m for m in vms if not (views.get(m.resource_id.lower()) or VmView("", "")).power_state]
    direct = read_power_states(runtime.clients, unseen, parallelism=settings.parallelism)

    # A machine's first row keeps its power state from before we touched anything; a retried
    # worker reuses it instead of re-planning from a VM we may already have started.
    records = {r.resource_id.lower(): r for r in ledger.list_machines(event.correlation_id)}
    new = []
    for machine in machines:
        key = machine.resource_id.lower()
        if key not in records:
            view = views.get(key)
            state = (view.power_state if view else "") or direct.get(key, "")
            new.append(_plan(machine, view, state, runtime))
    for record in ledger.add_machines(event.correlation_id, new):
        records[record.resource_id.lower()] = record
    for record in records.values():
        if record.pre_action != "start":
            log.info("%s: %s, %s (%s)", record.resource_id, record.pre_outcome, record.pre_detail,
                     record.original_power_state or "state unknown")

    to_start = _machines_to_start(runtime, event, machines, records, log)
    if settings.dry_run:
        planned = [r for r in records.values() if r.pre_action == "start"]
        for record in planned:
            log.info("dry run: would start %s (%s)", record.resource_id, record.original_power_state)
        return _summary(records, verdict="dry-run", cancel="not-requested")

    if to_start:
        intents = [replace(records[m.resource_id.lower()], pre_outcome="starting") for m in to_start]
        ledger.save_machines(event.correlation_id, intents)
        results = run_power_actions(runtime.clients, [(m, "start") for m in to_start],
                                    parallelism=settings.parallelism, deadline=deadline, log=log)
        updated = []
        for key, result in results.items():
            ready_at = result.finished_at if result.outcome == "succeeded" else None
            record = replace(records[key], pre_outcome=result.outcome, pre_detail=result.detail,
                             started_at=result.sent_at, ready_at=ready_at)
            records[key] = record
            updated.append(record)
        ledger.save_machines(event.correlation_id, updated)

    failing = [r for r in records.values() if r.pre_action == "start" and r.pre_outcome in ("failed", "timed-out")]
    verdict = "failed" if failing else "ready"
    cancel = _cancel_if_needed(runtime, event, failing, log)
    ledger.update_run(event.correlation_id, {"Verdict": verdict, "MachineCount": len(records),
                                             "FailingMachines": len(failing), "CancelOutcome": cancel})
    return _summary(records, verdict=verdict, cancel=cancel)


def _plan(machine: RunMachine, view: VmView | None, state: str, runtime: Runtime) -> MachineRecord:
    """What to do with a machine at first sighting, recorded before anything is touched."""
    settings = runtime.settings
    base = MachineRecord(
        resource_id=machine.resource_id, kind=machine.kind.value, subscription_id=machine.subscription_id,
        resource_group=machine.resource_group, name=machine.name,
        location=view.location if view else "", original_power_state=state,
    )
    if machine.kind is MachineKind.ARC:
        return replace(base, pre_action="skip", pre_outcome="skipped",
                       pre_detail="Arc-enabled server: it cannot be powered on from Azure")
    if machine.kind is MachineKind.OTHER:
        return replace(base, pre_action="skip", pre_outcome="skipped", pre_detail="not a virtual machine")
    tags = {k.lower(): v for k, v in (view.tags if view else {}).items()}
    opt_out = tags.get(settings.opt_out_tag.lower())
    if opt_out is not None and opt_out.strip().lower() not in _FALSE_TAG_VALUES:
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
    log: RunLogger,
) -> list[RunMachine]:
    """VMs whose start is still due. A retried worker re-checks what an earlier attempt sent."""
    due = [m for m in machines if records[m.resource_id.lower()].pre_action == "start"
           and records[m.resource_id.lower()].pre_outcome not in _FINAL]
    retried = [m for m in due if records[m.resource_id.lower()].pre_outcome != "pending"]
    if not retried:
        return due
    current = read_power_states(runtime.clients, retried, parallelism=runtime.settings.parallelism)
    confirmed = []
    for machine in retried:
        key = machine.resource_id.lower()
        if current.get(key) == "running":
            log.info("%s already running after an earlier attempt", machine.resource_id)
            records[key] = replace(records[key], pre_outcome="succeeded", ready_at=utcnow())
            confirmed.append(records[key])
    runtime.ledger.save_machines(event.correlation_id, confirmed)
    return [m for m in due if records[m.resource_id.lower()].pre_outcome not in _FINAL]


def _cancel_if_needed(runtime: Runtime, event: MaintenanceEvent, failing: list[MachineRecord], log: RunLogger) -> str:
    """Cancel the run while a cancel is still honoured; say exactly what happened."""
    if not failing:
        return "not-needed"
    names = ", ".join(r.resource_id for r in failing[:20]) + (" ..." if len(failing) > 20 else "")
    settings = runtime.settings
    if not settings.cancel_on_failure:
        log.warning("%d VM(s) not running by the deadline (%s); MAINTENANCE_CANCEL_ON_FAILURE is false, "
                    "so the run goes ahead", len(failing), names)
        return "not-requested (cancel-on-failure off)"
    run = runtime.ledger.get_run(event.correlation_id) or {}
    if run.get("CancelOutcome") == "accepted":
        return "accepted"
    assert event.cancellation_cutoff is not None
    now = utcnow()
    if now >= event.cancellation_cutoff:
        log.error("%d VM(s) not running (%s) but the cancellation cutoff %s has passed: the run could NOT be "
                  "cancelled and will go ahead", len(failing), names, event.cancellation_cutoff.isoformat())
        return "missed (cutoff passed)"
    log.warning("cancelling the run: %d VM(s) not running by the deadline: %s", len(failing), names)
    try:
        result = cancel_run(runtime.clients.arm(), event, endpoint=settings.arm_endpoint,
                            api_version=settings.cancel_api_version, now=now)
    except AzureError as exc:
        log.error("cancel request failed: %s", exc)
        runtime.ledger.update_run(event.correlation_id, {"CancelOutcome": f"failed: {exc}"})
        raise
    log.warning("run cancelled (HTTP %d, status %s)", result.status_code, result.status)
    return "accepted"


def _summary(records: dict[str, MachineRecord], *, verdict: str, cancel: str) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for record in records.values():
        outcomes[record.pre_outcome] = outcomes.get(record.pre_outcome, 0) + 1
    return {"machines": len(records), "outcomes": outcomes, "verdict": verdict, "cancel": cancel}

