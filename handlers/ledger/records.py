"""The rows of a run's machines and snapshots, as the ledger keeps them (one table row each)."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Protocol

from handlers.core.keys import machine_row_key, snapshot_row_key

# Columns left out while empty: most machines carry no guest tag, and these only ever go from empty
# to a value, so a merge that leaves them out never keeps a stale one.
_SPARSE = frozenset({"os_type", "stop_services", "pre_script", "post_script", "guest_pre", "guest_pre_outcome",
                     "guest_pre_detail", "guest_pre_output", "guest_post", "guest_post_outcome", "guest_post_detail",
                     "guest_post_output", "patch_status", "patch_failed_updates", "after_action", "after_detail"})


def _shared(value: Any) -> Any:
    return sys.intern(value) if type(value) is str and len(value) <= 64 else value


class _Row:
    """A dataclass stored as one table row: fields map to PascalCase columns. Rows are slotted: a
    fleet's worth of them, and their copies, are held at once."""

    __slots__ = ()
    etag: str | None
    lane: str

    def row_key(self) -> str:
        raise NotImplementedError

    def to_entity(self, partition: str, *, only: Collection[str] = ()) -> dict[str, Any]:
        """The row as a table entity; with `only`, just those fields (and the keys)."""
        entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": self.row_key()}
        for f in fields(self):  # type: ignore[arg-type]
            if only and f.name not in only:
                continue
            value = getattr(self, f.name)
            if f.name != "etag" and value is not None and not (value == "" and f.name in _SPARSE):
                entity[_column(f.name)] = value
        return entity

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any]) -> Any:
        # Short values (a subscription, a region, an outcome) are shared between the rows, not one
        # copy each: a split run's verdict holds 20,000 machines and their snapshots at once.
        values = {f.name: _shared(entity[_column(f.name)])
                  for f in fields(cls) if _column(f.name) in entity}  # type: ignore[arg-type]
        values["etag"] = entity.metadata.get("etag") if hasattr(entity, "metadata") else None
        return cls(**values)


@dataclass(frozen=True, slots=True)
class MachineRecord(_Row):
    """One machine of a run, as the ledger keeps it."""

    resource_id: str
    kind: str  # "vm" | "arc" | "other"
    subscription_id: str = ""
    resource_group: str = ""
    name: str = ""
    location: str = ""
    original_power_state: str = ""  # e.g. "deallocated"; "" when unknown
    opted_out: bool = False
    pre_action: str = "none"  # "start" | "none" | "skip"
    pre_outcome: str = "pending"  # planned | starting | succeeded | failed | timed-out | not-needed | skipped | unknown
    pre_detail: str = ""
    started_at: datetime | None = None
    ready_at: datetime | None = None
    check_failures: str = ""  # "; "-joined reasons from the pre-checks
    restore_action: str = ""  # "deallocate" | "power-off" | "none"
    restore_outcome: str = ""  # planned | issued | succeeded | failed | timed-out | skipped
    restore_detail: str = ""
    restored_at: datetime | None = None
    lane: str = ""  # the subscription its start goes to (handlers.phases.pre.fan_out)
    # In the guest (handlers.phases.guest): what its tags asked for, as read before the window.
    os_type: str = ""  # "linux" | "windows" | ""
    wave: int | None = None  # maintenance-wave; None: the first
    stop_services: str = ""  # comma-separated, in the order they are stopped
    pre_script: str = ""
    post_script: str = ""
    guest_pre: str = ""  # what runs before patching ("script drain; stop-services nginx"), "" for nothing
    guest_pre_outcome: str = ""  # planned | pending | succeeded | failed | timed-out | skipped
    guest_pre_detail: str = ""  # per command: exit code and duration, or why it did not run
    guest_pre_output: str = ""  # the last few KB of each command's output (stored: keep secrets out of it)
    guest_post: str = ""
    guest_post_outcome: str = ""
    guest_post_detail: str = ""
    guest_post_output: str = ""
    after_action: str = ""  # maintenance-after: restore | deallocate | stop | leave-running ("" = restore)
    after_detail: str = ""  # why a maintenance-after value was refused
    # What Update Manager installed (handlers.phases.post.patch_results); None/"": not read yet.
    patch_status: str = ""  # Succeeded | Failed | CompletedWithWarnings | InProgress | NotStarted | not-reported
    patch_installed: int | None = None
    patch_failed: int | None = None
    patch_pending: int | None = None
    patch_reboot: str = ""
    patch_window_exceeded: bool | None = None
    patch_error: str = ""
    patch_started_at: datetime | None = None
    patch_finished_at: datetime | None = None
    patch_failed_updates: str = ""  # JSON: [{name, kb_id, version, classifications}]
    # Health after patching (handlers.phases.post.health): "passed" | "failed" | "" (not checked).
    health: str = ""
    health_detail: str = ""  # the failed checks' reasons, one a line (bounded); "" when it passed
    etag: str | None = field(default=None, compare=False)

    def row_key(self) -> str:
        return machine_row_key(self.resource_id)


# The columns each post-phase step owns: steps that run beside each other store only their own,
# so that one step's row, read before the other wrote, never puts the other's back as it was.
RESTORE_FIELDS = ("restore_action", "restore_outcome", "restore_detail", "restored_at")
PATCH_FIELDS = tuple(f.name for f in fields(MachineRecord) if f.name.startswith("patch_"))
HEALTH_FIELDS = ("health", "health_detail")


@dataclass(frozen=True, slots=True)
class SnapshotRecord(_Row):
    """One disk's snapshot for a run (or why the disk gets none)."""

    disk_id: str  # the source disk (for a skipped machine: the machine id)
    vm_id: str
    role: str = "os"  # "os" | "data"
    snapshot_id: str = ""
    snapshot_name: str = ""
    location: str = ""
    outcome: str = "pending"  # planned | pending | creating | succeeded | reused | failed | timed-out | skipped
    detail: str = ""
    requested_at: datetime | None = None
    finished_at: datetime | None = None
    lane: str = ""  # the subscription its PUT goes to (handlers.phases.pre.fan_out)
    etag: str | None = field(default=None, compare=False)

    def row_key(self) -> str:
        return snapshot_row_key(self.disk_id)


def _column(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))




class LedgerTable(Protocol):
    """The Table storage calls the ledger makes (azure.data.tables.TableClient has them all)."""

    def create_entity(self, entity: Any, **kwargs: Any) -> Any: ...
    def upsert_entity(self, entity: Any, mode: Any = ..., **kwargs: Any) -> Any: ...
    def update_entity(self, entity: Any, mode: Any = ..., **kwargs: Any) -> Any: ...
    def get_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> Any: ...
    def query_entities(self, query_filter: str, **kwargs: Any) -> Any: ...
    def submit_transaction(self, operations: Any, **kwargs: Any) -> Any: ...


def stored_json(text: Any, default: Any) -> Any:
    """A JSON column of a row (a summary, the failed updates) parsed; `default` when empty or unreadable."""
    try:
        return json.loads(text) if isinstance(text, str) and text else default
    except ValueError:
        return default
