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

from handlers.core.logs import run_logger
from handlers.ledger import Ledger

ALERT_MARKER = "MAINTENANCE ALERT"


class AlertKind(StrEnum):
    UNCHECKED_RUN = "unchecked-run"  # the run's machines could not be established by the deadline
    CANCEL_NOT_MADE = "cancel-not-made"  # a failed verdict whose cancel failed or came too late
    LATE_PRE_EVENT = "late-pre-event"
    LEFT_RUNNING = "left-running"  # VMs we started that the post phase could not turn off
    POISON_MESSAGE = "poison-message"
    STALE_TAKEOVER = "stale-takeover"  # a lease kept renewed for far longer than a phase lasts


def raise_alert(ledger: Ledger | None, correlation_id: str | None, kind: AlertKind, message: str,
                **details: Any) -> None:
    """Log the alert at ERROR and record it on the run (when there is one and the ledger answers)."""
    log = run_logger(correlation_id)
    log.error("%s %s: %s", ALERT_MARKER, kind.value, message)
    if ledger is None:
        return
    try:
        ledger.record_alert(correlation_id, kind.value, message, details)
    except Exception as exc:  # the log line above is the alert; the record is a convenience
        logging.getLogger("maintenance").warning("alert %s not recorded in the ledger: %s", kind.value, exc)
