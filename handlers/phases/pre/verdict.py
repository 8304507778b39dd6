"""The pre phase's verdict: run the checks, and cancel the run while a cancel is still honoured.

Rules: work still running at the deadline is a failure; so is any failing check. A failure
cancels the run when MAINTENANCE_CANCEL_ON_FAILURE is on, but never once the cutoff has passed:
then the miss is logged at ERROR, alerted and recorded, and the run goes ahead.

The verdict fails closed: when the run's machines cannot be established by the deadline
(Resource Graph failing, the verdict itself failing with no time left for a retry), the run is
cancelled (a cancel needs nothing but the correlation id) unless MAINTENANCE_UNCHECKED_RUN is
`report`; either way the reason is recorded and alerted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from azure.core.exceptions import AzureError

from handlers.adapters.cancellation import cancel_run
from handlers.adapters.operations import describe_error
from handlers.core.events import MaintenanceEvent
from handlers.core.logs import RunLogger
from handlers.ledger import utcnow
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.pre.checks import CheckContext, CheckResult, run_checks
from handlers.runtime import Runtime

# Time before the cutoff in which a failed message's retry still comes in time (the host retries
# a failed message after host.json's visibilityTimeout, 30 s): with less left, act now.
RETRY_LEFT = timedelta(seconds=45)


@dataclass(frozen=True)
class Verdict:
    verdict: str  # "ready" | "failed"
    cancel: str  # "not-needed" | "accepted" | "not-requested (...)" | "missed (cutoff passed)" | "failed: ..."
    reasons: tuple[str, ...]


def decide(
    runtime: Runtime, event: MaintenanceEvent, context: CheckContext, log: RunLogger, *, unchecked: str = ""
) -> Verdict:
    """The verdict over what the phase knows; `unchecked` says why the run's machines could not
    all be established (then the run fails closed)."""
    results = run_checks(context, log.warning)
    reasons = [f"the run's machines could not be established: {unchecked}"] if unchecked else []
    reasons += [f"{m.resource_id}: still starting at the deadline" for m in context.machines.values()
                if m.pre_outcome == "timed-out"]
    reasons += [f"{s.disk_id}: snapshot still being created at the deadline" for s in context.snapshots
                if s.outcome == "timed-out"]
    reasons += [f"{r.name}: {f.resource_id + ': ' if f.resource_id else ''}{f.reason}"
                for r in results for f in r.findings]
    reasons = list(dict.fromkeys(reasons))
    _record_machine_findings(runtime, event, context, results)
    verdict = "failed" if reasons else "ready"
    if unchecked and len(reasons) == 1 and runtime.settings.unchecked_run == "report":
        cancel = "not-requested (MAINTENANCE_UNCHECKED_RUN is report)"
    else:
        cancel = _cancel_if_needed(runtime, event, reasons, log)
    runtime.ledger.update_run(event.correlation_id, {
        "Verdict": verdict,
        "MachineCount": len(context.machines),
        "Checks": json.dumps({r.name: "passed" if r.passed else "failed" for r in results}),
        "FailingReasons": "\n".join(reasons),
        "CancelOutcome": cancel,
        "Unchecked": unchecked,
    })
    if unchecked:
        raise_alert(runtime.ledger, event.correlation_id, AlertKind.UNCHECKED_RUN,
                    f"the run's machines could not be established by the deadline ({unchecked}); cancel: {cancel}")
    if reasons and cancel not in ("accepted", "not-requested (cancel-on-failure off)") and not unchecked:
        raise_alert(runtime.ledger, event.correlation_id, AlertKind.CANCEL_NOT_MADE,
                    f"the verdict failed ({len(reasons)} reason(s)) and the run was not cancelled: {cancel}")
    if reasons:
        log.warning("verdict: %d reason(s) against this run; cancel: %s", len(reasons), cancel)
    else:
        log.info("verdict: ready (%s)", ", ".join(f"{r.name} passed" for r in results) or "no checks configured")
    return Verdict(verdict, cancel, tuple(reasons))


def fail_closed(runtime: Runtime, event: MaintenanceEvent, reason: str, log: RunLogger) -> dict[str, Any]:
    """No verdict could be reached in time: cancel the run (unless MAINTENANCE_UNCHECKED_RUN is
    report or cancel-on-failure is off), record and alert. Needs nothing but the event: the
    ledger may be what failed, so writing to it is best effort."""
    settings = runtime.settings
    if settings.unchecked_run == "report":
        cancel = "not-requested (MAINTENANCE_UNCHECKED_RUN is report)"
    elif not settings.cancel_on_failure:
        cancel = "not-requested (cancel-on-failure off)"
    else:
        cancel = send_cancel(runtime, event, reason, log)
    raise_alert(runtime.ledger, event.correlation_id, AlertKind.UNCHECKED_RUN,
                f"no verdict could be reached before the cutoff ({reason}); cancel: {cancel}")
    try:
        runtime.ledger.update_run(event.correlation_id, {
            "Verdict": "failed", "FailingReasons": reason, "CancelOutcome": cancel, "Unchecked": reason})
    except Exception as exc:
        log.warning("the fail-closed verdict could not be recorded in the ledger: %s", exc)
    return {"verdict": "failed", "cancel": cancel, "reasons": [reason], "unchecked": True}


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
    if not runtime.settings.cancel_on_failure:
        log.warning("the run goes ahead despite %d failure(s) (MAINTENANCE_CANCEL_ON_FAILURE is false): %s",
                    len(reasons), summary)
        return "not-requested (cancel-on-failure off)"
    run = runtime.ledger.get_run(event.correlation_id) or {}
    if run.get("CancelOutcome") == "accepted":
        return "accepted"
    return send_cancel(runtime, event, summary, log, retry_later=True)


def send_cancel(runtime: Runtime, event: MaintenanceEvent, reason: str, log: RunLogger, *,
                retry_later: bool = False) -> str:
    """The cancel request, retried (ARM's retry policy) until just before the cutoff. With
    `retry_later`, a failure with time left before the cutoff raises, so the queue retries it."""
    settings = runtime.settings
    assert event.cancellation_cutoff is not None
    now = utcnow()
    if now >= event.cancellation_cutoff:
        log.error("the run could NOT be cancelled: the cancellation cutoff %s has passed, and it will go ahead "
                  "despite: %s", event.cancellation_cutoff.isoformat(), reason)
        return "missed (cutoff passed)"
    log.warning("cancelling the run: %s", reason)
    # The retry policy may keep trying until the cutoff, not after it (a late cancel is ignored).
    budget = max(1.0, (event.cancellation_cutoff - now).total_seconds())
    try:
        result = cancel_run(runtime.clients.arm(), event, endpoint=settings.arm_endpoint,
                            api_version=settings.cancel_api_version, now=now,
                            timeout=budget, retry_backoff_max=min(10.0, max(1.0, budget / 4)))
    except (AzureError, ValueError) as exc:
        detail = describe_error(exc) if isinstance(exc, AzureError) else str(exc)
        log.error("cancel request failed: %s", detail)
        try:
            runtime.ledger.update_run(event.correlation_id, {"CancelOutcome": f"failed: {detail}"})
        except Exception as record_error:
            log.warning("the failed cancel could not be recorded: %s", record_error)
        if retry_later and event.cancellation_cutoff - utcnow() > RETRY_LEFT:
            raise
        return f"failed: {detail}"
    log.warning("run cancelled (HTTP %d, status %s)", result.status_code, result.status)
    return "accepted"
