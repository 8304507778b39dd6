"""A person's say on a run before its cutoff: hold it, or (approval mode) approve it.

The pre notice carries a signed link (`handlers.core.run_links`); the HTTP function that takes
it (`handlers.edge.hold_link`) calls `hold_run` or `approve_run` here once the link is proven good.

- **Hold** (`HeldAt` on the run row): the `no-hold-tag` check fails for the whole run, so the
  verdict cancels it. A hold that comes after a "ready" verdict, with the cutoff still ahead,
  cancels the run at once. The two orders are both covered: the hold is written before the
  verdict is read here, and the verdict step reads the hold again after writing "ready"
  (`held_after_ready`), so one of the two always sees the other.
- **Approve** (MAINTENANCE_APPROVAL_MODE=approve, `ApprovedAt`): the run is cancelled unless
  someone approves it before the deadline. The pre phase does its work, then waits for the
  approval instead of deciding (step `await-approval`); the approval queues the verdict at once,
  and without one the fallback verdict at the deadline finds it missing and cancels.

Either is refused, with nothing recorded, once the verdict makes it moot or the cutoff has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from handlers.core.events import EventKind, MaintenanceEvent
from handlers.core.logs import run_logger
from handlers.core.status import Verdict
from handlers.core.work import Step, WorkMessage, send_work
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.pre.cancel import cutoff_of, send_cancel
from handlers.phases.pre.state import PreWork
from handlers.phases.signals import DeferredError
from handlers.phases.steps import Ended, PhaseRun, Scope
from handlers.runtime import Runtime

HELD_REASON = "held by a person through the hold link"


@dataclass(frozen=True)
class Answer:
    """What the link's page says: whether it took effect, and what happened."""

    accepted: bool
    message: str


def pre_event_of(row: dict[str, Any]) -> MaintenanceEvent:
    """The run's pre event as the run row recorded it (enough to cancel it or queue its verdict)."""
    start, end, cutoff = row["WindowStart"], row["WindowEnd"], row.get("CancellationCutoff")
    return MaintenanceEvent(
        event_id=str(row["CorrelationId"]), kind=EventKind.PRE, event_type="Microsoft.Maintenance.PreMaintenanceEvent",
        schema="EventGridEvent", topic=str(row.get("MaintenanceConfigurationId") or ""), subject=None,
        event_time=None, correlation_id=str(row["CorrelationId"]),
        maintenance_configuration_id=str(row.get("MaintenanceConfigurationId") or ""), start=_aware(start),
        end=_aware(end), cancellation_cutoff=_aware(cutoff) if cutoff else None,
        subscription_ids=tuple(s for s in str(row.get("SubscriptionIds") or "").split(",") if s), status=None)


def hold_run(runtime: Runtime, row: dict[str, Any], *, now: datetime) -> Answer:
    event = pre_event_of(row)
    log = run_logger(event.correlation_id)
    moot = _moot(row)
    if moot:
        return Answer(False, moot)
    runtime.ledger.update_run(event.correlation_id, {"HeldAt": now, "HeldVia": "hold link"})
    log.warning("the run was held through the hold link")
    latest = runtime.ledger.get_run(event.correlation_id) or row
    if latest.get("Verdict") == Verdict.READY.value and latest.get("CancelOutcome") != "accepted":
        if not runtime.settings.cancel_on_failure:
            return Answer(True, "The hold is recorded, but this app does not cancel runs "
                                "(MAINTENANCE_CANCEL_ON_FAILURE is false): the run goes ahead.")
        outcome = send_cancel(runtime, event, HELD_REASON, log)
        runtime.ledger.update_run(event.correlation_id, {"CancelOutcome": outcome, "Verdict": Verdict.FAILED.value,
                                                         "FailingReasons": HELD_REASON})
        if outcome == "accepted":
            return Answer(True, "The run is held: it was ready, and it has been cancelled now.")
        raise_alert(runtime.ledger, event.correlation_id, AlertKind.CANCEL_NOT_MADE,
                    f"the run was held after its ready verdict and the cancel did not go through: {outcome}")
        return Answer(True, f"The hold is recorded, but the cancel did not go through ({outcome}). "
                            "Check the run in the Azure portal.")
    return Answer(True, "The run is held: it will be cancelled at its verdict, before the cutoff.")


def approve_run(runtime: Runtime, row: dict[str, Any], *, now: datetime) -> Answer:
    event = pre_event_of(row)
    moot = _moot(row)
    if moot:
        return Answer(False, moot)
    if runtime.settings.hold.mode != "approve":
        return Answer(False, "This app does not ask for approvals (MAINTENANCE_APPROVAL_MODE is hold).")
    if row.get("ApprovedAt") or row.get("Verdict") == Verdict.READY.value:
        return Answer(False, "The run is approved already.")
    runtime.ledger.update_run(event.correlation_id, {"ApprovedAt": now, "ApprovedVia": "approve link"})
    log = run_logger(event.correlation_id)
    if (runtime.ledger.get_run(event.correlation_id) or {}).get("AwaitingApprovalSince"):
        log.info("the run was approved through the approve link; deciding it now")
        send_work(runtime.work_queue(), WorkMessage(event, Step.VERDICT))
        return Answer(True, "The run is approved: its checks decide it now, and it goes ahead if they pass.")
    log.info("the run was approved through the approve link before its preparation ended")
    return Answer(True, "The run is approved: it is decided on its checks as soon as its preparation is done.")


def held_after_ready(runtime: Runtime, event: MaintenanceEvent) -> bool:
    """Whether a hold came in while the verdict was being written (read after writing it)."""
    return bool((runtime.ledger.get_run(event.correlation_id) or {}).get("HeldAt"))


def await_approval(run: PhaseRun[PreWork]) -> None:
    """Step `await-approval`: in approval mode, wait for a person before deciding the run.

    The phase's work is done and recorded; what is left is the verdict. Without an approval yet,
    and with the deadline ahead, this message leaves it to the verdict message the approval
    queues, or to the fallback verdict at the deadline (which finds no approval and cancels)."""
    runtime, event = run.runtime, run.event
    hold = runtime.settings.hold
    if hold.mode != "approve" or not hold.enabled:
        return
    if run.dry_run:
        run.log.info("dry run: would wait for a person to approve the run before its verdict")
        return
    row = runtime.ledger.get_run(event.correlation_id) or {}
    if row.get("ApprovedAt") or row.get("HeldAt"):
        return
    deadline = cutoff_of(event) - timedelta(seconds=runtime.settings.cutoff_safety_seconds)
    if runtime.clock.utcnow() >= deadline:
        return  # the verdict at the deadline: no approval is a failing check
    run.log.info("waiting for a person to approve the run (MAINTENANCE_APPROVAL_MODE=approve) until %s",
                 deadline.isoformat())
    # Written, then the approval read again; `approve_run` writes the approval, then reads this:
    # whichever comes second queues the verdict (a second verdict message finds the first's claim).
    runtime.ledger.update_run(event.correlation_id, {"AwaitingApprovalSince": runtime.clock.utcnow()})
    if (runtime.ledger.get_run(event.correlation_id) or {}).get("ApprovedAt"):
        run.log.info("approved while this phase began to wait: the verdict is queued")
        send_work(runtime.work_queue(), WorkMessage(event, Step.VERDICT))
    if run.scope is Scope.WHOLE:
        run.end(Ended.DISPATCHED, awaiting_approval=True, dispatched=True)
        return
    raise DeferredError("waiting for approval: the approval or the fallback verdict at the deadline decides", None, 0)


def _moot(row: dict[str, Any]) -> str:
    """Why a hold or an approval can no longer change anything ("" when it still can)."""
    verdict = str(row.get("Verdict") or "")
    if verdict in (Verdict.FAILED.value, Verdict.LATE.value) or row.get("CancelOutcome") == "accepted":
        return "Too late to change anything: the run has been cancelled already."
    if verdict == Verdict.EMPTY.value:
        return "The run has no machines: there is nothing to hold."
    if row.get("HeldAt"):
        return "The run is already held."
    if verdict == Verdict.DRY_RUN.value:
        return "This was a dry run: nothing is patched or cancelled by this app."
    return ""


def _aware(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
