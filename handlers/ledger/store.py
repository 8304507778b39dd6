"""The run ledger: what we saw and did, per run, in Azure Table storage.

One partition per run. Row ``run`` holds the event; rows ``phase-*`` hold each phase's progress
(`handlers.ledger.phases`); one ``machine-<hash>`` row per machine holds its original power
state, the action taken and the outcome, one ``snapshot-<hash>`` row per disk its snapshot
(`handlers.ledger.records`). The post event restores only what these rows say we started, so the
rows are written before and after every action, and every write is an upsert, a conditional
insert or an ETag-conditional update: redelivered events and retried queue messages find what
was already done instead of doing it again. Keys are made in `handlers.core.keys`; the time
comes from the clock the runtime gives (`handlers.core.clock`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from handlers.core.bounds import RAW_PAYLOAD_UNITS, truncate_utf16
from handlers.core.clock import system_utcnow
from handlers.core.keys import digest, machine_row_key, run_key
from handlers.core.telemetry import InvocationPool
from handlers.ledger.phases import (
    _MAX_EVENT_ID,
    PHASE_LEASE,
    AcceptOutcome,
    LeaseLostError,
    PhaseBusy,
    PhaseClaim,
    PhaseRows,
    PhaseStatus,
    text,
)
from handlers.ledger.records import LedgerTable, MachineRecord, SnapshotRecord, _Row

REJECTED_PARTITION = "rejected-events"
ALERTS_PARTITION = "alerts"  # alerts about no run we can name (an unreadable poison message)
_R = TypeVar("_R", bound=_Row)
_T = TypeVar("_T")
_LEDGER_WRITERS = 4
# A transaction is a POST, which azure-core does not send again after a dropped connection (it
# cannot know whether it was applied). Ours can be: upserts, or inserts that fall back to one
# conditional insert per row when the rows exist (`add_rows_in_order`).
_RESEND = {"retry_on_methods": frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST"})}


class Ledger(PhaseRows):
    """Reads and writes run records. All methods are safe to repeat."""

    def __init__(self, table: TableClient | LedgerTable, *, clock: Callable[[], datetime] = system_utcnow) -> None:
        self._table = table
        self._now = clock

    def get_run(self, correlation_id: str) -> dict[str, Any] | None:
        return self._get(run_key(correlation_id), "run")

    def list_runs(self, *, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs' rows (by window start), for the report CLI: a scan of the table."""
        rows = [dict(row) for row in self._table.query_entities("RowKey eq 'run'")]
        rows.sort(key=lambda row: str(row.get("WindowStart") or ""), reverse=True)
        return rows[:limit]

    def get_run_by_key(self, partition: str) -> dict[str, Any] | None:
        """The run row of another run, by the key its snapshots carry in their tags."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", partition):
            return None
        return self._get(partition, "run")

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
                self._table.submit_transaction([("create", r.to_entity(partition)) for r in chunk], **_RESEND)
                return chunk
            except TableTransactionError:
                return [self._add_one(correlation_id, r) for r in chunk]

        yield from self._in_order(insert, _chunks(list(records)))

    def save_rows(self, correlation_id: str, records: Iterable[_Row], *, only: Collection[str] = ()) -> None:
        """Merge many rows, 100 per transaction (the Table service's batch limit); with `only`, just
        those fields of each (the row's other columns are left as they are)."""
        partition = run_key(correlation_id)

        def merge(chunk: list[_Row]) -> None:
            self._table.submit_transaction(
                [("upsert", r.to_entity(partition, only=only), {"mode": UpdateMode.MERGE}) for r in chunk], **_RESEND)

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
        pool = InvocationPool(max_workers=min(_LEDGER_WRITERS, len(chunks) - 1), thread_name_prefix="ledger")
        try:
            futures = [pool.submit(work, chunk) for chunk in chunks[1:]]
            for future in futures:
                yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def record_alert(self, correlation_id: str | None, kind: str, message: str, details: Mapping[str, Any],
                     *, once: str | None = None) -> bool:
        """Keep an alert: the latest of each kind per run (`alert-<kind>`) and the run's LastAlert.

        With `once` (what the alert is about, e.g. a queue message id) the row is
        `alert-<kind>-<once>`, written by a conditional insert: False when that alert was raised
        before (a retried invocation), and nothing is written."""
        now = self._now()
        partition = run_key(correlation_id) if correlation_id else ALERTS_PARTITION
        if once is not None:
            row = f"{kind}-{digest(once)}"
        else:
            row = kind if correlation_id else f"{kind}-{digest(message)}"
        entity = {"PartitionKey": partition, "RowKey": f"alert-{row}", "Kind": kind, "Message": text(message),
                  "Details": text(json.dumps(details, default=str, sort_keys=True)), "RaisedAt": now}
        if once is None:
            self._table.upsert_entity(entity)
        else:
            try:
                self._table.create_entity(entity)
            except ResourceExistsError:
                return False
        if correlation_id:
            self.update_run(correlation_id, {"LastAlert": f"{kind}: {message}", "LastAlertAt": now})
        return True

    def list_alerts(self, correlation_id: str) -> dict[str, dict[str, Any]]:
        """The run's alerts by kind."""
        query = "PartitionKey eq @pk and RowKey ge 'alert-' and RowKey lt 'alert.'"
        rows = self._table.query_entities(query, parameters={"pk": run_key(correlation_id)})
        return {str(row["Kind"]): dict(row) for row in rows}

    # -- notifications: each at most once per run, milestone and channel -------------------

    def claim_notice(self, correlation_id: str, milestone: str, channel: str) -> bool:
        """Take the one sending of this milestone to this channel (`notice-<milestone>-<channel>`,
        a conditional insert): False when an earlier attempt or a redelivery took it first."""
        try:
            self._table.create_entity({
                "PartitionKey": run_key(correlation_id), "RowKey": f"notice-{milestone}-{channel}",
                "Milestone": milestone, "Channel": channel, "Outcome": "sending", "ClaimedAt": self._now()})
        except ResourceExistsError:
            return False
        return True

    def finish_notice(self, correlation_id: str, milestone: str, channel: str, *, outcome: str,
                      detail: str = "") -> None:
        self._table.upsert_entity({
            "PartitionKey": run_key(correlation_id), "RowKey": f"notice-{milestone}-{channel}",
            "Outcome": outcome, "Detail": text(detail), "FinishedAt": self._now()}, mode=UpdateMode.MERGE)

    def list_notices(self, correlation_id: str) -> list[dict[str, Any]]:
        query = "PartitionKey eq @pk and RowKey ge 'notice-' and RowKey lt 'notice.'"
        return [dict(r) for r in self._table.query_entities(query, parameters={"pk": run_key(correlation_id)})]

    # -- events we refused --------------------------------------------------------------------

    def record_rejected(self, *, event_id: str | None, reason: str, raw: str) -> None:
        """Keep a refused event (and why) so nothing disappears without a record."""
        self.record_rejected_many([(event_id, reason, raw)])

    def record_rejected_many(self, refusals: Iterable[tuple[str | None, str, str]]) -> None:
        """Keep many refused events, (event id, reason, raw payload) each, 100 rows per
        transaction: a queue delivery of a thousand malformed events is ten writes, not a
        thousand. The same refusal twice is one row."""
        now = self._now()
        rows: dict[str, dict[str, Any]] = {}
        for event_id, reason, raw in refusals:
            key = digest(f"{event_id}|{raw}")
            rows[key] = {
                "PartitionKey": REJECTED_PARTITION, "RowKey": key,
                "EventId": truncate_utf16(event_id or "", _MAX_EVENT_ID),
                "Reason": text(reason), "Raw": truncate_utf16(raw, RAW_PAYLOAD_UNITS), "RejectedAt": now,
            }

        def upsert(chunk: list[dict[str, Any]]) -> None:
            if len(chunk) == 1:
                self._table.upsert_entity(chunk[0])
            else:
                self._table.submit_transaction([("upsert", row) for row in chunk], **_RESEND)

        for _ in self._in_order(upsert, _chunks(list(rows.values()))):
            pass


def _chunks(rows: list[Any], size: int = 100) -> list[list[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


__all__ = [
    "ALERTS_PARTITION",
    "PHASE_LEASE",
    "REJECTED_PARTITION",
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
]
