"""Forwarding changes as CloudEvents, through a bounded backlog persisted in the state dir.

Every change is appended to the backlog file first, then sent oldest first; a batch leaves
the backlog only once Event Grid accepted it. So a network blip or an agent restart loses
nothing and keeps the order; only a backlog that reached its bound drops (oldest first, logged).
Delivery is at least once: the central side is idempotent.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError

from .atomic import read_json, write_json_atomically
from .backoff import Backoff, OutageLog
from .changes import Change
from .config import AgentConfig
from .publisher import Publisher, build_publisher, to_cloud_event

log = logging.getLogger("scheduled_events_agent.forwarder")
BACKLOG_FILE = "forward-backlog.json"
_MAX_BATCHES_PER_FLUSH = 20  # keeps one flush from holding up polling for long


def change_record(change: Change, *, vm_name: str, resource_id: str | None) -> dict[str, Any]:
    """The CloudEvent for a change, as a JSON-ready dict (what the backlog stores)."""
    data: dict[str, Any] = {
        "change": change.kind.value,
        "vmName": vm_name,
        "eventId": change.event_id,
        "event": dict(change.event),
        "observedAt": change.observed_at.isoformat(),
        "firstSeenAt": change.first_seen_at,
        "documentIncarnation": change.incarnation,
    }
    if resource_id:
        data["resourceId"] = resource_id
    if change.hook_results is not None:
        data["hookResults"] = [result.to_dict() for result in change.hook_results]
    return {
        "id": str(uuid.uuid4()),  # fixed now, so a redelivery after a retry carries the same id
        "type": change.kind.cloud_event_type,
        "source": resource_id or f"/vms/{vm_name}",
        "subject": change.event_id,
        "time": change.observed_at.isoformat(),
        "data": data,
    }


class Forwarder:
    """Backlog + delivery. With no publisher (forwarding not configured) changes are only logged."""

    def __init__(
        self,
        publisher: Publisher | None,
        *,
        backlog_path: Path,
        max_events: int = 1000,
        batch_max_events: int = 100,
        backoff: Backoff,
        monotonic: Callable[[], float],
    ) -> None:
        self._publisher = publisher
        self._path = backlog_path
        self._max = max_events
        self._batch = batch_max_events
        self._backoff = backoff
        self._outage = OutageLog("Event Grid topic", log, monotonic=monotonic)
        self._backlog: list[dict[str, Any]] = self._load() if publisher is not None else []

    @classmethod
    def from_config(
        cls, config: AgentConfig, *, monotonic: Callable[[], float], publisher: Publisher | None = None
    ) -> Forwarder:
        forwarding = config.forwarding
        if forwarding is None:
            return cls(None, backlog_path=config.state_dir / BACKLOG_FILE,
                       backoff=Backoff(1, 1, monotonic=monotonic), monotonic=monotonic)
        return cls(
            publisher or build_publisher(forwarding),
            backlog_path=config.state_dir / BACKLOG_FILE,
            max_events=forwarding.backlog_max_events,
            batch_max_events=forwarding.batch_max_events,
            backoff=Backoff(forwarding.retry_initial_seconds, forwarding.retry_max_seconds, monotonic=monotonic),
            monotonic=monotonic,
        )

    @property
    def enabled(self) -> bool:
        return self._publisher is not None

    @property
    def pending(self) -> list[dict[str, Any]]:
        return list(self._backlog)

    def enqueue(self, records: Iterable[dict[str, Any]]) -> None:
        """Append to the backlog and persist it, dropping the oldest beyond the bound."""
        if self._publisher is None:
            return
        added = list(records)
        if not added:
            return
        self._backlog.extend(added)
        overflow = len(self._backlog) - self._max
        if overflow > 0:
            for dropped in self._backlog[:overflow]:
                log.warning("forwarding backlog full (%d changes): dropped the oldest, %s of event %s observed at %s",
                            self._max, dropped["type"], dropped["subject"], dropped["time"])
            del self._backlog[:overflow]
        self._save()

    def flush(self) -> int:
        """Send what the backlog holds, unless backing off; returns how many changes were delivered."""
        if self._publisher is None or not self._backlog or not self._backoff.ready():
            return 0
        delivered = 0
        batch_size = self._batch
        for _ in range(_MAX_BATCHES_PER_FLUSH):
            if not self._backlog:
                break
            batch = self._backlog[:batch_size]
            try:
                self._publisher.send([to_cloud_event(record) for record in batch])
            except HttpResponseError as exc:
                if exc.status_code == 413 and len(batch) > 1:
                    batch_size = 1  # find the one that is too large
                    continue
                if exc.status_code == 413:
                    log.error("Event Grid refused %s of event %s as too large; dropped: it can never be delivered",
                              batch[0]["type"], batch[0]["subject"])
                    self._remove(1)
                    continue
                self._failed(_http_reason(exc), level=logging.ERROR if exc.status_code == 400 else logging.WARNING)
                return delivered
            except AzureError as exc:
                self._failed(f"{type(exc).__name__}: {exc}", level=logging.WARNING)
                return delivered
            self._remove(len(batch))
            delivered += len(batch)
            self._backoff.succeeded()
            self._outage.recovered(f"{delivered + len(self._backlog)} queued changes being delivered")
        return delivered

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()

    def _failed(self, reason: str, *, level: int) -> None:
        delay = self._backoff.failed()
        self._outage.failed(f"{reason} ({len(self._backlog)} changes queued)", retry_in=delay, level=level)

    def _remove(self, count: int) -> None:
        del self._backlog[:count]
        self._save()

    def _save(self) -> None:
        write_json_atomically(self._path, self._backlog)

    def _load(self) -> list[dict[str, Any]]:
        try:
            raw = read_json(self._path)
        except ValueError as exc:
            log.error("forwarding backlog %s unreadable (%s); starting an empty one", self._path, exc)
            return []
        if raw is None:
            return []
        if not isinstance(raw, list):
            log.error("forwarding backlog %s is not a list; starting an empty one", self._path)
            return []
        if raw:
            log.info("forwarding backlog holds %d changes from an earlier run", len(raw))
        return [record for record in raw if isinstance(record, dict)]


def _http_reason(exc: HttpResponseError) -> str:
    body = exc.response.text()[:500] if exc.response is not None else ""
    return f"HTTP {exc.status_code}: {body or exc.message}"
