"""Step `health`: are the machines healthy after patching? The checks of MAINTENANCE_POST_CHECKS:

- `running-again`: every machine expected to be on after the run is on. A VM is expected on when it
  was running before the window, or the toolkit started it and leaves it on (`maintenance-after=
  leave-running`, MAINTENANCE_RESTORE_VMS=false), unless the run turns it off after patching
  (`maintenance-after=deallocate|stop`, or the restore of a VM the toolkit started). Its state is
  read from its instance view (Resource Graph lags). An Arc server cannot be "running" as far as
  Azure knows: its Connected Machine agent must be Connected (Resource Graph's `properties.status`,
  the only view of it Azure has). Opted-out machines are not checked.
- `vm-agent-ready`: those VMs' agent reports Ready (instance view).
- `http-probe`: MAINTENANCE_HTTP_PROBE_URL answers 2xx: a finding about the run, not a machine.

A machine just rebooted takes a while: the failing checks are made again every RECHECK_SECONDS
(at most; MAINTENANCE_POLL_INTERVAL_SECONDS when shorter) until they pass or the step has waited
MAINTENANCE_POST_CHECK_WAIT_SECONDS in all (`HealthWaited` on the run row), over as many
invocations as that takes. A cancelled run installed nothing: it is checked once, without waiting.

A machine that fails is a **rollback candidate** when the run has snapshots of its disks taken
before the window. Each machine's row keeps `Health` (passed, failed; empty: not checked) and
`HealthDetail` (the reasons); the run row keeps `HealthSummary`, which the post notification reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from azure.core.exceptions import AzureError

from handlers.adapters.http_probe import probe_url
from handlers.adapters.inventory import VmView, describe_machine, get_vm_views
from handlers.adapters.operations import describe_error
from handlers.adapters.power import VmStatus, read_vm_statuses
from handlers.core.bounds import truncate_utf16, utf16_units
from handlers.core.events import RunStatus
from handlers.core.settings import Settings
from handlers.core.status import Outcome
from handlers.ledger import HEALTH_FIELDS, MachineRecord, SnapshotRecord
from handlers.phases.post.restore import power_after, started_by_toolkit
from handlers.phases.post.state import PostWork
from handlers.phases.signals import ContinueLater
from handlers.phases.steps import PhaseRun

STEP = "health"
PASSED, FAILED = "passed", "failed"
# A rebooted VM is back within a minute or two: checking more often than every 30 s finds it no
# sooner in any way that matters, and leaves ten rechecks in the default five minutes' wait.
RECHECK_SECONDS = 30.0
DETAIL_UNITS = 1000  # what a machine's row keeps of its reasons
LISTED = 50  # rollback candidates named in HealthSummary; the rest are counted
_SUMMARY_UNITS = 30_000  # HealthSummary stays whole JSON in one string property (32,767 UTF-16 units)
_RUNNING = ("running", "starting")


def expected_on(record: MachineRecord) -> bool:
    """Whether the machine should be on once the run is over (and so is checked)."""
    if record.opted_out or record.kind not in ("vm", "arc"):
        return False
    if record.kind == "arc":
        return True
    action, _ = power_after(record)
    if action and record.restore_action != "none":  # "none": MAINTENANCE_RESTORE_VMS=false turned nothing off
        return False
    return record.original_power_state in _RUNNING or (
        started_by_toolkit(record) and record.pre_outcome == Outcome.SUCCEEDED)


def rollback_snapshot_ids(snapshots: Iterable[SnapshotRecord]) -> dict[str, list[str]]:
    """By machine (lower-case id): the snapshots of its disks the run took before the window
    (succeeded, or reused from an earlier attempt), OS disk first: what a rollback restores from."""
    found: dict[str, list[tuple[bool, str]]] = {}
    for snapshot in snapshots:
        if (snapshot.outcome in (Outcome.SUCCEEDED, Outcome.REUSED) and snapshot.snapshot_id
                and snapshot.disk_id.lower() != snapshot.vm_id.lower()):
            found.setdefault(snapshot.vm_id.lower(), []).append((snapshot.role != "os", snapshot.snapshot_id))
    return {vm: [sid for _, sid in sorted(ids)] for vm, ids in found.items()}


def check_health(run: PhaseRun[PostWork]) -> None:
    run.go_on()  # beside the steps after it from the start: its reads draw on no budget they need
    runtime, event, log = run.runtime, run.event, run.log
    settings, ledger, clock = runtime.settings, runtime.ledger, runtime.clock
    checks = settings.health.checks
    if not checks:
        log.info("MAINTENANCE_POST_CHECKS is none: health after patching is not checked")
        return
    # Not `run.state.records` (the step runs beside the others): the rows as read when it started.
    records = run.state.machine_rows(lambda: ledger.list_machines(event.correlation_id))
    subjects = {r.resource_id.lower(): r for r in records if _checked(r, checks)}
    # A machine that passed in an earlier invocation of this step stays passed.
    due = {key: r for key, r in subjects.items() if r.health != PASSED}
    probing = "http-probe" in checks
    # Waited on the runtime's monotonic clock and kept on the run row, so that a wait spread over
    # invocations adds up (the pattern of `patch-results`); this invocation's end bounds it too.
    waited = float((ledger.get_run(event.correlation_id) or {}).get("HealthWaited") or 0.0)
    allowed = 0.0 if event.run_status == RunStatus.CANCELLED else float(settings.health.wait_seconds)
    budget = max(0.0, min(allowed - waited, clock.seconds_until(run.invocation_end)))
    every = min(RECHECK_SECONDS, float(settings.poll_interval_seconds))
    began = clock.now()
    reasons: dict[str, list[str]] = {}
    finding = ""
    while True:
        reasons = _check_machines(run, list(due.values()), checks)
        due = {key: r for key, r in due.items() if key in reasons}
        if probing:
            finding = _probe(settings)
            probing = bool(finding)
        left = budget - (clock.now() - began)
        if not (due or probing) or left <= 0:
            break
        log.info("%d machine(s)%s not healthy yet; checking again in %.0f s", len(due),
                 " and the http probe" if probing else "", min(every, left))
        clock.sleep(min(every, left))
    waited += clock.now() - began
    ledger.update_run(event.correlation_id, {"HealthWaited": waited})
    passed = [replace(r, health=PASSED, health_detail="") for key, r in subjects.items() if key not in due]
    if (due or probing) and waited < allowed:
        _save(run, passed)
        raise ContinueLater(STEP, f"{len(due)} machine(s) not healthy when this invocation's time ran out; "
                                  f"{allowed - waited:.0f} s of waiting left")
    failed = [replace(r, health=FAILED, health_detail=truncate_utf16("\n".join(reasons[key]), DETAIL_UNITS))
              for key, r in due.items()]
    # A machine checked in an earlier attempt that is not checked now (the settings changed) says so.
    stale = [replace(r, health="", health_detail="") for r in records
             if r.health and r.resource_id.lower() not in subjects]
    _save(run, [*passed, *failed, *stale])
    snapshots = rollback_snapshot_ids(ledger.list_snapshots(event.correlation_id))
    for record in failed:
        ids = snapshots.get(record.resource_id.lower(), [])
        log.warning("unhealthy after patching: %s: %s%s", record.resource_id, record.health_detail.replace("\n", "; "),
                    f" (rollback candidate: {len(ids)} snapshot(s) from before the window)" if ids else "")
    if finding:
        log.warning("unhealthy after patching: %s", finding)
    _summarize(run, checks, len(subjects), failed, snapshots, finding, waited)


def _checked(record: MachineRecord, checks: tuple[str, ...]) -> bool:
    if not expected_on(record):
        return False
    return "running-again" in checks or (record.kind == "vm" and "vm-agent-ready" in checks)


def _check_machines(run: PhaseRun[PostWork], records: list[MachineRecord],
                    checks: tuple[str, ...]) -> dict[str, list[str]]:
    """Why each failing machine fails (by lower-case id); one that passes is left out."""
    runtime, log = run.runtime, run.log
    vms = [m for m in (describe_machine(r.resource_id) for r in records if r.kind == "vm") if m is not None]
    arcs = [r.resource_id for r in records if r.kind == "arc"]
    statuses: dict[str, VmStatus] = {}
    views: dict[str, VmView] | None = {}
    try:
        statuses = read_vm_statuses(runtime.clients, vms, parallelism=runtime.settings.parallelism)
    except AzureError as exc:  # read again at the next check; failing until then
        log.info("instance views could not be read (%s); checking again", describe_error(exc))
    if arcs:
        try:
            views = get_vm_views(runtime.clients.resource_graph(), run.event.subscription_ids, arcs)
        except AzureError as exc:
            log.info("Resource Graph failed (%s); checking the Arc servers again", describe_error(exc))
            views = None
    found = {}
    for record in records:
        key = record.resource_id.lower()
        why = _vm_reasons(record, statuses.get(key), checks) if record.kind == "vm" else _arc_reasons(views, key)
        if why:
            found[key] = why
    return found


def _vm_reasons(record: MachineRecord, status: VmStatus | None, checks: tuple[str, ...]) -> list[str]:
    if status is None or not status.power_state:
        return ["its state could not be read (instance view)"]
    if status.power_state == "not-found":
        return ["the VM no longer exists"]
    running, reasons = status.power_state == "running", []
    if "running-again" in checks and not running:
        was = ("it was running before the window" if record.original_power_state in _RUNNING
               else "the toolkit started it and leaves it running")
        reasons.append(f"not running: power state {status.power_state} ({was})")
    # A VM that is not running has no agent to speak of: `running-again` already says why.
    if "vm-agent-ready" in checks and (running or "running-again" not in checks) and status.agent_ready is not True:
        reasons.append("the VM agent is not Ready" if status.agent_ready is False
                       else "the instance view has no VM agent status")
    return reasons


def _arc_reasons(views: dict[str, VmView] | None, key: str) -> list[str]:
    if views is None:
        return ["its agent status could not be read (Resource Graph)"]
    status = (views.get(key) or VmView("", "")).arc_status
    if status == "connected":
        return []
    return [f"Arc agent {status}, not connected" if status else "not found in Resource Graph"]


def _probe(settings: Settings) -> str:
    """The run's finding ("" when the URL answers 2xx)."""
    result = probe_url(settings.http_probe_url or "", timeout_seconds=settings.http_probe_timeout_seconds)
    return "" if result.passed else f"http-probe: {result.detail}"


def _save(run: PhaseRun[PostWork], rows: list[MachineRecord]) -> None:
    """Store the health columns of the rows (the other steps' columns are theirs)."""
    run.runtime.ledger.save_rows(run.event.correlation_id, rows, only=HEALTH_FIELDS)


def _summarize(run: PhaseRun[PostWork], checks: tuple[str, ...], checked: int, failed: list[MachineRecord],
               snapshots: dict[str, list[str]], finding: str, waited: float) -> None:
    candidates = [{"name": r.name, "resource_id": r.resource_id, "reasons": r.health_detail.splitlines(),
                   "snapshot_ids": snapshots[r.resource_id.lower()]}
                  for r in sorted(failed, key=lambda r: r.name.lower()) if snapshots.get(r.resource_id.lower())]
    summary: dict[str, Any] = {
        "checks": list(checks), "checked": checked, "passed": checked - len(failed), "failed": len(failed),
        "rollback_candidates": candidates[:LISTED], "rollback_candidates_not_listed": max(0, len(candidates) - LISTED),
        "run_findings": [finding] if finding else [], "waited_seconds": round(waited, 1),
    }
    text = json.dumps(summary, sort_keys=True)
    while utf16_units(text) > _SUMMARY_UNITS and summary["rollback_candidates"]:
        summary["rollback_candidates"].pop()  # a VM with many disks: fewer named, the rest counted
        summary["rollback_candidates_not_listed"] += 1
        text = json.dumps(summary, sort_keys=True)
    run.summary["health"] = {"checked": checked, "passed": checked - len(failed), "failed": len(failed),
                             "rollback_candidates": len(candidates), "run_findings": len(summary["run_findings"])}
    run.runtime.ledger.update_run(run.event.correlation_id, {"HealthSummary": text})
