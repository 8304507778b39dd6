"""Turning successive Scheduled Events documents into changes: new, updated, started, vanished.

The endpoint bumps `DocumentIncarnation` on every change; the agent diffs every document it
reads against what it remembers, which also catches what happened while it was not running
(an event that vanished during a restart is reported as vanished on the first poll). Which
documents get here at all (not malformed, incarnation not going back) is the agent's call.

An event id is one event for as long as the state file remembers it: one that vanishes and
comes back is the same event again, so its hooks never run a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from .document import Document, parse_event
from .hooks import HookResult
from .state import END_PENDING, AgentState, EventRecord

log = logging.getLogger("scheduled_events_agent")


class ChangeKind(str, Enum):
    NEW = "new"
    UPDATED = "updated"  # rescheduled, resources or description changed
    STARTED = "started"
    VANISHED = "vanished"  # the event is over (or was cancelled)
    HOOK_SUCCEEDED = "hook-succeeded"  # every hook of the event succeeded
    HOOK_FAILED = "hook-failed"
    APPROVED = "approved"
    END_HOOK_SUCCEEDED = "end-hook-succeeded"  # every end hook of the vanished event succeeded
    END_HOOK_FAILED = "end-hook-failed"

    @property
    def cloud_event_type(self) -> str:
        return "Azure.ScheduledEvents." + "".join(part.capitalize() for part in self.value.split("-"))


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    event_id: str
    event: Mapping[str, Any]
    observed_at: datetime
    first_seen_at: str
    incarnation: int | None
    hook_results: tuple[HookResult, ...] | None = None


def observe(state: AgentState, document: Document, now: datetime) -> list[Change]:
    """Update `state` from `document`; return what changed, in a stable order."""
    changes: list[Change] = []
    seen = document.by_id()
    stamp = now.isoformat()
    for event in document.events:
        record = state.events.get(event.event_id)
        if record is None:
            record = EventRecord(event_id=event.event_id, event=dict(event.raw), first_seen_at=stamp,
                                 status=event.status, first_seen_status=event.status)
            if event.started:
                record.started_seen_at = stamp
            state.events[event.event_id] = record
            changes.append(record_change(ChangeKind.NEW, record, now, document.incarnation))
            continue
        previous = parse_event(record.event)
        record.event = dict(event.raw)
        record.status = event.status
        came_back = not record.active
        if came_back:
            log.warning("[%s] %s is back (DocumentIncarnation %d) after it vanished at %s: the same event, "
                        "its hooks are not run again", event.event_id, event.event_type, document.incarnation,
                        record.vanished_at)
            record.vanished_at = None
            if record.end_hooks == END_PENDING:
                record.end_hooks = ""  # not over after all
        if event.started and not previous.started:
            record.started_seen_at = record.started_seen_at or stamp
            changes.append(record_change(ChangeKind.STARTED, record, now, document.incarnation))
        elif came_back or event.differs_from(previous):
            changes.append(record_change(ChangeKind.UPDATED, record, now, document.incarnation))
    for record in state.events.values():
        if record.active and record.event_id not in seen:
            record.vanished_at = stamp
            if record.end_hooks == "":
                record.end_hooks = END_PENDING  # the agent decides whether any run
            changes.append(record_change(ChangeKind.VANISHED, record, now, document.incarnation))
    state.last_incarnation = document.incarnation
    return changes


def record_change(
    kind: ChangeKind, record: EventRecord, now: datetime, incarnation: int | None,
    hook_results: tuple[HookResult, ...] | None = None,
) -> Change:
    """A change of `record`, as forwarded: the event's last known JSON and its first sighting."""
    return Change(kind=kind, event_id=record.event_id, event=dict(record.event), observed_at=now,
                  first_seen_at=record.first_seen_at, incarnation=incarnation, hook_results=hook_results)
