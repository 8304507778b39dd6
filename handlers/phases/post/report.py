"""Step `report`: the run's report, JSON (every figure) and HTML (for a person), written to the
app's storage (`<MAINTENANCE_REPORT_CONTAINER>/<configuration>/<window start>/report.json|html`),
its links on the run row (`ReportUrl`, `ReportJsonUrl`).

Built from the ledger alone (the run row, every machine's and snapshot's row), so it is written
whatever happened before: the steps that failed (`StepErrors`) and the reasons against the run
are in its header. `build_report` is also what `./dev report` prints from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError

from handlers.core.events import MaintenanceEvent
from handlers.core.ids import configuration_name_of, name_of
from handlers.core.status import Outcome
from handlers.ledger import Ledger, MachineRecord, SnapshotRecord
from handlers.ledger.records import stored_json
from handlers.phases.post.health import FAILED, PASSED, rollback_snapshot_ids
from handlers.phases.post.report_html import render_html
from handlers.phases.post.restore import started_by_toolkit
from handlers.phases.post.state import PostWork
from handlers.phases.run_end import PhaseEnd, PhaseEnding
from handlers.phases.steps import PhaseRun
from handlers.runtime import Runtime

SCHEMA = "update-manager-maintenance-toolkit/report@1"
_NOT_REPORTED = ("not-reported", "inprogress", "notstarted")  # no final result for the run


def write_report(run: PhaseRun[PostWork]) -> None:
    runtime, event = run.runtime, run.event
    report = build_report(runtime.ledger, event.correlation_id, generated_at=runtime.clock.utcnow(),
                          step_errors=run.failures, dry_run=run.dry_run)
    urls = upload_report(runtime, event, report)
    runtime.ledger.update_run(event.correlation_id, {"ReportUrl": urls["html"], "ReportJsonUrl": urls["json"],
                                                     "ReportWrittenAt": runtime.clock.utcnow()})
    run.summary["report"] = urls["html"]
    run.log.info("report written: %s", urls["html"])


def report_on_unfinished_end(ending: PhaseEnding) -> None:
    """A run-end listener: a post phase that never reached its `report` step (it failed on every
    attempt, or gave up waiting for the pre phase) still gets its report, saying so."""
    if ending.phase != "post" or ending.how not in (PhaseEnd.FAILED, PhaseEnd.GAVE_UP):
        return
    runtime, event = ending.runtime, ending.event
    report = build_report(runtime.ledger, event.correlation_id, generated_at=runtime.clock.utcnow(),
                          step_errors={"post phase": f"ended before its report ({ending.how.value})"},
                          dry_run=runtime.settings.dry_run)
    urls = upload_report(runtime, event, report)
    runtime.ledger.update_run(event.correlation_id, {"ReportUrl": urls["html"], "ReportJsonUrl": urls["json"],
                                                     "ReportWrittenAt": runtime.clock.utcnow()})


def report_path(event: MaintenanceEvent) -> str:
    """`<configuration>/<window start, UTC>/`: one folder per run, sorted by time."""
    return f"{configuration_name_of(event.correlation_id)}/{event.start:%Y-%m-%dT%H%MZ}/"


def upload_report(runtime: Runtime, event: MaintenanceEvent, report: Mapping[str, Any]) -> dict[str, str]:
    """Write both files (overwriting an earlier attempt's); their URLs."""
    from azure.storage.blob import ContentSettings

    container = runtime.clients.blob_container(runtime.settings.report_container)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    urls = {}
    for kind, body, content_type in (
        ("json", json.dumps(report, indent=1, sort_keys=True, default=str), "application/json"),
        ("html", render_html(report), "text/html; charset=utf-8"),
    ):
        blob = container.upload_blob(f"{report_path(event)}report.{kind}", body.encode("utf-8"), overwrite=True,
                                     content_settings=ContentSettings(content_type=content_type))
        urls[kind] = str(blob.url)
    return urls


def build_report(ledger: Ledger, correlation_id: str, *, generated_at: datetime,
                 step_errors: Mapping[str, str] | None = None, dry_run: bool = False) -> dict[str, Any]:
    """The report of a run, from what the ledger holds of it."""
    run = ledger.get_run(correlation_id) or {}
    machines = ledger.list_machines(correlation_id)
    snapshots: dict[str, list[SnapshotRecord]] = {}
    for snapshot in (snapshot_rows := ledger.list_snapshots(correlation_id)):
        snapshots.setdefault(snapshot.vm_id.lower(), []).append(snapshot)
    rollback = rollback_snapshot_ids(snapshot_rows)
    errors = {**stored_json(run.get("StepErrors"), {}), **dict(step_errors or {})}
    rows = [_machine(record, snapshots.get(record.resource_id.lower(), []),
                     rollback.get(record.resource_id.lower(), [])) for record in machines]
    configuration_id = correlation_id.split("/providers/Microsoft.Maintenance/applyUpdates/", 1)[0]
    return {
        "schema": SCHEMA,
        "generated_at": generated_at.isoformat(),
        "run": {
            "correlation_id": correlation_id, "configuration_id": configuration_id,
            "configuration": configuration_name_of(correlation_id), "run_id": name_of(correlation_id),
            "window_start": _iso(run.get("WindowStart")), "window_end": _iso(run.get("WindowEnd")),
            "cutoff": _iso(run.get("CancellationCutoff")),
            "verdict": str(run.get("Verdict") or ""), "cancel_outcome": str(run.get("CancelOutcome") or ""),
            "run_status": str(run.get("RunStatus") or ""),
            "failing_reasons": [r for r in str(run.get("FailingReasons") or "").splitlines() if r],
            "step_errors": errors, "dry_run": dry_run,
            "pre_ended": str(run.get("PreEndedHow") or ""), "post_ended": str(run.get("PostEndedHow") or ""),
            "health": stored_json(run.get("HealthSummary"), None),  # None: not checked
        },
        "counts": _counts(rows),
        "machines": rows,
    }


def _machine(record: MachineRecord, snapshots: list[SnapshotRecord], rollback: list[str]) -> dict[str, Any]:
    started = started_by_toolkit(record)
    return {
        "id": record.resource_id, "name": record.name, "kind": record.kind, "subscription": record.subscription_id,
        "resource_group": record.resource_group, "location": record.location, "wave": record.wave,
        "before": record.original_power_state, "pre_action": record.pre_action, "pre_outcome": record.pre_outcome,
        "pre_detail": record.pre_detail, "start_seconds": _seconds(record.started_at, record.ready_at),
        "snapshots": [{"disk": s.disk_id, "role": s.role, "snapshot_id": s.snapshot_id, "name": s.snapshot_name,
                       "outcome": s.outcome, "detail": s.detail} for s in snapshots if s.disk_id != s.vm_id],
        "check_failures": [f for f in record.check_failures.split("; ") if f],
        "guest": {phase: ({"what": getattr(record, f"guest_{phase}"),
                           "outcome": getattr(record, f"guest_{phase}_outcome"),
                           "detail": getattr(record, f"guest_{phase}_detail")}
                          if getattr(record, f"guest_{phase}") or getattr(record, f"guest_{phase}_outcome") else None)
                  for phase in ("pre", "post")},
        "patch": {
            "status": record.patch_status or "not-reported", "installed": record.patch_installed,
            "failed": record.patch_failed, "pending": record.patch_pending, "reboot_status": record.patch_reboot,
            "window_exceeded": bool(record.patch_window_exceeded), "error": record.patch_error,
            "started_at": _iso(record.patch_started_at), "finished_at": _iso(record.patch_finished_at),
            "duration_seconds": _seconds(record.patch_started_at, record.patch_finished_at),
            "failed_updates": stored_json(record.patch_failed_updates, []),
        },
        "restore_action": record.restore_action, "restore_outcome": record.restore_outcome,
        "restore_detail": record.restore_detail,
        "after": _after(record, started),
        "health": _health(record, rollback),
    }


def _health(record: MachineRecord, rollback: list[str]) -> dict[str, Any] | None:
    """Health after patching; None when not checked. A machine that failed is a rollback
    candidate when the run has snapshots of its disks from before the window."""
    if record.health not in (PASSED, FAILED):
        return None
    failed = record.health == FAILED
    return {"passed": not failed, "reasons": record.health_detail.splitlines() if failed else [],
            "rollback_candidate": failed and bool(rollback), "snapshot_ids": list(rollback) if failed else []}


def _after(record: MachineRecord, started: bool) -> str:
    """The power state the run left the machine in, as far as the ledger knows."""
    if record.kind != "vm":
        return ""
    if record.restore_outcome in (Outcome.SUCCEEDED, Outcome.SKIPPED) and record.restore_action != "none":
        return {"deallocate": "deallocated", "power-off": "stopped"}.get(record.restore_action, "")
    if started and record.pre_outcome == Outcome.SUCCEEDED:
        return "running"
    return record.original_power_state


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    patched = [r for r in rows if r["kind"] in ("vm", "arc")]
    status = [str(r["patch"]["status"]).lower() for r in patched]
    return {
        "machines": len(rows),
        "started": sum(1 for r in rows if r["pre_action"] == "start" and r["pre_outcome"] == Outcome.SUCCEEDED),
        "restored": sum(1 for r in rows if r["restore_outcome"] == Outcome.SUCCEEDED),
        "patched": status.count("succeeded"), "warnings": status.count("completedwithwarnings"),
        "failed": status.count("failed"),
        "not_reported": sum(1 for s in status if s in _NOT_REPORTED),
        "needs_reboot": sum(1 for r in patched if str(r["patch"]["reboot_status"]).lower() in ("required", "failed")),
        "snapshots": sum(len(r["snapshots"]) for r in rows),
        "snapshots_failed": sum(1 for r in rows for s in r["snapshots"]
                                if s["outcome"] in (Outcome.FAILED, Outcome.TIMED_OUT)),
        "guest_failed": sum(1 for r in rows for g in r["guest"].values()
                            if g and g["outcome"] in (Outcome.FAILED, Outcome.TIMED_OUT)),
        "unhealthy": sum(1 for r in rows if r["health"] and not r["health"]["passed"]),
        "rollback_candidates": sum(1 for r in rows if r["health"] and r["health"]["rollback_candidate"]),
    }


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 1) if start and end else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)
