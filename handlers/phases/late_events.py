"""When a pre event comes too late to act on: its window has begun, or the run's post event is
recorded. Whatever it started then, nothing would turn off. Intake and the pre phase's first
step both ask here (this module is kept light: the event functions' acknowledgement imports it).
"""

from __future__ import annotations

from datetime import datetime

from handlers.core.events import MaintenanceEvent
from handlers.ledger import Ledger


def late_pre_reason(ledger: Ledger, event: MaintenanceEvent, now: datetime) -> str | None:
    """Why it is too late to act on this pre event (None when it is not): its window has
    begun, or the run's post event is recorded (Event Grid redelivers for up to 24 hours)."""
    if now >= event.start:
        return (f"the pre event came after its window began ({event.start.isoformat()}); "
                "nothing was started or snapshotted")
    if ledger.get_phase(event.correlation_id, "post") is not None:
        return "the pre event came after the run's post event; nothing was started or snapshotted"
    return None
