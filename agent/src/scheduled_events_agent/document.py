"""The Scheduled Events document, parsed once into frozen objects.

Shape (api-version 2020-07-01): ``{"DocumentIncarnation": int, "Events": [{"EventId",
"EventType", "ResourceType", "Resources", "EventStatus", "NotBefore", "Description",
"EventSource", "DurationInSeconds"}]}``. `NotBefore` is RFC 1123 and empty once started.
The endpoint always sends `Events` (an empty list when nothing is scheduled): a document without
it is malformed, not "every event is over".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any


class MalformedDocumentError(ValueError):
    """The endpoint answered something that is not a Scheduled Events document."""


@dataclass(frozen=True)
class ScheduledEvent:
    event_id: str
    event_type: str
    status: str
    resource_type: str = ""
    resources: tuple[str, ...] = ()
    # False when `Resources` was null or missing: the event names no VM at all.
    resources_listed: bool = True
    not_before: str = ""
    description: str = ""
    source: str = ""
    duration_seconds: int = -1
    # The event as the endpoint sent it: what hooks read on stdin and what is forwarded.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def not_before_time(self) -> datetime | None:
        return parse_not_before(self.not_before)

    @property
    def started(self) -> bool:
        return self.status.lower() == "started"

    def to_json(self) -> str:
        return json.dumps(dict(self.raw), sort_keys=True)

    def differs_from(self, other: ScheduledEvent) -> bool:
        """True when anything an operator cares about changed (reschedules, resource lists)."""
        return (self.status, self.resources, self.not_before, self.description, self.duration_seconds) != (
            other.status, other.resources, other.not_before, other.description, other.duration_seconds)


@dataclass(frozen=True)
class Document:
    incarnation: int
    events: tuple[ScheduledEvent, ...]

    def by_id(self) -> dict[str, ScheduledEvent]:
        return {event.event_id: event for event in self.events}


def parse_document(body: bytes | str) -> Document:
    """Parse the endpoint's JSON; raises MalformedDocumentError naming what is wrong."""
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedDocumentError(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MalformedDocumentError("not a JSON object")
    incarnation = raw.get("DocumentIncarnation")
    if isinstance(incarnation, bool) or not isinstance(incarnation, int):
        raise MalformedDocumentError(f"DocumentIncarnation must be an integer, got {incarnation!r}")
    if "Events" not in raw:
        raise MalformedDocumentError("Events is missing")
    events_raw = raw["Events"]
    if not isinstance(events_raw, list):
        raise MalformedDocumentError("Events must be a list")
    events = tuple(parse_event(item, index) for index, item in enumerate(events_raw))
    ids = [event.event_id for event in events]
    if len(set(ids)) != len(ids):
        raise MalformedDocumentError("Events lists the same EventId twice")
    return Document(incarnation=incarnation, events=events)


def parse_event(raw: Any, index: int = 0) -> ScheduledEvent:
    where = f"Events[{index}]"
    if not isinstance(raw, dict):
        raise MalformedDocumentError(f"{where} is not an object")

    def text(name: str, *, required: bool = False) -> str:
        value = raw.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise MalformedDocumentError(f"{where}.{name} must be a string")
        if required and not value.strip():
            raise MalformedDocumentError(f"{where}.{name} is missing")
        return value

    listed = raw.get("Resources") is not None
    resources = raw.get("Resources") or []
    if not isinstance(resources, list) or not all(isinstance(item, str) for item in resources):
        raise MalformedDocumentError(f"{where}.Resources must be a list of strings")
    duration = raw.get("DurationInSeconds", -1)
    if duration is None:
        duration = -1
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise MalformedDocumentError(f"{where}.DurationInSeconds must be an integer")
    return ScheduledEvent(
        event_id=text("EventId", required=True),
        event_type=text("EventType", required=True),
        status=text("EventStatus", required=True),
        resource_type=text("ResourceType"),
        resources=tuple(resources),
        resources_listed=listed,
        not_before=text("NotBefore"),
        description=text("Description"),
        source=text("EventSource"),
        duration_seconds=duration,
        raw=dict(raw),
    )


def parse_not_before(value: str) -> datetime | None:
    """`NotBefore` as an aware UTC datetime: RFC 1123 (what the endpoint sends) or ISO 8601.

    None when empty (the event started) or unreadable.
    """
    return parse_rfc1123(value) or parse_iso8601(value)


def parse_rfc1123(value: str) -> datetime | None:
    """`Mon, 19 Sep 2016 18:29:47 GMT` → aware UTC datetime; None when empty or unreadable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


# Python 3.10's fromisoformat takes neither "Z" nor fractions other than 3 or 6 digits (.NET sends 7).
_ISO_FRACTION = re.compile(r"\.(\d+)")


def parse_iso8601(value: str) -> datetime | None:
    """`2026-04-11T22:26:58Z` (fraction and offset optional; no offset means UTC); None otherwise."""
    text = value.strip()
    if len(text) < 10 or not text[:4].isdigit():
        return None
    text = _ISO_FRACTION.sub(lambda match: "." + match.group(1)[:6].ljust(6, "0"), text, count=1)
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)
