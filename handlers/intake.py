"""Accepting events: parse, validate, record the run, queue the work, return.

This is all an Event Grid-triggered function does, so it answers in well under a second
whatever the fleet size: Event Grid redelivers when a handler takes longer than about 30 s,
and the long work (minutes of waiting for VMs) happens in the queue-triggered worker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import azure.functions as func

from handlers.errors import InvalidEventError, UnsupportedEventTypeError
from handlers.events import EventKind, MaintenanceEvent, decode_queue_message, parse_event, parse_function_event
from handlers.ledger import AcceptOutcome
from handlers.logs import run_logger
from handlers.runtime import Runtime

WORK_MESSAGE_VERSION = 1
log = run_logger(None)


def accept_event_grid_event(runtime: Runtime, event: func.EventGridEvent, *, expected: EventKind) -> str:
    """Handle one Event Grid delivery; never raises for an event that can never succeed.

    Each event is handled by its own type; a pre event delivered to the post function (or the
    reverse) is still handled correctly, with a warning that the subscription's filter is wrong.
    """
    try:
        parsed = parse_function_event(event)
    except (InvalidEventError, UnsupportedEventTypeError) as exc:
        return _refuse(runtime, exc, event_id=event.id, raw=_function_event_json(event))
    if parsed.kind is not expected:
        run_logger(parsed.correlation_id).warning(
            "%s event delivered to the %s_maintenance function: check the event subscription's type filter",
            parsed.kind.value, expected.value)
    return _accept(runtime, parsed)


def accept_queue_delivery(runtime: Runtime, body: bytes | str) -> list[str]:
    """Handle a Storage-queue delivery from Event Grid: one event or an array, base64 or not."""
    try:
        raws = decode_queue_message(body)
    except InvalidEventError as exc:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return [_refuse(runtime, exc, event_id=None, raw=text)]
    return [accept_raw_event(runtime, raw) for raw in raws]


def accept_raw_event(runtime: Runtime, raw: Mapping[str, Any]) -> str:
    try:
        parsed = parse_event(raw)
    except (InvalidEventError, UnsupportedEventTypeError) as exc:
        event_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        return _refuse(runtime, exc, event_id=event_id, raw=json.dumps(raw, default=str))
    return _accept(runtime, parsed)


def work_message(event: MaintenanceEvent, *, deferrals: int = 0) -> str:
    return json.dumps(
        {"version": WORK_MESSAGE_VERSION, "phase": event.kind.value, "deferrals": deferrals, "event": event.to_dict()}
    )


def _accept(runtime: Runtime, event: MaintenanceEvent) -> str:
    run_log = run_logger(event.correlation_id)
    if not runtime.settings.allows_configuration(event.maintenance_configuration_id):
        reason = (
            f"maintenance configuration {event.maintenance_configuration_id} is not in "
            "MAINTENANCE_ALLOWED_CONFIGURATION_IDS"
        )
        run_log.error("event %s refused: %s", event.event_id, reason)
        runtime.ledger.record_rejected(event_id=event.event_id, reason=reason, raw=json.dumps(event.to_dict()))
        return "refused"
    outcome = runtime.ledger.accept_event(event)
    if outcome is AcceptOutcome.DUPLICATE:
        run_log.info("%s event %s delivered again; the run already has it, nothing to do", event.kind.value,
                     event.event_id)
        return "duplicate"
    runtime.work_queue().send_message(work_message(event))
    runtime.ledger.mark_queued(event.correlation_id, event.kind.value)
    run_log.info(
        "%s event accepted (window %s to %s, subscriptions %s); work queued",
        event.kind.value, event.start.isoformat(), event.end.isoformat(), ",".join(event.subscription_ids),
    )
    return "accepted" if outcome is AcceptOutcome.NEW else "requeued"


def _refuse(
    runtime: Runtime, exc: InvalidEventError | UnsupportedEventTypeError, *, event_id: str | None, raw: str
) -> str:
    if isinstance(exc, UnsupportedEventTypeError):
        log.warning("ignoring event %s: %s", event_id or "(no id)", exc)
        return "ignored"
    # Logged and recorded, then acknowledged: redelivering a malformed event cannot fix it.
    # If the ledger cannot take the record, the error propagates and Event Grid retries (and
    # finally dead-letters) the event: either way a record of it remains.
    log.error("refusing event %s: %s", event_id or "(no id)", exc)
    runtime.ledger.record_rejected(event_id=event_id, reason=str(exc), raw=raw)
    return "invalid"


def _function_event_json(event: func.EventGridEvent | func.CloudEvent) -> str:
    """The delivery as close to what was sent as the binding lets us see (for the record)."""
    try:
        data: Any = event.get_json()
    except ValueError:
        data = None
    names = ("id", "topic", "subject", "event_type", "event_time", "source", "type", "time", "specversion")
    envelope = {name: getattr(event, name) for name in names if getattr(event, name, None) is not None}
    envelope["data"] = data
    return json.dumps(envelope, default=str)

