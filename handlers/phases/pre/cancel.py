"""The cancel request (retried until the cutoff), and the verdict that fails closed when no
verdict could be reached in time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError

from handlers.adapters.cancellation import cancel_run
from handlers.adapters.operations import describe_error
from handlers.core.errors import InvalidEventError
from handlers.core.events import MaintenanceEvent
from handlers.core.logs import RunLogger
from handlers.core.status import CancelOutcome, Verdict
from handlers.core.telemetry import about
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.run_end import PhaseEnd, phase_ended
from handlers.runtime import Runtime

# Time before the cutoff in which a failed message's retry still comes in time (the host retries
# a failed message after host.json's visibilityTimeout, 30 s): with less left, act now.
RETRY_LEFT = timedelta(seconds=45)


def cutoff_of(event: MaintenanceEvent) -> datetime:
    """The cancellation cutoff, which the pre phase's deadlines are measured from. `parse_event`
    requires it on a pre event, so an event without one cannot go through the pre phase."""
    if event.cancellation_cutoff is None:
        raise InvalidEventError("data.cancellationCutOffDateTime",
                                f"required for the pre phase; this {event.kind.value} event has none")
    return event.cancellation_cutoff


def send_cancel(runtime: Runtime, event: MaintenanceEvent, reason: str, log: RunLogger, *,
                retry_later: bool = False) -> str:
    """The cancel request, retried (ARM's retry policy) until just before the cutoff. With
    `retry_later`, a failure with time left before the cutoff raises, so the queue retries it."""
    settings = runtime.settings
    cutoff = cutoff_of(event)
    now = runtime.clock.utcnow()
    if now >= cutoff:
        log.error("the run could NOT be cancelled: the cancellation cutoff %s has passed, and it will go ahead "
                  "despite: %s", cutoff.isoformat(), reason,
                  extra=about(action="cancel", outcome=CancelOutcome.MISSED, reason=reason))
        return "missed (cutoff passed)"
    log.warning("cancelling the run: %s", reason, extra=about(action="cancel", outcome=CancelOutcome.REQUESTED,
                                                              reason=reason))
    # The retry policy may keep trying until the cutoff, not after it (a late cancel is ignored).
    budget = max(1.0, (cutoff - now).total_seconds())
    try:
        result = cancel_run(runtime.clients.arm(), event, endpoint=settings.arm_endpoint,
                            api_version=settings.cancel_api_version, now=now,
                            timeout=budget, retry_backoff_max=min(10.0, max(1.0, budget / 4)))
    except (AzureError, ValueError) as exc:
        detail = describe_error(exc) if isinstance(exc, AzureError) else str(exc)
        log.error("cancel request failed: %s", detail,
                  extra=about(action="cancel", outcome=CancelOutcome.FAILED, reason=reason))
        try:
            runtime.ledger.update_run(event.correlation_id, {"CancelOutcome": f"failed: {detail}"})
        except Exception as record_error:
            log.warning("the failed cancel could not be recorded: %s", record_error)
        if retry_later and runtime.clock.seconds_until(cutoff) > RETRY_LEFT.total_seconds():
            raise
        return f"failed: {detail}"
    log.warning("run cancelled (HTTP %d, status %s)", result.status_code, result.status,
                extra=about(action="cancel", outcome=CancelOutcome.CANCELLED, reason=reason))
    return "accepted"


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
            "Verdict": Verdict.FAILED.value, "FailingReasons": reason, "CancelOutcome": cancel, "Unchecked": reason})
    except Exception as exc:
        log.warning("the fail-closed verdict could not be recorded in the ledger: %s", exc)
    summary = {"verdict": Verdict.FAILED.value, "cancel": cancel, "reasons": [reason], "unchecked": True}
    phase_ended(runtime, event, "pre", PhaseEnd.FAILED_CLOSED, summary)
    return summary
