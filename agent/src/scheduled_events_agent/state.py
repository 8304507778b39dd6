"""What the agent remembers across restarts, in one JSON file in the state directory.

Per event: when it was first seen, its last known JSON, its hooks' and end hooks' progress and
results, and the approval decision. Hooks are marked running (and the file written) *before* the
first one starts, so an agent killed mid-hook finds them on restart and never runs them again.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from .atomic import read_json, write_json_atomically

log = logging.getLogger("scheduled_events_agent.state")
STATE_FILE = "state.json"
LOCK_FILE = "agent.lock"
VERSION = 1

# EventRecord.hooks
HOOKS_PENDING = "pending"
HOOKS_RUNNING = "running"
HOOKS_SUCCEEDED = "succeeded"
HOOKS_FAILED = "failed"
HOOKS_NONE = "none"  # no hooks configured for the event's type
HOOKS_SKIPPED = "skipped"  # already Started and run_hooks_for_started_events is off
HOOKS_NOT_THIS_VM = "not-this-vm"  # the event is for other VMs of the availability set / scale set
# Start hooks in one of these count as run: the event's end hooks follow when it vanishes.
HOOKS_DONE = (HOOKS_SUCCEEDED, HOOKS_FAILED, HOOKS_NONE)

# EventRecord.hooks_phase: the event's status when its hooks started
PHASE_SCHEDULED = "scheduled"  # with notice: approval may follow
PHASE_STARTED = "started"  # no notice (host failure) or the agent was not running: no approval
PHASE_END = "end"  # the event vanished (EventRecord.end_hooks)

# EventRecord.end_hooks ("" until the event vanishes; stays "" when its start hooks never ran)
END_PENDING = "pending"
END_RUNNING = "running"
END_SUCCEEDED = "succeeded"
END_FAILED = "failed"
END_NONE = "none"  # no end hooks configured for the event's type

# EventRecord.approval
APPROVAL_PENDING = "pending"
APPROVED = "approved"
APPROVAL_WAIT = "wait"  # policy: let NotBefore come
APPROVAL_NOT_FIRST = "not-first-resource"
APPROVAL_HOOKS_FAILED = "hooks-failed"
APPROVAL_NOT_NEEDED = "not-needed"  # started or vanished before we could
APPROVAL_NOT_THIS_VM = "not-this-vm"
APPROVAL_MUST_GO_ALONE = "must-go-alone"  # names a must_go_alone VM together with others
APPROVAL_TOO_LATE = "too-late"  # NotBefore (less the margin) passed before we could approve


class StateLockedError(RuntimeError):
    """Another agent process is using the same state directory."""


@dataclass
class EventRecord:
    event_id: str
    event: dict[str, Any]  # last JSON seen from the endpoint
    first_seen_at: str
    status: str
    first_seen_status: str = ""
    started_seen_at: str | None = None
    vanished_at: str | None = None
    hooks: str = HOOKS_PENDING
    hooks_phase: str = ""
    hooks_started_at: str | None = None
    hook_results: list[dict[str, Any]] = field(default_factory=list)
    end_hooks: str = ""
    end_hooks_started_at: str | None = None
    end_hook_results: list[dict[str, Any]] = field(default_factory=list)
    approval: str = APPROVAL_PENDING
    approval_detail: str = ""
    approved_at: str | None = None

    @property
    def active(self) -> bool:
        return self.vanished_at is None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EventRecord:
        return cls(**{key: raw[key] for key in cls.__dataclass_fields__ if key in raw})


@dataclass
class AgentState:
    last_incarnation: int | None = None
    events: dict[str, EventRecord] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "last_incarnation": self.last_incarnation,
                "events": {key: asdict(record) for key, record in self.events.items()}}

    @classmethod
    def from_dict(cls, raw: Any) -> AgentState:
        if not isinstance(raw, dict) or not isinstance(raw.get("events", {}), dict):
            raise ValueError("not a state document")
        events = {key: EventRecord.from_dict(value) for key, value in raw.get("events", {}).items()}
        return cls(last_incarnation=raw.get("last_incarnation"), events=events)

    def prune(self, now: datetime, retention: timedelta, *, keep: Collection[str] = ()) -> list[str]:
        """Forget events that vanished longer ago than `retention` (except `keep` and those whose
        end hooks are still to run); returns their ids."""
        cutoff = (now - retention).isoformat()
        gone = [key for key, record in self.events.items()
                if record.vanished_at and record.vanished_at < cutoff and key not in keep
                and record.end_hooks not in (END_PENDING, END_RUNNING)]
        for key in gone:
            del self.events[key]
        return gone


class StateStore:
    """The state file, loaded at open and rewritten atomically by `save()`; one process at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock: TextIO | None = _lock(directory / LOCK_FILE)
        self.state = self._load()

    def save(self) -> None:
        write_json_atomically(self.path, self.state.to_dict())

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def _load(self) -> AgentState:
        try:
            raw = read_json(self.path)
            return AgentState() if raw is None else AgentState.from_dict(raw)
        except (ValueError, TypeError) as exc:
            # Only disk trouble can do this (writes are atomic). Keep the file for a post-mortem
            # and go on: an agent that refuses to start runs no hooks at all.
            aside = self.path.with_name(f"{STATE_FILE}.corrupt-{os.getpid()}")
            os.replace(self.path, aside)
            log.error("state file %s unreadable (%s); moved to %s, starting with empty state",
                      self.path, exc, aside)
            return AgentState()


def _lock(path: Path) -> TextIO:
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the process's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise StateLockedError(f"another agent is using the state directory {path.parent}") from exc
    return handle
