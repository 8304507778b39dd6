"""Phase rows: a run's phases (`phase-pre`, `phase-post`, `phase-pre-lane-<hash>`,
`phase-pre-verdict`), who holds each (a claim with a lease), and how each ended. Every write of
a claimed row is conditional on the claim's ETag."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from handlers.core.bounds import TABLE_TEXT_UNITS, truncate_utf16
from handlers.core.events import MaintenanceEvent
from handlers.core.keys import run_key
from handlers.ledger.records import LedgerTable

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
    CONTINUED = "continued"  # handed on to a work message that resumes at a later step (`Resume`)
    DISPATCHED = "dispatched"  # split into queue messages of its own; the verdict completes it
    COMPLETED = "completed"


class AcceptOutcome(StrEnum):
    NEW = "new"
    RESEND = "resend"  # seen before, but its work message may never have been sent
    DUPLICATE = "duplicate"


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


class PhaseRows:
    """The phase rows of the ledger (a part of `Ledger`)."""

    _table: LedgerTable
    _now: Callable[[], datetime]

    def accept_event(self, event: MaintenanceEvent, *, now: datetime | None = None) -> AcceptOutcome:
        """Record the run and its phase; tell a first delivery from a redelivery."""
        now = now or self._now()
        partition = run_key(event.correlation_id)
        run: dict[str, Any] = {
            "PartitionKey": partition,
            "RowKey": "run",
            "CorrelationId": event.correlation_id,
            "MaintenanceConfigurationId": event.maintenance_configuration_id,
            "SubscriptionIds": text(",".join(event.subscription_ids)),
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
                {"PartitionKey": partition, "RowKey": row, "Status": PhaseStatus.QUEUED.value, "QueuedAt": self._now()},
                mode=UpdateMode.MERGE, etag=existing.metadata["etag"], match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            pass

    def claim_phase(
        self, correlation_id: str, phase: str, *, lease: timedelta = PHASE_LEASE, now: datetime | None = None
    ) -> PhaseClaim | PhaseBusy | None:
        """Take the phase for this worker: a PhaseClaim; PhaseBusy while another worker's lease
        is live; None when the phase is done (or handed on to messages of its own)."""
        now = now or self._now()
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
        held_until = live_lease(existing, now)
        if held_until is not None:
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
        until = self._now() + lease
        update = {"PartitionKey": claim.partition, "RowKey": f"phase-{claim.phase}", "LeaseUntil": until,
                  **(values or {})}
        meta = self._conditional(claim, update)
        return replace(claim, etag=meta["etag"], lease_until=until, row=dict(claim.row) | update)

    def finish_phase(self, claim: PhaseClaim, *, summary: Mapping[str, Any],
                     status: PhaseStatus = PhaseStatus.COMPLETED) -> None:
        """The phase is done (or, DISPATCHED, handed on to messages of its own)."""
        self._conditional(claim, {
            "PartitionKey": claim.partition, "RowKey": f"phase-{claim.phase}",
            "Status": status.value, "FinishedAt": self._now(),
            "Summary": text(json.dumps(summary, default=str, sort_keys=True)),
        })

    def complete_phase(self, correlation_id: str, phase: str, *, summary: Mapping[str, Any]) -> None:
        """Complete a phase whatever claims it (the verdict completes the pre phase it decided)."""
        self._table.upsert_entity({
            "PartitionKey": run_key(correlation_id), "RowKey": f"phase-{phase}",
            "Status": PhaseStatus.COMPLETED.value, "FinishedAt": self._now(),
            "Summary": text(json.dumps(summary, default=str, sort_keys=True)),
        }, mode=UpdateMode.MERGE)

    def release_phase(self, claim: PhaseClaim, *, error: str, status: PhaseStatus = PhaseStatus.RETRYING,
                      resume: str = "") -> None:
        """The worker failed (the queue message will come back and may claim the phase again),
        or (CONTINUED) handed the phase on to a message that resumes at step `resume`."""
        values: dict[str, Any] = {"PartitionKey": claim.partition, "RowKey": f"phase-{claim.phase}",
                                  "Status": status.value, "ReleasedAt": self._now()}
        if error:
            values["LastError"] = text(error)
        if resume:
            values["Resume"] = resume
        self._conditional(claim, values)

    def _conditional(self, claim: PhaseClaim, update: dict[str, Any]) -> Any:
        try:
            return self._table.update_entity(update, mode=UpdateMode.MERGE, etag=claim.etag,
                                             match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as exc:
            raise LeaseLostError(f"phase {claim.phase} was taken over by another worker") from exc

    def record_late_pre(self, event: MaintenanceEvent, reason: str) -> bool:
        """A pre event that came too late to act on (its window has begun, or the run's post is
        recorded): the pre phase is recorded as completed with nothing done, so a post event never
        waits for it, and the run row says why. False, recording nothing, when the pre phase was
        recorded already (a redelivery of an event we had in time)."""
        partition = run_key(event.correlation_id)
        try:
            self._table.create_entity({
                "PartitionKey": partition, "RowKey": "phase-pre", "Status": PhaseStatus.COMPLETED.value,
                "EventId": truncate_utf16(event.event_id, _MAX_EVENT_ID), "ReceivedAt": self._now(),
                "FinishedAt": self._now(), "Attempts": 0,
                "Summary": text(json.dumps({"late": reason, "machines": 0}, sort_keys=True)),
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

    def get_phase(self, correlation_id: str, phase: str) -> dict[str, Any] | None:
        return self._get(run_key(correlation_id), f"phase-{phase}")

    def update_run(self, correlation_id: str, values: Mapping[str, Any]) -> None:
        entity = {"PartitionKey": run_key(correlation_id), "RowKey": "run"}
        entity.update({k: text(v) if isinstance(v, str) else v for k, v in values.items()})
        self._table.upsert_entity(entity, mode=UpdateMode.MERGE)

    def _get(self, partition: str, row: str) -> Any:
        try:
            return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None


def live_lease(row: Mapping[str, Any], now: datetime) -> datetime | None:
    """When the live claim on a phase row ends; None when no worker holds the phase now."""
    if row.get("Status") != PhaseStatus.RUNNING.value:
        return None
    until = _lease_until(row)
    return until if until is not None and now < until else None


def _lease_until(row: Mapping[str, Any]) -> datetime | None:
    until = row.get("LeaseUntil")
    if isinstance(until, datetime):
        return until
    claimed = row.get("ClaimedAt")
    return claimed + _LEGACY_LEASE if isinstance(claimed, datetime) else None


def text(value: str) -> str:
    """A string property as Table storage takes it (64 KiB of UTF-16)."""
    return truncate_utf16(value, TABLE_TEXT_UNITS)
