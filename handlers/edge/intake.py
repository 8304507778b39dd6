"""Accepting events: parse, validate, record the run, queue the work, return.

This is all an Event Grid-triggered function does, so it answers in well under a second
whatever the fleet size: Event Grid redelivers when a handler takes longer than about 30 s,
and the long work (minutes of waiting for VMs) happens in the queue-triggered worker.

An event that can never succeed (malformed, spoofed, implausible) is refused: logged at ERROR,
recorded in the ledger's ``rejected-events`` partition and acknowledged, since redelivering it
cannot help. Only a failure to record (the ledger or the queue: Azure errors) propagates, so
that Event Grid or the queue retries and nothing disappears without a record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import azure.functions as func

from handlers.core import telemetry
from handlers.core.bounds import bounded_json, bounded_text
from handlers.core.errors import InvalidEventError, UnsupportedEventTypeError
from handlers.core.events import EventKind, MaintenanceEvent, parse_event, parse_function_event
from handlers.core.logs import run_logger
from handlers.core.reading import MAX_EVENT_ID, decode_queue_message
from handlers.core.work import WorkMessage, send_work
from handlers.ledger import AcceptOutcome
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.late_events import late_pre_reason
from handlers.phases.run_end import PhaseEnd, phase_ended
from handlers.runtime import Runtime

# A pre event comes about 40 minutes before its window (DOMAIN.md section 2). One for a window
# further ahead is not Update Manager's; its fallback verdict would also have to wait longer than
# a queue message can stay invisible.
MAX_PRE_LEAD = timedelta(hours=2)
log = run_logger(None)


@dataclass(frozen=True)
class _Refusal:
    """An event we refuse: what the ledger keeps of it, and what the caller is told."""

    event_id: str | None
    reason: str
    raw: str
    outcome: str = "invalid"
    correlation_id: str | None = None


_Item = MaintenanceEvent | _Refusal | str  # str: an outcome already settled ("ignored")


def accept_event_grid_event(runtime: Runtime, event: func.EventGridEvent, *, expected: EventKind) -> str:
    """Handle one Event Grid delivery; never raises for an event that can never succeed.

    Each event is handled by its own type; a pre event delivered to the post function (or the
    reverse) is still handled correctly, with a warning that the subscription's filter is wrong.
    """
    item: _Item
    try:
        item = parse_function_event(event)
    except UnsupportedEventTypeError as exc:
        item = _ignore(exc, getattr(event, "id", None))
    except InvalidEventError as exc:
        item = _refusal(exc, getattr(event, "id", None), _function_event_json(event))
    if isinstance(item, MaintenanceEvent) and item.kind is not expected:
        run_logger(item.correlation_id).warning(
            "%s event delivered to the %s_maintenance function: check the event subscription's type filter",
            item.kind.value, expected.value)
    return _settle(runtime, [item])[0]


def accept_queue_delivery(runtime: Runtime, body: bytes | str) -> list[str]:
    """Handle a Storage-queue delivery from Event Grid: one event or an array, base64 or not.

    The refusals among its events are recorded together (100 per ledger transaction); the valid
    events of the same delivery are accepted as if each had come alone.
    """
    try:
        raws = decode_queue_message(body)
    except InvalidEventError as exc:
        return _settle(runtime, [_refusal(exc, None, bounded_text(body))])
    return _settle(runtime, [_parse_raw(raw) for raw in raws])


def accept_raw_event(runtime: Runtime, raw: Mapping[str, Any]) -> str:
    """Handle one event given as a dict (either schema)."""
    return _settle(runtime, [_parse_raw(raw)])[0]


def _parse_raw(raw: Mapping[str, Any]) -> _Item:
    try:
        return parse_event(raw)
    except UnsupportedEventTypeError as exc:
        return _ignore(exc, _raw_event_id(raw))
    except InvalidEventError as exc:
        return _refusal(exc, _raw_event_id(raw), bounded_json(raw))


def _settle(runtime: Runtime, items: Sequence[_Item]) -> list[str]:
    """Refuse, accept or ignore each item, in order; the outcome of each.

    The refusals are recorded first and in one call, so a delivery of many malformed events
    costs a few ledger transactions, not one write each.
    """
    now = runtime.clock.utcnow()
    screened = [_screen(runtime, item, now) if isinstance(item, MaintenanceEvent) else item for item in items]
    refusals = [item for item in screened if isinstance(item, _Refusal)]
    for refusal in refusals:
        run_logger(refusal.correlation_id).error("refusing event %s: %s", refusal.event_id or "(no id)", refusal.reason)
    if refusals:
        runtime.ledger.record_rejected_many((r.event_id, r.reason, r.raw) for r in refusals)
    outcomes = []
    for item in screened:
        if isinstance(item, MaintenanceEvent):
            outcomes.append(_accept(runtime, item, now))
        else:
            outcomes.append(item.outcome if isinstance(item, _Refusal) else item)
    return outcomes


def _screen(runtime: Runtime, event: MaintenanceEvent, now: datetime) -> MaintenanceEvent | _Refusal:
    """The event, or why it is refused although well-formed (settings, an implausible window)."""
    if not runtime.settings.allows_configuration(event.maintenance_configuration_id):
        reason = (
            f"maintenance configuration {event.maintenance_configuration_id} is not in "
            "MAINTENANCE_ALLOWED_CONFIGURATION_IDS"
        )
        return _Refusal(event.event_id, reason, bounded_json(event.to_dict()), "refused", event.correlation_id)
    if event.kind is EventKind.PRE and event.start - now > MAX_PRE_LEAD:
        problem = (
            f"{event.start.isoformat()} is {_minutes(event.start - now)} from now; a pre event comes about "
            f"40 minutes before its window, and at most {_minutes(MAX_PRE_LEAD)} ahead is accepted"
        )
        error = InvalidEventError("data.startDateTime", problem)
        return _Refusal(event.event_id, str(error), bounded_json(event.to_dict()), "invalid", event.correlation_id)
    return event


def _accept(runtime: Runtime, event: MaintenanceEvent, now: datetime) -> str:
    with telemetry.scope(correlation_id=event.correlation_id, phase=event.kind.value):
        return _accept_in_scope(runtime, event, now)


def _accept_in_scope(runtime: Runtime, event: MaintenanceEvent, now: datetime) -> str:
    run_log = run_logger(event.correlation_id)
    if event.kind is EventKind.PRE:
        late = late_pre_reason(runtime.ledger, event, now)
        if late is not None:
            # Starting VMs now would leave them running: nothing would turn them off again.
            if runtime.ledger.record_late_pre(event, late):
                raise_alert(runtime.ledger, event.correlation_id, AlertKind.LATE_PRE_EVENT, late)
                phase_ended(runtime, event, "pre", PhaseEnd.LATE, {"late": late, "machines": 0})
            else:
                run_log.warning("pre event %s delivered again after its window began or its post event: %s",
                                event.event_id, late)
            return "late"
    outcome = runtime.ledger.accept_event(event)
    if outcome is AcceptOutcome.DUPLICATE:
        run_log.info("%s event %s delivered again; the run already has it, nothing to do", event.kind.value,
                     event.event_id)
        return "duplicate"
    send_work(runtime.work_queue(), WorkMessage(event))
    runtime.ledger.mark_queued(event.correlation_id, event.kind.value)
    accepted = "accepted" if outcome is AcceptOutcome.NEW else "requeued"
    run_log.info(
        "%s event accepted (window %s to %s, subscriptions %s); work queued",
        event.kind.value, event.start.isoformat(), event.end.isoformat(), ",".join(event.subscription_ids),
        extra=telemetry.about(action="accept", outcome=accepted),
    )
    return accepted


def _refusal(exc: InvalidEventError, event_id: Any, raw: str) -> _Refusal:
    return _Refusal(_recorded_id(event_id), str(exc), raw)


def _ignore(exc: UnsupportedEventTypeError, event_id: Any) -> str:
    log.warning("ignoring event %s: %s", _recorded_id(event_id) or "(no id)", exc)
    return "ignored"


def _recorded_id(event_id: Any) -> str | None:
    """What a record and a log line keep of an id that may be anything the sender chose."""
    return bounded_text(event_id, MAX_EVENT_ID) if isinstance(event_id, str) and event_id else None


def _minutes(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _raw_event_id(raw: Any) -> Any:
    """The id of an event we could not parse, for its record (any casing of the key)."""
    if not isinstance(raw, dict):
        return None
    return next((value for key, value in raw.items() if isinstance(key, str) and key.lower() == "id"), None)


def _function_event_json(event: func.EventGridEvent | func.CloudEvent) -> str:
    """The delivery as close to what was sent as the binding lets us see (for the record)."""
    try:
        data: Any = event.get_json()
    except ValueError:
        data = None
    names = ("id", "topic", "subject", "event_type", "event_time", "source", "type", "time", "specversion")
    envelope = {name: getattr(event, name) for name in names if getattr(event, name, None) is not None}
    envelope["data"] = data
    return bounded_json(envelope)
