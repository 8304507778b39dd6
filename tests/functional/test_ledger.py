"""Ledger semantics against a real Azurite table: claims, duplicates, first sightings."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from emulator.azurite import Azurite
from handlers.core.events import parse_event
from handlers.ledger import (
    PHASE_LEASE,
    AcceptOutcome,
    LeaseLostError,
    Ledger,
    MachineRecord,
    PhaseBusy,
    PhaseClaim,
    PhaseStatus,
)
from tests.conftest import make_event
from tools.memory_table import MemoryTable

VM = ("/subscriptions/00000000-0000-0000-0000-00000000000a/resourceGroups/rg/providers/"
      "Microsoft.Compute/virtualMachines/vm1")


@pytest.fixture(params=["azurite", "memory"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """The same semantics from a real Azurite table and from the rehearsal CLI's in-memory one."""
    if request.param == "memory":
        return Ledger(MemoryTable())
    azurite: Azurite = request.getfixturevalue("azurite")
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    return Ledger(service.create_table(f"Ledger{uuid.uuid4().hex[:12]}"))


def test_first_delivery_is_new_then_resend_until_queued_then_duplicate(ledger: Ledger) -> None:
    event = parse_event(make_event("pre"))
    assert ledger.accept_event(event) is AcceptOutcome.NEW
    assert ledger.accept_event(event) is AcceptOutcome.RESEND  # work message may never have gone out
    ledger.mark_queued(event.correlation_id, "pre")
    assert ledger.accept_event(event) is AcceptOutcome.DUPLICATE


def test_only_one_worker_gets_the_phase(ledger: Ledger) -> None:
    event = parse_event(make_event("pre"))
    ledger.accept_event(event)
    first = ledger.claim_phase(event.correlation_id, "pre")
    second = ledger.claim_phase(event.correlation_id, "pre")
    assert isinstance(first, PhaseClaim) and isinstance(second, PhaseBusy)
    assert second.lease_until == first.lease_until, "the busy answer says until when the lease holds"
    ledger.finish_phase(first, summary={"ok": True})
    assert ledger.claim_phase(event.correlation_id, "pre") is None, "a completed phase is never run again"


def test_queued_mark_never_overrides_a_running_claim(ledger: Ledger) -> None:
    event = parse_event(make_event("pre"))
    ledger.accept_event(event)
    assert ledger.claim_phase(event.correlation_id, "pre") is not None
    ledger.mark_queued(event.correlation_id, "pre")
    assert ledger.get_phase(event.correlation_id, "pre")["Status"] == "running"  # type: ignore[index]


def test_a_released_or_stale_claim_can_be_taken_again(ledger: Ledger) -> None:
    event = parse_event(make_event("pre"))
    ledger.accept_event(event)
    claim = ledger.claim_phase(event.correlation_id, "pre")
    assert isinstance(claim, PhaseClaim)
    ledger.release_phase(claim, error="boom")
    retry = ledger.claim_phase(event.correlation_id, "pre")
    assert isinstance(retry, PhaseClaim) and retry.attempt == 2
    later = datetime.now(UTC) + PHASE_LEASE + timedelta(seconds=1)
    takeover = ledger.claim_phase(event.correlation_id, "pre", now=later)
    assert isinstance(takeover, PhaseClaim) and takeover.attempt == 3


def test_a_renewed_claim_holds_and_a_taken_over_one_can_neither_release_nor_finish(ledger: Ledger) -> None:
    event = parse_event(make_event("pre"))
    ledger.accept_event(event)
    lease = timedelta(seconds=30)
    claim = ledger.claim_phase(event.correlation_id, "pre", lease=lease)
    assert isinstance(claim, PhaseClaim)
    renewed = ledger.renew_claim(claim, lease=timedelta(minutes=5), values={"FallbackQueuedAt": datetime.now(UTC)})
    assert renewed.lease_until > claim.lease_until and renewed.etag != claim.etag
    busy = ledger.claim_phase(event.correlation_id, "pre", now=datetime.now(UTC) + lease + timedelta(seconds=1))
    assert isinstance(busy, PhaseBusy), "the renewal moved the lease on: no takeover at the old expiry"
    assert ledger.get_phase(event.correlation_id, "pre")["FallbackQueuedAt"] is not None  # type: ignore[index]

    takeover = ledger.claim_phase(event.correlation_id, "pre", now=datetime.now(UTC) + timedelta(minutes=6))
    assert isinstance(takeover, PhaseClaim) and takeover.attempt == 2
    for lost in (lambda: ledger.release_phase(renewed, error="late"), lambda: ledger.renew_claim(renewed),
                 lambda: ledger.finish_phase(renewed, summary={})):
        with pytest.raises(LeaseLostError):
            lost()
    assert ledger.get_phase(event.correlation_id, "pre")["Status"] == "running"  # type: ignore[index]
    ledger.finish_phase(takeover, summary={"ok": True}, status=PhaseStatus.DISPATCHED)
    assert ledger.claim_phase(event.correlation_id, "pre") is None, "a dispatched phase is finished by others"


def test_first_sighting_of_a_machine_is_kept(ledger: Ledger) -> None:
    run = parse_event(make_event("pre")).correlation_id
    first = MachineRecord(resource_id=VM, kind="vm", original_power_state="deallocated", pre_action="start")
    ledger.add_rows(run, [first])
    again = replace(first, original_power_state="running", pre_action="none")
    stored = ledger.add_rows(run, [again])
    assert stored[0].original_power_state == "deallocated"
    assert [r.original_power_state for r in ledger.list_machines(run)] == ["deallocated"]


def test_many_machines_are_written_in_batches(ledger: Ledger) -> None:
    run = parse_event(make_event("pre")).correlation_id
    records = [MachineRecord(resource_id=f"{VM}{i}", kind="vm", original_power_state="stopped") for i in range(250)]
    ledger.add_rows(run, records)
    ledger.save_rows(run, [replace(r, pre_outcome="succeeded") for r in records])
    rows = ledger.list_machines(run)
    assert len(rows) == 250 and {r.pre_outcome for r in rows} == {"succeeded"}


def test_rows_are_handed_back_in_order_each_chunk_once_it_is_stored(ledger: Ledger) -> None:
    run = parse_event(make_event("pre")).correlation_id
    records = [MachineRecord(resource_id=f"{VM}{i:03d}", kind="vm") for i in range(450)]
    handed: list[str] = []
    for chunk in ledger.add_rows_in_order(run, records):
        stored = {r.resource_id for r in ledger.list_machines(run)}
        assert {r.resource_id for r in chunk} <= stored, "a chunk is handed out only once it is in the table"
        handed += [r.resource_id for r in chunk]
    assert handed == [r.resource_id for r in records]
