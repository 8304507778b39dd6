"""Alerts: what a person must hear about, logged where the log alert finds it and kept on the run.

Every alert is one ERROR log line starting with ALERT_MARKER (the `toolkit-alert` log alert in
infra/app/alerts.bicep matches it) and, when the ledger can take it, a row in the run's partition
(`alert-<kind>`, the latest of each kind) and the run row's `LastAlert`. Recording is best effort:
an alert about the ledger being down must still reach the log.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from handlers.core.keys import digest, run_key
from handlers.core.logs import run_logger
from handlers.core.telemetry import about
from handlers.ledger import Ledger

ALERT_MARKER = "MAINTENANCE ALERT"


class AlertKind(StrEnum):
    UNCHECKED_RUN = "unchecked-run"  # the run's machines could not be established by the deadline
    CANCEL_NOT_MADE = "cancel-not-made"  # a failed verdict whose cancel failed or came too late
    LATE_PRE_EVENT = "late-pre-event"
    MISSED_PRE_EVENT = "missed-pre-event"  # a run's window started and its pre event never came
    LEFT_RUNNING = "left-running"  # VMs we started that the post phase could not turn off
    POISON_MESSAGE = "poison-message"
    STALE_TAKEOVER = "stale-takeover"  # a lease kept renewed for far longer than a phase lasts


def raise_alert(ledger: Ledger | None, correlation_id: str | None, kind: AlertKind, message: str,
                *, once: str | None = None, **details: Any) -> bool:
    """Log the alert at ERROR and record it on the run (when there is one and the ledger answers).

    With `once` (what the alert is about: a queue message id, a run) the alert is recorded first,
    by a conditional insert, and not logged again when a retried invocation raises it a second
    time; False then. A ledger that does not answer never silences an alert."""
    alert = f"{kind.value}:{run_key(correlation_id) if correlation_id else digest(message)}"
    if once is not None:
        alert = f"{alert}:{digest(once)}"
    if ledger is not None and once is not None:
        try:
            if not ledger.record_alert(correlation_id, kind.value, message, details, once=once):
                return False
        except Exception as exc:  # logged below all the same
            logging.getLogger("maintenance").warning("alert %s not recorded in the ledger: %s", kind.value, exc)
    log = run_logger(correlation_id)
    log.error("%s %s: %s", ALERT_MARKER, kind.value, message, extra=about(alert=alert))
    if ledger is None or once is not None:  # recorded above (or that failed and was said)
        return True
    try:
        ledger.record_alert(correlation_id, kind.value, message, details)
    except Exception as exc:  # the log line above is the alert; the record is a convenience
        logging.getLogger("maintenance").warning("alert %s not recorded in the ledger: %s", kind.value, exc)
    return True
