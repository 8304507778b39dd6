"""Step `late-event`: a pre event that comes once its window has begun, or after the run's post
event, starts nothing (whatever it started, nothing would turn off). Intake checks the same
(`handlers.phases.late_events`)."""

from __future__ import annotations

from handlers.core.status import Verdict
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.late_events import late_pre_reason
from handlers.phases.pre.state import PreWork
from handlers.phases.steps import Ended, PhaseRun


def refuse_late_event(run: PhaseRun[PreWork]) -> None:
    ledger = run.runtime.ledger
    late = late_pre_reason(ledger, run.event, run.runtime.clock.utcnow())
    if late:
        ledger.note_late_pre(run.event, late)
        raise_alert(ledger, run.event.correlation_id, AlertKind.LATE_PRE_EVENT, late)
        run.end(Ended.LATE, machines=0, verdict=Verdict.LATE.value, late=late)
