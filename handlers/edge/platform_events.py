"""Platform maintenance seen from inside the VMs: Scheduled Events forwarded by the agent.

The in-VM agent (`agent/`) publishes every change of a Scheduled Event (new, started,
approved, hooks succeeded/failed, vanished) as a CloudEvent to an Event Grid topic; the
`scheduled_event` function records each in the ledger table, one row per VM and event:

- partition ``platform-<yyyy-mm>`` (month of the event's first sighting), so "which VMs had
  platform maintenance this week" is a scan of one or two partitions;
- row key ``<vm name>_<event id>``; times only ever move earlier (a redelivered or late change
  cannot rewrite history), and `DurationSeconds` is vanished − started (else − first seen).

Event Grid delivers at least once and in no particular order, so every write is a merge of
what the row holds with the change, written with an ETag condition and retried on a race.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from handlers.core.bounds import truncate_utf16
from handlers.core.clock import system_utcnow
from handlers.core.logs import LOGGER_NAME
from handlers.runtime import Runtime

TYPE_PREFIX = "Azure.ScheduledEvents."
PARTITION_PREFIX = "platform-"
CHANGES = ("new", "updated", "started", "vanished", "hook-succeeded", "hook-failed", "approved",
           "end-hook-succeeded", "end-hook-failed")
_FAILED_HOOKS = ("hook-failed", "end-hook-failed")
_FORBIDDEN_KEY_CHARACTERS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
_WRITE_ATTEMPTS = 8

log = logging.getLogger(f"{LOGGER_NAME}.platform")


class InvalidPlatformEventError(ValueError):
    """A forwarded event we can never record; `field` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"invalid forwarded scheduled event: {field}: {problem}")


@dataclass(frozen=True)
class PlatformChange:
    """One forwarded change, parsed."""

    vm_name: str
    event_id: str
    change: str
    observed_at: datetime
    first_seen_at: datetime
    event_type: str = ""
    event_status: str = ""
    event_source: str = ""
    resources: tuple[str, ...] = ()
    not_before: str = ""
    description: str = ""
    resource_id: str = ""
    document_incarnation: int | None = None
    hook_failures: tuple[str, ...] = ()

    @property
    def partition(self) -> str:
        return platform_partition(self.first_seen_at)

    @property
    def row_key(self) -> str:
        return platform_row_key(self.vm_name, self.event_id)


def platform_partition(first_seen_at: datetime) -> str:
    return f"{PARTITION_PREFIX}{first_seen_at.astimezone(UTC):%Y-%m}"


def platform_row_key(vm_name: str, event_id: str) -> str:
    """`<vm>_<event id>`, lower-cased (both are case-insensitive), without what Table keys forbid."""
    return _FORBIDDEN_KEY_CHARACTERS.sub("-", f"{vm_name}_{event_id}".lower())[:512]


def record_platform_event(runtime: Runtime, event: func.EventGridEvent | func.CloudEvent) -> None:
    """Record one forwarded change in the ledger; a malformed event is logged and dropped."""
    try:
        change = parse_platform_event(event)
    except InvalidPlatformEventError as exc:
        vm_name, event_id = _identity_for_log(event)
        log.error("[%s/%s] forwarded scheduled event %s refused: %s", vm_name, event_id, event.id, exc,
                  extra={"vm_name": vm_name, "event_id": event_id})
        return
    row = record_change(runtime.clients.ledger_table(), change)
    extra = {"vm_name": change.vm_name, "event_id": change.event_id}
    prefix = f"[{change.vm_name}/{change.event_id}] {row.get('EventType') or 'scheduled event'}"
    if change.change in _FAILED_HOOKS:
        what = "end hooks" if change.change == "end-hook-failed" else "hooks"
        log.warning("%s: %s failed on the VM: %s", prefix, what, "; ".join(change.hook_failures) or "?", extra=extra)
    elif change.change == "vanished" and row.get("DurationSeconds") is not None:
        log.info("%s: over after %s s of maintenance", prefix, row["DurationSeconds"], extra=extra)
    else:
        log.info("%s: %s (status %s)", prefix, change.change, change.event_status or "-", extra=extra)


def parse_platform_event(event: func.EventGridEvent | func.CloudEvent) -> PlatformChange:
    """Parse either delivery schema; raises InvalidPlatformEventError naming the field."""
    event_type = event.type if isinstance(event, func.CloudEvent) else event.event_type
    if not str(event_type or "").startswith(TYPE_PREFIX):
        raise InvalidPlatformEventError("type", f"{event_type!r} is not an {TYPE_PREFIX}* event")
    data = _json_object(event.get_json())
    change = data.get("change")
    if change not in CHANGES:
        raise InvalidPlatformEventError("data.change", f"must be one of {', '.join(CHANGES)}, got {change!r}")
    vm_name = _text(data, "vmName", required=True)
    scheduled = data.get("event")
    if not isinstance(scheduled, Mapping):
        raise InvalidPlatformEventError("data.event", "must be the Scheduled Event object")
    event_id = _text(data, "eventId") or _text(scheduled, "EventId") or str(event.subject or "")
    if not event_id.strip():
        raise InvalidPlatformEventError("data.eventId", "missing")
    observed_at = _time(data.get("observedAt"), "data.observedAt")
    first_seen = _time(data["firstSeenAt"], "data.firstSeenAt") if data.get("firstSeenAt") else observed_at
    resources = scheduled.get("Resources") or []
    if not isinstance(resources, list) or not all(isinstance(item, str) for item in resources):
        raise InvalidPlatformEventError("data.event.Resources", "must be a list of VM names")
    incarnation = data.get("documentIncarnation")
    return PlatformChange(
        vm_name=vm_name.strip(),
        event_id=event_id.strip(),
        change=change,
        observed_at=observed_at,
        first_seen_at=min(first_seen, observed_at),
        event_type=_text(scheduled, "EventType"),
        event_status=_text(scheduled, "EventStatus"),
        event_source=_text(scheduled, "EventSource"),
        resources=tuple(resources),
        not_before=_text(scheduled, "NotBefore"),
        description=_text(scheduled, "Description"),
        resource_id=_text(data, "resourceId"),
        document_incarnation=incarnation if isinstance(incarnation, int) and not isinstance(incarnation, bool)
        else None,
        hook_failures=_hook_failures(data.get("hookResults")) if change in _FAILED_HOOKS else (),
    )


def record_change(table: TableClient, change: PlatformChange) -> dict[str, Any]:
    """Merge the change into its row (ETag-conditional, retried on a race); returns the row."""
    for _ in range(_WRITE_ATTEMPTS):
        try:
            existing = table.get_entity(change.partition, change.row_key)
        except ResourceNotFoundError:
            existing = None
        row = merge_row(existing, change)
        try:
            if existing is None:
                table.create_entity(row)
            else:
                table.update_entity(row, mode=UpdateMode.MERGE, etag=existing.metadata["etag"],
                                    match_condition=MatchConditions.IfNotModified)
            return row
        except (ResourceExistsError, ResourceModifiedError):
            continue  # another delivery for the same event wrote first: merge with what it wrote
    raise RuntimeError(f"row {change.partition}/{change.row_key} kept changing under us; Event Grid will retry")


def merge_row(existing: Mapping[str, Any] | None, change: PlatformChange) -> dict[str, Any]:
    """The row after `change`: earliest times win, descriptive fields follow the newest change."""
    old: Mapping[str, Any] = existing or {}
    row: dict[str, Any] = {"PartitionKey": change.partition, "RowKey": change.row_key,
                           "VmName": old.get("VmName") or change.vm_name, "EventId": change.event_id}
    row["FirstSeenAt"] = _earliest(old.get("FirstSeenAt"), change.first_seen_at)
    # A vanished change carries the event as last seen (often "Started"): not a start sighting.
    if change.change == "started" or (change.change != "vanished" and change.event_status.lower() == "started"):
        row["StartedAt"] = _earliest(old.get("StartedAt"), change.observed_at)
    if change.change == "approved":
        row["ApprovedAt"] = _earliest(old.get("ApprovedAt"), change.observed_at)
    if change.change == "vanished":
        row["VanishedAt"] = _earliest(old.get("VanishedAt"), change.observed_at)
    last_at = old.get("LastChangeAt")
    newest = last_at is None or change.observed_at >= last_at
    if newest:
        row.update(LastChange=change.change, LastChangeAt=change.observed_at)
    described = {
        "EventType": change.event_type, "EventSource": change.event_source, "Resources": ",".join(change.resources),
        "NotBefore": change.not_before, "Description": truncate_utf16(change.description),
        "ResourceId": change.resource_id,
        # A vanished event's JSON is its last sighting, not news about its status.
        "EventStatus": "" if change.change == "vanished" else change.event_status,
    }
    for column, value in described.items():
        # The newest change describes the event; an older one only fills what is still unknown.
        if value and (newest or not old.get(column)):
            row[column] = value
    if change.change in ("hook-succeeded", "hook-failed"):
        row["HookOutcome"] = "failed" if change.change == "hook-failed" else "succeeded"
        row["HookFailures"] = truncate_utf16("; ".join(change.hook_failures))
    if change.change in ("end-hook-succeeded", "end-hook-failed"):  # run when the event ended (agent)
        row["EndHookOutcome"] = "failed" if change.change == "end-hook-failed" else "succeeded"
        row["EndHookFailures"] = truncate_utf16("; ".join(change.hook_failures))
    if change.document_incarnation is not None:
        row["DocumentIncarnation"] = max(int(old.get("DocumentIncarnation") or 0), change.document_incarnation)
    vanished = row.get("VanishedAt") or old.get("VanishedAt")
    if vanished is not None:
        since = row.get("StartedAt") or old.get("StartedAt") or row["FirstSeenAt"]
        row["DurationSeconds"] = max(0, round((vanished - since).total_seconds()))
    return row


def list_platform_events(table: TableClient, since: datetime, until: datetime | None = None) -> list[dict[str, Any]]:
    """Rows of events first seen in [since, until), oldest first: one query per month partition."""
    until = until or system_utcnow()
    rows: list[dict[str, Any]] = []
    year, month = since.astimezone(UTC).year, since.astimezone(UTC).month
    last = (until.astimezone(UTC).year, until.astimezone(UTC).month)
    while (year, month) <= last:
        query = "PartitionKey eq @pk and FirstSeenAt ge @since and FirstSeenAt lt @until"
        parameters = {"pk": f"{PARTITION_PREFIX}{year:04d}-{month:02d}", "since": since, "until": until}
        rows.extend(dict(row) for row in table.query_entities(query, parameters=parameters))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return sorted(rows, key=lambda row: row["FirstSeenAt"])


def _json_object(data: Any) -> Mapping[str, Any]:
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise InvalidPlatformEventError("data", f"is not JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise InvalidPlatformEventError("data", "must be a JSON object")
    return data


def _text(obj: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise InvalidPlatformEventError(f"data.{key}", "missing")
        return ""
    if not isinstance(value, str):
        raise InvalidPlatformEventError(f"data.{key}", f"must be a string, got {type(value).__name__}")
    return value


def _time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidPlatformEventError(field, f"must be an ISO 8601 date-time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidPlatformEventError(field, f"is not an ISO 8601 date-time: {value!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _hook_failures(results: Any) -> tuple[str, ...]:
    if not isinstance(results, list):
        return ()
    failures = []
    for result in results:
        if isinstance(result, Mapping) and result.get("status") not in ("succeeded", "skipped"):
            code = result.get("exitCode")
            failures.append(f"{result.get('name', '?')}: {result.get('status', '?')}"
                            + (f" (exit {code})" if code is not None else ""))
    return tuple(failures)


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current


def _identity_for_log(event: func.EventGridEvent | func.CloudEvent) -> tuple[str, str]:
    """VM name and event id for a refused event's log line, as far as they can be read."""
    try:
        data = event.get_json()
    except ValueError:
        data = None
    data = data if isinstance(data, Mapping) else {}
    vm_name = data.get("vmName") if isinstance(data.get("vmName"), str) else "?"
    event_id = data.get("eventId") if isinstance(data.get("eventId"), str) else (event.subject or "?")
    return str(vm_name), str(event_id)
