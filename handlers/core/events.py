"""Pre/post maintenance events, parsed once at the edge into frozen typed objects (the reading
of outside text itself is `handlers.core.reading`).

Both delivery schemas (Event Grid, CloudEvents 1.0) are accepted with keys in any
casing: Microsoft's docs publish both ``correlationId`` and ``CorrelationId``. The
correlation id is later sent to ARM as a URL path, so it is validated strictly here.

Parsing is total: for any input it returns an event or raises InvalidEventError (naming the
field) or UnsupportedEventTypeError, never anything else, and it bounds what it accepts (sizes,
nesting, the window's shape) so that every accepted event fits in the ledger and the work queue.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import azure.functions as func

from handlers.core.errors import InvalidEventError, UnsupportedEventTypeError
from handlers.core.ids import CONFIGURATION_ID_RE, GUID, MAX_NAME, MAX_RESOURCE_GROUP, RUN_ID_RE
from handlers.core.reading import (
    Fields,
    data_object,
    format_time,
    quote,
    reading,
)

PRE_EVENT_TYPE = "Microsoft.Maintenance.PreMaintenanceEvent"
POST_EVENT_TYPE = "Microsoft.Maintenance.PostMaintenanceEvent"


class EventKind(StrEnum):
    PRE = "pre"
    POST = "post"


class RunStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    IN_PROGRESS = "inprogress"
    UNKNOWN = "unknown"


# Bounds on what an event may carry. Theirs are far inside them: a run id is ~250 characters,
# a window at most a few hours (Update Manager's longest is 3 h 55 min), a pre event comes
# about 40 minutes ahead (DOMAIN.md sections 1 and 2).
MAX_SUBSCRIPTIONS = 1000  # Resource Graph takes at most 1000 subscriptions per query
MAX_WINDOW = timedelta(hours=24)
# The event as a work message carries it (`to_dict`, as JSON): that message, base64 as the host
# decodes it, must fit in a queue message (48 KiB of JSON) with room for up to 64 lanes.
MAX_EVENT_JSON = 44 * 1024

_TYPES = {EventKind.PRE: PRE_EVENT_TYPE, EventKind.POST: POST_EVENT_TYPE}
_KINDS = {event_type.lower(): kind for kind, event_type in _TYPES.items()}

# Keyed by the status lower-cased with all but letters removed ("In Progress").
# "Completed" is the Maintenance API's "all updates successfully applied"; a partial
# result is a failure, since something the run should have installed is missing.
_STATUSES = {
    **dict.fromkeys(("succeeded", "success", "completed"), RunStatus.SUCCEEDED),
    **dict.fromkeys(
        ("failed", "failure", "partialfailure", "partiallyfailed")
        + ("partiallysucceeded", "timeout", "timedout"),
        RunStatus.FAILED,
    ),
    **dict.fromkeys(("canceled", "cancelled", "cancel"), RunStatus.CANCELLED),
    "inprogress": RunStatus.IN_PROGRESS,
}

_SHAPES = {
    "data.maintenanceConfigurationId": "/subscriptions/{guid}/resourceGroups/{rg}"
    "/providers/Microsoft.Maintenance/maintenanceConfigurations/{name}",
    "data.correlationId": "{maintenanceConfigurationId}"
    "/providers/Microsoft.Maintenance/applyUpdates/{yyyyMMddHHmmss}",
}
_ENVELOPE_KEYS = {  # type, topic, time
    "eventgrid": ("eventType", "topic", "eventTime"),
    "cloudevents": ("type", "source", "time"),
}
_GUID_RE = re.compile(GUID, re.ASCII)


@dataclass(frozen=True)
class MaintenanceEvent:
    """One validated pre or post maintenance event; all times are aware UTC."""

    event_id: str
    kind: EventKind
    event_type: str
    schema: str
    topic: str | None
    subject: str | None
    event_time: datetime | None
    correlation_id: str
    maintenance_configuration_id: str
    start: datetime
    end: datetime
    cancellation_cutoff: datetime | None
    subscription_ids: tuple[str, ...]
    status: str | None

    @property
    def run_status(self) -> RunStatus | None:
        """The post event's status, normalized; None for a pre event."""
        if self.kind is EventKind.PRE:
            return None
        return normalize_run_status(self.status)

    @property
    def configuration_name(self) -> str:
        return self.maintenance_configuration_id.rsplit("/", 1)[-1]

    @property
    def run_name(self) -> str:
        """The run's timestamp segment, ``yyyyMMddHHmmss``."""
        return self.correlation_id.rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        """This event as an Event Grid-schema dict that `parse_event` reads back."""
        data: dict[str, Any] = {
            "correlationId": self.correlation_id,
            "maintenanceConfigurationId": self.maintenance_configuration_id,
            "startDateTime": format_time(self.start),
            "endDateTime": format_time(self.end),
        }
        if self.cancellation_cutoff is not None:
            data["cancellationCutOffDateTime"] = format_time(self.cancellation_cutoff)
        data["resourceSubscriptionIds"] = list(self.subscription_ids)
        if self.kind is EventKind.POST and self.status is not None:
            data["status"] = self.status
        event_time = None if self.event_time is None else format_time(self.event_time)
        return {
            "id": self.event_id,
            "topic": self.topic,
            "subject": self.subject,
            "eventType": self.event_type,
            "eventTime": event_time,
            "dataVersion": "1.0",
            "data": data,
        }


def normalize_run_status(status: str | None) -> RunStatus:
    """Map a raw status ("Succeeded", "Canceled", "PartialFailure"...) to RunStatus."""
    key = re.sub(r"[^a-z]", "", (status or "").lower())
    return _STATUSES.get(key, RunStatus.UNKNOWN)


def parse_event(raw: Mapping[str, Any]) -> MaintenanceEvent:
    """Validate one event: Event Grid or CloudEvents 1.0 schema, keys in any casing.

    Raises UnsupportedEventTypeError for another event type, else InvalidEventError; nothing else,
    whatever `raw` holds.
    """
    with reading("event"):
        return _parse(raw)


def _parse(raw: Mapping[str, Any]) -> MaintenanceEvent:
    if not isinstance(raw, Mapping):
        raise InvalidEventError("event", f"must be an object, got {type(raw).__name__}")
    envelope = Fields(raw, "")
    schema = "cloudevents" if envelope.has("specversion") else "eventgrid"
    type_key, topic_key, time_key = _ENVELOPE_KEYS[schema]
    if schema == "cloudevents" and envelope.text("specversion") != "1.0":
        raise InvalidEventError("specversion", "only CloudEvents 1.0 is supported")

    # The type decides first: another type's data has its own shape, not ours to judge.
    event_type = envelope.text(type_key)
    kind = _KINDS.get(event_type.lower())
    if kind is None:
        raise UnsupportedEventTypeError(event_type)
    envelope.check_bounds(skip="data")

    data = Fields(data_object(envelope.get("data")), "data.")
    data.check_bounds()
    config_id = data.text("maintenanceConfigurationId")
    _match_id(CONFIGURATION_ID_RE, config_id, "data.maintenanceConfigurationId")
    correlation_id = data.text("correlationId")
    run = _match_id(RUN_ID_RE, correlation_id, "data.correlationId")
    if run["config"].lower() != config_id.lower():
        problem = "does not lie under data.maintenanceConfigurationId"
        raise InvalidEventError("data.correlationId", problem)
    # For the system topic of a maintenance configuration the topic is the configuration's id: an
    # event from elsewhere that claims to be about this configuration is spoofed or misrouted.
    topic = envelope.optional_text(topic_key)
    if topic is not None and not (topic.isascii() and topic.removesuffix("/").lower() == config_id.lower()):
        problem = f"{quote(topic)} does not name data.maintenanceConfigurationId {config_id}"
        raise InvalidEventError(topic_key, problem)

    start, end = data.time("startDateTime"), data.time("endDateTime")
    if end <= start:
        raise InvalidEventError("data.endDateTime", "must be after data.startDateTime")
    if end - start > MAX_WINDOW:
        hours = int(MAX_WINDOW.total_seconds() // 3600)
        problem = f"makes a window of {end - start} from data.startDateTime: longer than {hours} hours"
        raise InvalidEventError("data.endDateTime", problem)
    # Without a cutoff the pre handler cannot tell whether a cancel is still honoured.
    cutoff_key = "cancellationCutOffDateTime"
    pre = kind is EventKind.PRE
    cutoff = data.time(cutoff_key) if pre else data.optional_time(cutoff_key)
    # A post event's cutoff is only kept, never used: refusing the post would leave started VMs running.
    if pre and cutoff is not None and cutoff > start:
        problem = f"{format_time(cutoff)} is after data.startDateTime {format_time(start)}"
        raise InvalidEventError("data.cancellationCutOffDateTime", problem)

    event = MaintenanceEvent(
        event_id=envelope.text("id"),
        kind=kind,
        event_type=_TYPES[kind],
        schema=schema,
        topic=topic,
        subject=envelope.optional_text("subject"),
        event_time=envelope.optional_time(time_key),
        correlation_id=correlation_id,
        maintenance_configuration_id=config_id,
        start=start,
        end=end,
        cancellation_cutoff=cutoff,
        subscription_ids=_subscription_ids(data.required("resourceSubscriptionIds")),
        status=None if pre else data.optional_text("status", empty=""),
    )
    _check_work_size(event)
    return event


def parse_function_event(
    event: func.EventGridEvent | func.CloudEvent,
) -> MaintenanceEvent:
    """Parse what an Event Grid trigger hands the function.

    Whatever the annotation, the worker builds a func.CloudEvent when the subscription
    delivers the CloudEvents schema, so both are accepted.
    """
    raw: dict[str, Any]
    with reading("event"):
        if isinstance(event, func.CloudEvent):
            names = ("specversion", "id", "source", "type", "time", "subject")
            raw = {name: getattr(event, name) for name in names}
        else:
            raw = {
                "id": event.id,
                "topic": event.topic,
                "subject": event.subject,
                "eventType": event.event_type,
                "eventTime": event.event_time,
                "dataVersion": event.data_version,
            }
    with reading("data"):
        raw["data"] = event.get_json()
    return parse_event(raw)


def _check_work_size(event: MaintenanceEvent) -> None:
    """Refuse an event whose work message could not be queued, naming its largest part.

    Each field is within its own bound, but a thousand subscriptions and long strings (JSON
    escapes an emoji as 12 bytes) together would make the queue refuse the message.
    """
    size = len(json.dumps(event.to_dict()))
    if size <= MAX_EVENT_JSON:
        return
    parts = {
        "id": event.event_id, "subject": event.subject, "topic": event.topic, "data.status": event.status,
        "data.resourceSubscriptionIds": list(event.subscription_ids),
    }
    field = max(parts, key=lambda name: len(json.dumps(parts[name])))
    problem = f"makes the event {size} bytes as JSON; at most {MAX_EVENT_JSON} fit in a work queue message"
    raise InvalidEventError(field, problem)


def _match_id(pattern: re.Pattern[str], value: str, field: str) -> re.Match[str]:
    match = pattern.fullmatch(value)
    if match is None:
        raise InvalidEventError(field, f"does not have the shape {_SHAPES[field]}")
    if len(match["rg"]) > MAX_RESOURCE_GROUP or len(match["name"]) > MAX_NAME:
        problem = f"resource group over {MAX_RESOURCE_GROUP} or name over {MAX_NAME} characters"
        raise InvalidEventError(field, problem)
    return match


def _subscription_ids(value: Any) -> tuple[str, ...]:
    field = "data.resourceSubscriptionIds"
    if not isinstance(value, list | tuple):
        raise InvalidEventError(field, f"must be an array, got {type(value).__name__}")
    if not value:
        raise InvalidEventError(field, "is empty")
    if len(value) > MAX_SUBSCRIPTIONS:
        problem = f"has {len(value)} entries; at most {MAX_SUBSCRIPTIONS} (what Resource Graph takes in one query)"
        raise InvalidEventError(field, problem)
    ids: dict[str, None] = {}  # an ordered set
    for index, item in enumerate(value):
        if not isinstance(item, str) or not _GUID_RE.fullmatch(item):
            raise InvalidEventError(f"{field}[{index}]", f"is not a GUID: {quote(item)}")
        ids[item.lower()] = None
    return tuple(ids)


