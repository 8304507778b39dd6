"""Step `late-event`: a pre event that comes once its window has begun, or after the run's post
event, starts nothing (whatever it started, nothing would turn off). Intake checks the same."""

from __future__ import annotations

from datetime import datetime

from handlers.core.events import MaintenanceEvent
from handlers.core.status import Verdict
from handlers.ledger import Ledger
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.pre.state import PreWork
from handlers.phases.steps import Ended, PhaseRun


def late_pre_reason(ledger: Ledger, event: MaintenanceEvent, now: datetime) -> str | None:
    """Why it is too late to act on this pre event (None when it is not): its window has
    begun, or the run's post event is recorded (Event Grid redelivers for up to 24 hours)."""
    if now >= event.start:
        return (f"the pre event came after its window began ({event.start.isoformat()}); "
                "nothing was started or snapshotted")
    if ledger.get_phase(event.correlation_id, "post") is not None:
        return "the pre event came after the run's post event; nothing was started or snapshotted"
    return None


def refuse_late_event(run: PhaseRun[PreWork]) -> None:
    ledger = run.runtime.ledger
    late = late_pre_reason(ledger, run.event, run.runtime.clock.utcnow())
    if late:
        ledger.note_late_pre(run.event, late)
        raise_alert(ledger, run.event.correlation_id, AlertKind.LATE_PRE_EVENT, late)
        run.end(Ended.LATE, machines=0, verdict=Verdict.LATE.value, late=late)
