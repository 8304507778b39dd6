"""The run ledger: what we saw and did, per run, in Azure Table storage.

One partition per run. Row ``run`` holds the event; rows ``phase-pre`` / ``phase-post`` hold each
phase's progress; one ``machine-<hash>`` row per machine holds its original power state, the
action taken and the outcome. The post event restores only what these rows say we started, so
the rows are written before and after every action, and every write is an upsert, a conditional
insert or an ETag-conditional update: redelivered events and retried queue messages find what
was already done instead of doing it again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from handlers.core.bounds import RAW_PAYLOAD_UNITS, TABLE_TEXT_UNITS, truncate_utf16
from handlers.core.events import MaintenanceEvent

REJECTED_PARTITION = "rejected-events"
ALERTS_PARTITION = "alerts"  # alerts about no run we can name (an unreadable poison message)
_R = TypeVar("_R", bound="_Row")
_T = TypeVar("_T")
_LEDGER_WRITERS = 4
# How long a claim lasts unless its worker renews it (MAINTENANCE_LEASE_SECONDS sets it; the
# worker's heartbeat renews it every quarter of that while the worker is alive).
PHASE_LEASE = timedelta(seconds=120)
# A claim row written before leases were renewed (no LeaseUntil) lasts this long from ClaimedAt.
_LEGACY_LEASE = timedelta(minutes=30)
_MAX_EVENT_ID = 1024  # what we keep of an event id in a record (a refused one may be any size)


class PhaseStatus(StrEnum):
    RECEIVED = "received"  # event accepted, work message not yet confirmed sent
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # a worker failed; the queue will deliver the message again
    DISPATCHED = "dispatched"  # split into queue messages of its own; the verdict completes it
    COMPLETED = "completed"


class AcceptOutcome(StrEnum):
    NEW = "new"
    RESEND = "resend"  # seen before, but its work message may never have been sent
    DUPLICATE = "duplicate"


def run_key(correlation_id: str) -> str:
    """Partition key for a run: readable, and free of the characters Table keys forbid."""
    name = correlation_id.rstrip("/").rsplit("/", 1)[-1]
    config = correlation_id.split("/maintenanceConfigurations/", 1)[-1].split("/", 1)[0]
    readable = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{config}_{name}")[:120]
    return f"{readable}_{_digest(correlation_id)}"


def subscription_of(resource_id: str) -> str:
    """The subscription of an ARM id, lower-case ("" when it names none): the lane of a request
    on that resource. ARM's write bucket, the limit a fleet's starts and snapshots run into, is
    per subscription (for one caller)."""
    parts = resource_id.split("/")
    return (parts[2] if len(parts) > 2 and parts[1].lower() == "subscriptions" else "").lower()


def machine_row_key(resource_id: str) -> str:
    return f"machine-{_digest(resource_id)}"


def _digest(value: str) -> str:
    # ARM ids are case-insensitive; the same machine must always map to the same row.
    return hashlib.sha256(value.lower().encode()).hexdigest()[:32]


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Row:
    """A dataclass stored as one table row: fields map to PascalCase columns."""

    etag: str | None
    lane: str

    def row_key(self) -> str:
        raise NotImplementedError

    def to_entity(self, partition: str) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": self.row_key()}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name != "etag" and value is not None:
                entity[_column(f.name)] = value
        return entity

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any]) -> Any:
        values = {f.name: entity[_column(f.name)] for f in fields(cls) if _column(f.name) in entity}  # type: ignore[arg-type]
        values["etag"] = entity.metadata.get("etag") if hasattr(entity, "metadata") else None
        return cls(**values)


@dataclass(frozen=True)
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
    etag: str | None = field(default=None, compare=False)

    def row_key(self) -> str:
        return machine_row_key(self.resource_id)


@dataclass(frozen=True)
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
        return f"snapshot-{_digest(self.disk_id)}"


def _column(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


@dataclass(frozen=True)
class PhaseClaim:
    """Returned by `Ledger.claim_phase`: the worker owns the phase until `lease_until`, longer
    while it renews the claim (`Ledger.renew_claim`). Every write of the claim's row is
    conditional on `etag`, so a worker whose claim was taken over cannot overwrite the new one."""

    partition: str
    phase: str
    attempt: int
    etag: str
    lease_until: datetime
    row: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the row as claimed


@dataclass(frozen=True)
class PhaseBusy:
    """Returned by `Ledger.claim_phase` when another worker's claim is live until `lease_until`."""

    lease_until: datetime
    attempt: int


class LeaseLostError(Exception):
    """Another worker took over the phase: this claim's lease had run out."""


class LedgerTable(Protocol):
    """The Table storage calls the ledger makes (azure.data.tables.TableClient has them all)."""

    def create_entity(self, entity: Any, **kwargs: Any) -> Any: ...
    def upsert_entity(self, entity: Any, mode: Any = ..., **kwargs: Any) -> Any: ...
    def update_entity(self, entity: Any, mode: Any = ..., **kwargs: Any) -> Any: ...
    def get_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> Any: ...
    def query_entities(self, query_filter: str, **kwargs: Any) -> Any: ...
    def submit_transaction(self, operations: Any, **kwargs: Any) -> Any: ...


class Ledger:
    """Reads and writes run records. All methods are safe to repeat."""

    def __init__(self, table: TableClient | LedgerTable) -> None:
        self._table = table

    # -- runs and phases ---------------------------------------------------------------------

    def accept_event(self, event: MaintenanceEvent, *, now: datetime | None = None) -> AcceptOutcome:
        """Record the run and its phase; tell a first delivery from a redelivery."""
        now = now or utcnow()
        partition = run_key(event.correlation_id)
        run: dict[str, Any] = {
            "PartitionKey": partition,
            "RowKey": "run",
            "CorrelationId": event.correlation_id,
            "MaintenanceConfigurationId": event.maintenance_configuration_id,
            "SubscriptionIds": _text(",".join(event.subscription_ids)),
            "SubscriptionCount": len(event.subscription_ids),
            "WindowStart": event.start,
            "WindowEnd": event.end,
        }
        if event.cancellation_cutoff is not None:
            run["CancellationCutoff"] = event.cancellation_cutoff
        if event.status is not None:
            run["PostStatus"] = event.status
        self._table.upsert_entity(run, mode=UpdateMode.MERGE)
        phase: dict[str, Any] = {
            "PartitionKey": partition,
            "RowKey": f"phase-{event.kind.value}",
            "Status": PhaseStatus.RECEIVED.value,
            "EventId": truncate_utf16(event.event_id, _MAX_EVENT_ID),
            "ReceivedAt": now,
            "Attempts": 0,
        }
        try:
            self._table.create_entity(phase)
            return AcceptOutcome.NEW
        except ResourceExistsError:
            existing = self._table.get_entity(partition, phase["RowKey"])
            if existing.get("Status") == PhaseStatus.RECEIVED.value:
                return AcceptOutcome.RESEND
            return AcceptOutcome.DUPLICATE

    def mark_queued(self, correlation_id: str, phase: str) -> None:
        partition, row = run_key(correlation_id), f"phase-{phase}"
        existing = self._get(partition, row)
        if existing is None or existing.get("Status") != PhaseStatus.RECEIVED.value:
            return
        # ETag-conditional: a fast worker may claim the phase between our read and this write,
        # and the phase must never move back from "running" to "queued".
        try:
            self._table.update_entity(
                {"PartitionKey": partition, "RowKey": row, "Status": PhaseStatus.QUEUED.value, "QueuedAt": utcnow()},
                mode=UpdateMode.MERGE, etag=existing.metadata["etag"], match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            pass

    def claim_phase(
        self, correlation_id: str, phase: str, *, lease: timedelta = PHASE_LEASE, now: datetime | None = None
    ) -> PhaseClaim | PhaseBusy | None:
        """Take the phase for this worker: a PhaseClaim; PhaseBusy while another worker's lease
        is live; None when the phase is done (or handed on to messages of its own)."""
        now = now or utcnow()
        partition = run_key(correlation_id)
        row = f"phase-{phase}"
        existing = self._get(partition, row)
        if existing is None:
            # The work message outran the ack's bookkeeping (or the ledger was cleared): start fresh.
            try:
                self._table.create_entity({"PartitionKey": partition, "RowKey": row,
                                           "Status": PhaseStatus.QUEUED.value, "Attempts": 0})
            except ResourceExistsError:
                pass
            existing = self._table.get_entity(partition, row)
        status = existing.get("Status")
        if status in (PhaseStatus.COMPLETED.value, PhaseStatus.DISPATCHED.value):
            return None
        attempts = int(existing.get("Attempts") or 0)
        if status == PhaseStatus.RUNNING.value:
            held_until = _lease_until(existing)
            if held_until is not None and now < held_until:
                return PhaseBusy(held_until, attempts)
        until = now + lease
        update = {"PartitionKey": partition, "RowKey": row, "Status": PhaseStatus.RUNNING.value,
                  "ClaimedAt": now, "LeaseUntil": until, "Attempts": attempts + 1}
        try:
            meta = self._table.update_entity(update, mode=UpdateMode.MERGE, etag=existing.metadata["etag"],
                                             match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError:
            return PhaseBusy(until, attempts + 1)  # another worker won the race just now
        return PhaseClaim(partition, phase, attempts + 1, meta["etag"], until, dict(existing) | update)

    def renew_claim(
        self, claim: PhaseClaim, *, lease: timedelta = PHASE_LEASE, values: Mapping[str, Any] | None = None
    ) -> PhaseClaim:
        """Extend the claim's lease (and merge `values` into its row); LeaseLostError when
        another worker has taken the phase over."""
        until = utcnow() + lease
        update = {"PartitionKey": claim.partition, "RowKey": f"phase-{claim.phase}", "LeaseUntil": until,
                  **(values or {})}
        meta = self._conditional(claim, update)
        return replace(claim, etag=meta["etag"], lease_until=until, row=dict(claim.row) | update)

    def finish_phase(self, claim: PhaseClaim, *, summary: Mapping[str, Any],
                     status: PhaseStatus = PhaseStatus.COMPLETED) -> None:
        """The phase is done (or, DISPATCHED, handed on to messages of its own)."""
        self._conditional(claim, {
            "PartitionKey": claim.partition, "RowKey": f"phase-{claim.phase}",
            "Status": status.value, "FinishedAt": utcnow(),
            "Summary": _text(json.dumps(summary, default=str, sort_keys=True)),
        })

    def complete_phase(self, correlation_id: str, phase: str, *, summary: Mapping[str, Any]) -> None:
        """Complete a phase whatever claims it (the verdict completes the pre phase it decided)."""
        self._table.upsert_entity({
            "PartitionKey": run_key(correlation_id), "RowKey": f"phase-{phase}",
            "Status": PhaseStatus.COMPLETED.value, "FinishedAt": utcnow(),
            "Summary": _text(json.dumps(summary, default=str, sort_keys=True)),
        }, mode=UpdateMode.MERGE)

    def release_phase(self, claim: PhaseClaim, *, error: str) -> None:
        """The worker failed; the queue message will come back and may claim the phase again."""
        self._conditional(claim, {
            "PartitionKey": claim.partition, "RowKey": f"phase-{claim.phase}",
            "Status": PhaseStatus.RETRYING.value, "LastError": _text(error), "ReleasedAt": utcnow(),
        })

    def _conditional(self, claim: PhaseClaim, update: dict[str, Any]) -> Any:
        try:
            return self._table.update_entity(update, mode=UpdateMode.MERGE, etag=claim.etag,
                                             match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as exc:
            raise LeaseLostError(f"phase {claim.phase} was taken over by another worker") from exc

    def get_phase(self, correlation_id: str, phase: str) -> dict[str, Any] | None:
        return self._get(run_key(correlation_id), f"phase-{phase}")

    def get_run(self, correlation_id: str) -> dict[str, Any] | None:
        return self._get(run_key(correlation_id), "run")

    def get_run_by_key(self, partition: str) -> dict[str, Any] | None:
        """The run row of another run, by the key its snapshots carry in their tags."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", partition):
            return None
        return self._get(partition, "run")

    def update_run(self, correlation_id: str, values: Mapping[str, Any]) -> None:
        entity = {"PartitionKey": run_key(correlation_id), "RowKey": "run"}
        entity.update({k: _text(v) if isinstance(v, str) else v for k, v in values.items()})
        self._table.upsert_entity(entity, mode=UpdateMode.MERGE)

    # -- machines -----------------------------------------------------------------------------

    def list_machines(self, correlation_id: str, *, lane: str | None = None) -> list[MachineRecord]:
        """The run's machine rows; with `lane`, only that lane's (filtered by the table service)."""
        return [MachineRecord.from_entity(row) for row in self._rows(correlation_id, "machine", lane)]

    def list_snapshots(self, correlation_id: str, *, lane: str | None = None) -> list[SnapshotRecord]:
        return [SnapshotRecord.from_entity(row) for row in self._rows(correlation_id, "snapshot", lane)]

    def _rows(self, correlation_id: str, prefix: str, lane: str | None) -> Any:
        query = f"PartitionKey eq @pk and RowKey ge '{prefix}-' and RowKey lt '{prefix}.'"
        parameters = {"pk": run_key(correlation_id)}
        if lane is not None:
            query += " and Lane eq @lane"
            parameters["lane"] = lane
        return self._table.query_entities(query, parameters=parameters)

    def open_phases(self, correlation_id: str, phases: Iterable[str]) -> None:
        """Phase rows for work about to be queued (the pre phase's lanes), left alone if they exist."""
        partition = run_key(correlation_id)
        for phase in phases:
            try:
                self._table.create_entity({"PartitionKey": partition, "RowKey": f"phase-{phase}",
                                           "Status": PhaseStatus.QUEUED.value, "Attempts": 0})
            except ResourceExistsError:
                pass

    def phase_statuses(self, correlation_id: str, prefix: str) -> dict[str, str]:
        """Status of every phase whose name starts with `prefix` (e.g. "pre-lane-")."""
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
        low = f"phase-{prefix}"
        high = low[:-1] + chr(ord(low[-1]) + 1)
        rows = self._table.query_entities(query, parameters={"pk": run_key(correlation_id), "low": low, "high": high})
        return {row["RowKey"].removeprefix("phase-"): str(row.get("Status") or "") for row in rows}

    def _add_one(self, correlation_id: str, record: _R) -> _R:
        """Insert the first sighting of a row; if it exists, keep (and return) what is there.

        The first sighting carries the power state from before we touched anything: a retried
        worker sees the VM running because we started it, and must not overwrite that.
        """
        partition = run_key(correlation_id)
        try:
            meta = self._table.create_entity(record.to_entity(partition))
            return replace(record, etag=meta["etag"])  # type: ignore[type-var]
        except ResourceExistsError:
            row = self._table.get_entity(partition, record.row_key())
            return type(record).from_entity(row)  # type: ignore[no-any-return,unused-ignore]

    def add_rows(self, correlation_id: str, records: Iterable[_R]) -> list[_R]:
        """Insert first sightings (machines, snapshots), 100 per transaction; returns the rows as stored."""
        return [row for chunk in self.add_rows_in_order(correlation_id, records) for row in chunk]

    def add_rows_in_order(self, correlation_id: str, records: Iterable[_R]) -> Iterator[list[_R]]:
        """`add_rows` a transaction at a time: yields each chunk of stored rows, in the order given,
        as soon as it is stored, while the chunks after it are still being written.

        A transaction fails whole when any row exists already (a concurrent writer); that chunk
        then falls back to one conditional insert per row, which keeps what is there.
        """
        partition = run_key(correlation_id)

        def insert(chunk: list[_R]) -> list[_R]:
            try:
                self._table.submit_transaction([("create", r.to_entity(partition)) for r in chunk])
                return chunk
            except TableTransactionError:
                return [self._add_one(correlation_id, r) for r in chunk]

        yield from self._in_order(insert, _chunks(list(records)))

    def save_rows(self, correlation_id: str, records: Iterable[_Row]) -> None:
        """Merge many rows, 100 per transaction (the Table service's batch limit)."""
        partition = run_key(correlation_id)

        def merge(chunk: list[_Row]) -> None:
            self._table.submit_transaction(
                [("upsert", r.to_entity(partition), {"mode": UpdateMode.MERGE}) for r in chunk])

        for _ in self._in_order(merge, _chunks(list(records))):
            pass

    @staticmethod
    def _in_order(work: Callable[[list[Any]], _T], chunks: list[list[Any]]) -> Iterator[_T]:
        """`work` on every chunk, each result yielded in order as soon as it and those before it
        are done. The first chunk alone, so that what waits on it is not held up by the ones after
        it; then a few transactions at once (on different rows they are independent, and one
        after another they would be most of the pre phase's own time)."""
        if not chunks:
            return
        yield work(chunks[0])
        if len(chunks) == 1:
            return
        pool = ThreadPoolExecutor(max_workers=min(_LEDGER_WRITERS, len(chunks) - 1), thread_name_prefix="ledger")
        try:
            futures = [pool.submit(work, chunk) for chunk in chunks[1:]]
            for future in futures:
                yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def record_alert(self, correlation_id: str | None, kind: str, message: str, details: Mapping[str, Any]) -> None:
        """Keep an alert: the latest of each kind per run (`alert-<kind>`) and the run's LastAlert."""
        now = utcnow()
        partition = run_key(correlation_id) if correlation_id else ALERTS_PARTITION
        row = kind if correlation_id else f"{kind}-{_digest(message)}"
        self._table.upsert_entity({
            "PartitionKey": partition, "RowKey": f"alert-{row}", "Kind": kind, "Message": _text(message),
            "Details": _text(json.dumps(details, default=str, sort_keys=True)), "RaisedAt": now,
        })
        if correlation_id:
            self.update_run(correlation_id, {"LastAlert": f"{kind}: {message}", "LastAlertAt": now})

    def list_alerts(self, correlation_id: str) -> dict[str, dict[str, Any]]:
        """The run's alerts by kind."""
        query = "PartitionKey eq @pk and RowKey ge 'alert-' and RowKey lt 'alert.'"
        rows = self._table.query_entities(query, parameters={"pk": run_key(correlation_id)})
        return {str(row["Kind"]): dict(row) for row in rows}

    # -- events we refused --------------------------------------------------------------------

    def record_rejected(self, *, event_id: str | None, reason: str, raw: str) -> None:
        """Keep a refused event (and why) so nothing disappears without a record."""
        self.record_rejected_many([(event_id, reason, raw)])

    def record_rejected_many(self, refusals: Iterable[tuple[str | None, str, str]]) -> None:
        """Keep many refused events, (event id, reason, raw payload) each, 100 rows per
        transaction: a queue delivery of a thousand malformed events is ten writes, not a
        thousand. The same refusal twice is one row."""
        now = utcnow()
        rows: dict[str, dict[str, Any]] = {}
        for event_id, reason, raw in refusals:
            key = _digest(f"{event_id}|{raw}")
            rows[key] = {
                "PartitionKey": REJECTED_PARTITION, "RowKey": key,
                "EventId": truncate_utf16(event_id or "", _MAX_EVENT_ID),
                "Reason": _text(reason), "Raw": truncate_utf16(raw, RAW_PAYLOAD_UNITS), "RejectedAt": now,
            }

        def upsert(chunk: list[dict[str, Any]]) -> None:
            if len(chunk) == 1:
                self._table.upsert_entity(chunk[0])
            else:
                self._table.submit_transaction([("upsert", row) for row in chunk])

        for _ in self._in_order(upsert, _chunks(list(rows.values()))):
            pass

    def late_pre_reason(self, event: MaintenanceEvent, *, now: datetime | None = None) -> str | None:
        """Why it is too late to act on this pre event (None when it is not): its window has
        begun, or the run's post event is recorded. Whatever it started then, nothing would turn
        off (Event Grid redelivers for up to 24 hours)."""
        now = now or utcnow()
        if now >= event.start:
            return (f"the pre event came after its window began ({event.start.isoformat()}); "
                    "nothing was started or snapshotted")
        if self.get_phase(event.correlation_id, "post") is not None:
            return "the pre event came after the run's post event; nothing was started or snapshotted"
        return None

    def record_late_pre(self, event: MaintenanceEvent, reason: str) -> bool:
        """A pre event that came too late to act on (its window has begun, or the run's post is
        recorded): the pre phase is recorded as completed with nothing done, so a post event never
        waits for it, and the run row says why. False, recording nothing, when the pre phase was
        recorded already (a redelivery of an event we had in time)."""
        partition = run_key(event.correlation_id)
        try:
            self._table.create_entity({
                "PartitionKey": partition, "RowKey": "phase-pre", "Status": PhaseStatus.COMPLETED.value,
                "EventId": truncate_utf16(event.event_id, _MAX_EVENT_ID), "ReceivedAt": utcnow(),
                "FinishedAt": utcnow(), "Attempts": 0,
                "Summary": _text(json.dumps({"late": reason, "machines": 0}, sort_keys=True)),
            })
        except ResourceExistsError:
            return False
        self.note_late_pre(event, reason)
        return True

    def note_late_pre(self, event: MaintenanceEvent, reason: str) -> None:
        """The run row says its pre event came too late to act on, and why."""
        self.update_run(event.correlation_id, {
            "CorrelationId": event.correlation_id,
            "MaintenanceConfigurationId": event.maintenance_configuration_id,
            "LatePreEvent": reason, "Verdict": "late",
        })

    def _get(self, partition: str, row: str) -> Any:
        try:
            return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None


def _lease_until(row: Mapping[str, Any]) -> datetime | None:
    until = row.get("LeaseUntil")
    if isinstance(until, datetime):
        return until
    claimed = row.get("ClaimedAt")
    return claimed + _LEGACY_LEASE if isinstance(claimed, datetime) else None


def _chunks(rows: list[Any], size: int = 100) -> list[list[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _text(value: str) -> str:
    """A string property as Table storage takes it (64 KiB of UTF-16)."""
    return truncate_utf16(value, TABLE_TEXT_UNITS)


__all__ = [
    "AcceptOutcome",
    "Ledger",
    "LeaseLostError",
    "MachineRecord",
    "PhaseBusy",
    "PhaseClaim",
    "PhaseStatus",
    "SnapshotRecord",
    "machine_row_key",
    "run_key",
    "subscription_of",
    "utcnow",
]
