"""The pre phase's verdict: run the checks, and cancel the run while a cancel is still honoured.

Rules: work still running at the deadline is a failure; so is any failing check. A failure
cancels the run when MAINTENANCE_CANCEL_ON_FAILURE is on, but never once the cutoff has passed:
then the miss is logged at ERROR and recorded, and the run goes ahead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from azure.core.exceptions import AzureError

from handlers.cancellation import cancel_run
from handlers.checks import CheckContext, CheckResult, run_checks
from handlers.events import MaintenanceEvent
from handlers.ledger import utcnow
from handlers.logs import RunLogger
from handlers.runtime import Runtime


@dataclass(frozen=True)
class Verdict:
    verdict: str  # "ready" | "failed"
    cancel: str  # "not-needed" | "accepted" | "not-requested (...)" | "missed (cutoff passed)"
    reasons: tuple[str, ...]


def decide(runtime: Runtime, event: MaintenanceEvent, context: CheckContext, log: RunLogger) -> Verdict:
    results = run_checks(context, log.warning)
    reasons = [f"{m.resource_id}: still starting at the deadline" for m in context.machines.values()
               if m.pre_outcome == "timed-out"]
    reasons += [f"{s.disk_id}: snapshot still being created at the deadline" for s in context.snapshots
                if s.outcome == "timed-out"]
    reasons += [f"{r.name}: {f.resource_id + ': ' if f.resource_id else ''}{f.reason}"
                for r in results for f in r.findings]
    reasons = list(dict.fromkeys(reasons))
    _record_machine_findings(runtime, event, context, results)
    verdict = "failed" if reasons else "ready"
    cancel = _cancel_if_needed(runtime, event, reasons, log)
    runtime.ledger.update_run(event.correlation_id, {
        "Verdict": verdict,
        "MachineCount": len(context.machines),
        "Checks": json.dumps({r.name: "passed" if r.passed else "failed" for r in results}),
        "FailingReasons": "\n".join(reasons),
        "CancelOutcome": cancel,
    })
    if reasons:
        log.warning("verdict: %d reason(s) against this run; cancel: %s", len(reasons), cancel)
    else:
        log.info("verdict: ready (%s)", ", ".join(f"{r.name} passed" for r in results) or "no checks configured")
    return Verdict(verdict, cancel, tuple(reasons))


def _record_machine_findings(
    runtime: Runtime, event: MaintenanceEvent, context: CheckContext, results: list[CheckResult]
) -> None:
    per_machine: dict[str, list[str]] = {}
    for result in results:
        for finding in result.findings:
            if finding.resource_id:
                per_machine.setdefault(finding.resource_id.lower(), []).append(f"{result.name}: {finding.reason}")
    changed = []
    for key, found in per_machine.items():
        record = context.machines.get(key)
        if record is not None:
            context.machines[key] = replace(record, check_failures="; ".join(found))
            changed.append(context.machines[key])
    runtime.ledger.save_rows(event.correlation_id, changed)


def _cancel_if_needed(runtime: Runtime, event: MaintenanceEvent, reasons: list[str], log: RunLogger) -> str:
    """Cancel the run while a cancel is still honoured; say exactly what happened."""
    if not reasons:
        return "not-needed"
    summary = "; ".join(reasons[:10]) + (" ..." if len(reasons) > 10 else "")
    settings = runtime.settings
    if not settings.cancel_on_failure:
        log.warning("the run goes ahead despite %d failure(s) (MAINTENANCE_CANCEL_ON_FAILURE is false): %s",
                    len(reasons), summary)
        return "not-requested (cancel-on-failure off)"
    run = runtime.ledger.get_run(event.correlation_id) or {}
    if run.get("CancelOutcome") == "accepted":
        return "accepted"
    assert event.cancellation_cutoff is not None
    now = utcnow()
    if now >= event.cancellation_cutoff:
        log.error("the run could NOT be cancelled: the cancellation cutoff %s has passed, and it will go ahead "
                  "despite %d failure(s): %s", event.cancellation_cutoff.isoformat(), len(reasons), summary)
        return "missed (cutoff passed)"
    log.warning("cancelling the run: %s", summary)
    try:
        result = cancel_run(runtime.clients.arm(), event, endpoint=settings.arm_endpoint,
                            api_version=settings.cancel_api_version, now=now)
    except AzureError as exc:
        log.error("cancel request failed: %s", exc)
        runtime.ledger.update_run(event.correlation_id, {"CancelOutcome": f"failed: {exc}"})
        raise
    log.warning("run cancelled (HTTP %d, status %s)", result.status_code, result.status)
    return "accepted"
