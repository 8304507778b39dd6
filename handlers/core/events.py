"""Pre/post maintenance events, parsed once at the edge into frozen typed objects.

Both delivery schemas (Event Grid, CloudEvents 1.0) are accepted with keys in any
casing: Microsoft's docs publish both ``correlationId`` and ``CorrelationId``. The
correlation id is later sent to ARM as a URL path, so it is validated strictly here.

Parsing is total: for any input it returns an event or raises InvalidEventError (naming the
field) or UnsupportedEventTypeError, never anything else, and it bounds what it accepts (sizes,
nesting, the window's shape) so that every accepted event fits in the ledger and the work queue.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import reprlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import azure.functions as func

from handlers.core.bounds import (
    MAX_JSON_DEPTH,
    QUEUE_MESSAGE_BYTES,
    has_lone_surrogate,
    json_depth,
    object_depth,
    utf8_size,
)
from handlers.core.errors import InvalidEventError, UnsupportedEventTypeError

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
MAX_EVENT_ID = 1024
MAX_TEXT = 2048  # any other string field of the envelope or of data
MAX_DATA_BYTES = 64 * 1024  # `data` as JSON (UTF-8)
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

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Dots only between other characters (no leading or trailing dot, no ".."), so no
# segment can be "." or "..". re.ASCII: nothing may need percent-encoding in a URL.
_RG = r"[-\w()]+(?:\.[-\w()]+)*"
_NAME = r"[-\w]+(?:\.[-\w]+)*"
_MAX_RG, _MAX_NAME = 90, 260
# Only the fixed segments are case-insensitive (provider casing varies).
_CONFIG_ID = (
    rf"/(?i:subscriptions)/(?P<subscription>{_GUID})/(?i:resourceGroups)/(?P<rg>{_RG})"
    rf"/(?i:providers/Microsoft\.Maintenance/maintenanceConfigurations)/(?P<name>{_NAME})"
)
_CONFIG_ID_RE = re.compile(_CONFIG_ID, re.ASCII)
_RUN_ID_RE = re.compile(
    rf"(?P<config>{_CONFIG_ID})"
    r"/(?i:providers/Microsoft\.Maintenance/applyUpdates)/(?P<run>[0-9]{14})",
    re.ASCII,
)
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
# The names errors use for the keys we know (the event's own casing varies).
_CANONICAL = {name.lower(): name for name in (
    "id", "topic", "subject", "eventType", "eventTime", "dataVersion", "metadataVersion", "specversion", "source",
    "type", "time", "data", "correlationId", "maintenanceConfigurationId", "startDateTime", "endDateTime",
    "cancellationCutOffDateTime", "resourceSubscriptionIds", "status",
)}
_LIMITS = {"id": MAX_EVENT_ID}
_GUID_RE = re.compile(_GUID, re.ASCII)
# How errors quote a value that was sent: it may be any size or nested any depth.
_QUOTE = reprlib.Repr()
_QUOTE.maxstring, _QUOTE.maxother = 300, 120
_QUOTE.maxlevel = 3
_TIME_RE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]"
    r"(?P<clock>[0-9]{2}:[0-9]{2}(?::[0-9]{2})?)(?:[.,](?P<fraction>[0-9]+))?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:?[0-9]{2})?",
    re.ASCII,
)


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
            "startDateTime": _format_time(self.start),
            "endDateTime": _format_time(self.end),
        }
        if self.cancellation_cutoff is not None:
            data["cancellationCutOffDateTime"] = _format_time(self.cancellation_cutoff)
        data["resourceSubscriptionIds"] = list(self.subscription_ids)
        if self.kind is EventKind.POST and self.status is not None:
            data["status"] = self.status
        event_time = None if self.event_time is None else _format_time(self.event_time)
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
    with _reading("event"):
        return _parse(raw)


def _parse(raw: Mapping[str, Any]) -> MaintenanceEvent:
    if not isinstance(raw, Mapping):
        raise InvalidEventError("event", f"must be an object, got {type(raw).__name__}")
    envelope = _Fields(raw, "")
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

    data = _Fields(_data_object(envelope.get("data")), "data.")
    data.check_bounds()
    config_id = data.text("maintenanceConfigurationId")
    _match_id(_CONFIG_ID_RE, config_id, "data.maintenanceConfigurationId")
    correlation_id = data.text("correlationId")
    run = _match_id(_RUN_ID_RE, correlation_id, "data.correlationId")
    if run["config"].lower() != config_id.lower():
        problem = "does not lie under data.maintenanceConfigurationId"
        raise InvalidEventError("data.correlationId", problem)
    # For the system topic of a maintenance configuration the topic is the configuration's id: an
    # event from elsewhere that claims to be about this configuration is spoofed or misrouted.
    topic = envelope.optional_text(topic_key)
    if topic is not None and not (topic.isascii() and topic.removesuffix("/").lower() == config_id.lower()):
        problem = f"{_quote(topic)} does not name data.maintenanceConfigurationId {config_id}"
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
        problem = f"{_format_time(cutoff)} is after data.startDateTime {_format_time(start)}"
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
    with _reading("event"):
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
    with _reading("data"):
        raw["data"] = event.get_json()
    return parse_event(raw)


def load_json(text: str, field: str) -> Any:
    """JSON text from outside, parsed; InvalidEventError naming `field` when it is not JSON or is
    nested deeper than MAX_JSON_DEPTH (the decoder recurses once per level: a deep body would
    raise RecursionError, not a refusal)."""
    if json_depth(text) > MAX_JSON_DEPTH:
        raise InvalidEventError(field, f"is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidEventError(field, f"is not valid JSON ({exc})") from None


def decode_queue_message(body: bytes | str) -> list[dict[str, Any]]:
    """The events in a Storage queue message that Event Grid delivered.

    One JSON object or an array of them, as text or as base64 of that text: Event Grid
    encodes it, and the Functions host may or may not have decoded it already. Raises
    InvalidEventError (field ``message`` or ``message[i]``) and nothing else.
    """
    with _reading("message"):
        return _decode(body)


def _decode(body: bytes | str) -> list[dict[str, Any]]:
    if isinstance(body, bytes | bytearray | memoryview):
        body = bytes(body)
        _check_body_size(len(body))
        try:
            body = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidEventError("message", "is not UTF-8 text") from None
    if not isinstance(body, str):
        problem = f"must be bytes or str, got {type(body).__name__}"
        raise InvalidEventError("message", problem)
    _check_body_size(utf8_size(body))
    text = body.lstrip("\ufeff").strip()
    if not text:
        raise InvalidEventError("message", "is empty")
    if not text.startswith(("{", "[")):
        text = _from_base64(text)
    payload = load_json(text, "message")
    events = [payload] if isinstance(payload, dict) else payload
    if not isinstance(events, list):
        raise InvalidEventError("message", "is JSON but neither an object nor an array")
    for index, item in enumerate(events):
        if not isinstance(item, dict):
            problem = f"must be a JSON object, got {type(item).__name__}"
            raise InvalidEventError(f"message[{index}]", problem)
    return events


@contextmanager
def _reading(field: str) -> Iterator[None]:
    """Turn any other failure while reading `field` into InvalidEventError naming it.

    Parsing does no I/O, so whatever fails in it (RecursionError on a deep value, a TypeError
    or OverflowError on an odd one) is about the input, and retrying cannot help: refuse it.
    """
    try:
        yield
    except (InvalidEventError, UnsupportedEventTypeError):
        raise
    except Exception as exc:
        raise InvalidEventError(field, f"cannot be read ({type(exc).__name__}: {_quote(str(exc))})") from exc


class _Fields:
    """An object with its keys folded to lower case; errors name `prefix` + key."""

    def __init__(self, obj: Mapping[str, Any], prefix: str) -> None:
        self._prefix = prefix
        self._values: dict[str, Any] = {}
        self._keys: dict[str, str] = {}  # as sent
        for key, value in obj.items():
            with _reading(prefix.rstrip(".") or "event"):
                name = str(key)
            lower = name.lower()
            with _reading(prefix + name):
                if lower in self._values and self._values[lower] != value:
                    problem = "given twice, in different casings, with different values"
                    raise InvalidEventError(prefix + name, problem)
            self._values[lower] = value
            self._keys.setdefault(lower, name)

    def check_bounds(self, *, skip: str = "") -> None:
        """Every string within its length, every other value within the nesting depth."""
        for lower, value in self._values.items():
            if lower == skip.lower():
                continue
            field = self._prefix + _CANONICAL.get(lower, self._keys[lower])
            if isinstance(value, str):
                limit = _LIMITS.get(lower, MAX_TEXT)
                if len(value) > limit:
                    raise InvalidEventError(field, f"is {len(value)} characters long; at most {limit}")
            elif object_depth(value) > MAX_JSON_DEPTH:
                raise InvalidEventError(field, f"is nested deeper than {MAX_JSON_DEPTH} levels")

    def has(self, key: str) -> bool:
        return key.lower() in self._values

    def get(self, key: str) -> Any:
        return self._values.get(key.lower())

    def required(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise InvalidEventError(self._prefix + key, "is missing")
        return value

    def text(self, key: str) -> str:
        with _reading(self._prefix + key):
            value = self._string(key, self.required(key))
            if not value.strip():
                raise InvalidEventError(self._prefix + key, "is empty")
            return value

    def optional_text(self, key: str, *, empty: str | None = None) -> str | None:
        """The string as sent; None when absent; `empty` for the empty string."""
        with _reading(self._prefix + key):
            value = self.get(key)
            return None if value is None else self._string(key, value) or empty

    def time(self, key: str) -> datetime:
        with _reading(self._prefix + key):
            return _parse_time(self.required(key), self._prefix + key)

    def optional_time(self, key: str) -> datetime | None:
        value = self.get(key)
        return None if value in (None, "") else self.time(key)

    def _string(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            problem = f"must be a string, got {type(value).__name__}"
            raise InvalidEventError(self._prefix + key, problem)
        # JSON's "\ud800" escapes can make them; no ledger row or log line could carry one.
        if has_lone_surrogate(value):
            raise InvalidEventError(self._prefix + key, "is not valid Unicode (it holds a lone UTF-16 surrogate)")
        return value


def _from_base64(text: str) -> str:
    """The JSON text inside base64 (either alphabet; line breaks, padding optional)."""
    compact = re.sub(r"\s+", "", text).replace("-", "+").replace("_", "/")
    try:
        decoded = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        text = decoded.decode("utf-8-sig").strip()
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        text = ""
    if not text.startswith(("{", "[")):
        raise InvalidEventError("message", "is neither JSON nor base64-encoded JSON")
    return text


def _data_object(value: Any) -> Mapping[str, Any]:
    """`data` as an object, within MAX_DATA_BYTES as JSON and MAX_JSON_DEPTH levels."""
    with _reading("data"):
        if value is None:
            raise InvalidEventError("data", "is missing")
        if isinstance(value, bytes | bytearray):
            try:
                value = bytes(value).decode("utf-8-sig")
            except UnicodeDecodeError:
                raise InvalidEventError("data", "is bytes that are not UTF-8 text") from None
        if isinstance(value, str):
            _check_data_size(utf8_size(value))
            value = load_json(value, "data")
        if not isinstance(value, Mapping):
            problem = f"must be an object, got {type(value).__name__}"
            raise InvalidEventError("data", problem)
        # Depth first: the encoder that measures the size recurses once per level.
        if object_depth(value) > MAX_JSON_DEPTH:
            raise InvalidEventError("data", f"is nested deeper than {MAX_JSON_DEPTH} levels")
        _check_data_size(utf8_size(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)))
        return value


def _check_data_size(size: int) -> None:
    if size > MAX_DATA_BYTES:
        raise InvalidEventError("data", f"is {size} bytes as JSON; at most {MAX_DATA_BYTES} (64 KiB)")


def _check_body_size(size: int) -> None:
    if size > QUEUE_MESSAGE_BYTES:
        problem = f"is {size} bytes; a Storage queue message holds at most {QUEUE_MESSAGE_BYTES} (64 KiB)"
        raise InvalidEventError("message", problem)


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


def _quote(value: Any) -> str:
    """`value` as errors quote it: short, whatever its size or nesting."""
    return _QUOTE.repr(value)


def _match_id(pattern: re.Pattern[str], value: str, field: str) -> re.Match[str]:
    match = pattern.fullmatch(value)
    if match is None:
        raise InvalidEventError(field, f"does not have the shape {_SHAPES[field]}")
    if len(match["rg"]) > _MAX_RG or len(match["name"]) > _MAX_NAME:
        problem = f"resource group over {_MAX_RG} or name over {_MAX_NAME} characters"
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
            raise InvalidEventError(f"{field}[{index}]", f"is not a GUID: {_quote(item)}")
        ids[item.lower()] = None
    return tuple(ids)


def _parse_time(value: Any, field: str) -> datetime:
    """ISO 8601 with any number of fraction digits (Azure sends 7); no offset is UTC."""
    if isinstance(value, datetime):
        parsed = value
    else:
        match = _TIME_RE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise InvalidEventError(field, f"is not an ISO 8601 date-time: {_quote(value)}")
        fraction = f".{match['fraction'][:6]:0<6}" if match["fraction"] else ""
        offset = match["offset"]
        offset = "+00:00" if offset in (None, "Z", "z") else offset
        try:
            parsed = datetime.fromisoformat(
                f"{match['date']}T{match['clock']}{fraction}{offset}"
            )
        except ValueError as exc:
            problem = f"is not a valid date-time: {_quote(value)} ({exc})"
            raise InvalidEventError(field, problem) from None
    try:
        return parsed.replace(tzinfo=parsed.tzinfo or UTC).astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC equivalent
        raise InvalidEventError(field, f"is out of range: {_quote(value)}") from None


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
