"""The central side of the Scheduled Events agent: forwarded changes recorded in a real Azurite ledger.

Events are built as the Functions host hands them to an Event Grid trigger (`func.CloudEvent`,
or `func.EventGridEvent` for the Event Grid schema) and passed to `record_platform_event`, which
the `scheduled_event` function calls.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from emulator.functions_host import FunctionsHost
from handlers.edge.platform_events import list_platform_events, platform_row_key, record_platform_event
from handlers.runtime import get_runtime
from tests.agent.conftest import FakeMonotonic, recording_hook, settle
from tests.agent.fakes import EventGridServer, ScheduledEventsServer

VM = "web-01"
EVENT_ID = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def forwarded(change: str, at: datetime, *, first_seen: datetime = T0, status: str = "Scheduled", vm: str = VM,
              event_id: str = EVENT_ID, event_type: str = "Reboot", hook_results: list[dict[str, Any]] | None = None,
              incarnation: int = 2) -> dict[str, Any]:
    """A change as the agent publishes it (CloudEvents 1.0 JSON)."""
    data: dict[str, Any] = {
        "change": change, "vmName": vm, "eventId": event_id, "observedAt": at.isoformat(),
        "firstSeenAt": first_seen.isoformat(), "documentIncarnation": incarnation,
        "event": {"EventId": event_id, "EventType": event_type, "ResourceType": "VirtualMachine",
                  "Resources": [vm, "web-02"], "EventStatus": status,
                  "NotBefore": "Mon, 02 Nov 2026 10:15:00 GMT" if status == "Scheduled" else "",
                  "Description": "Host server is undergoing maintenance.", "EventSource": "Platform",
                  "DurationInSeconds": -1},
    }
    if hook_results is not None:
        data["hookResults"] = hook_results
    kind = "".join(part.capitalize() for part in change.split("-"))
    return {"specversion": "1.0", "id": f"{change}-{at.timestamp()}", "source": f"/vms/{vm}",
            "type": f"Azure.ScheduledEvents.{kind}", "subject": event_id, "time": at.isoformat(), "data": data}


def as_delivered(raw: dict[str, Any]) -> func.CloudEvent:
    """What the Functions host hands an Event Grid trigger for a CloudEvents delivery."""
    return func.CloudEvent(id=raw["id"], source=raw["source"], type=raw["type"], specversion=raw["specversion"],
                           data=raw.get("data"), time=datetime.fromisoformat(raw["time"]), subject=raw.get("subject"))


def deliver(raw: dict[str, Any]) -> None:
    record_platform_event(get_runtime(), as_delivered(raw))


def platform_rows() -> list[dict[str, Any]]:
    table = get_runtime().clients.ledger_table()
    return [dict(row) for row in table.query_entities("PartitionKey ge 'platform-' and PartitionKey lt 'platform.'")]


def only_row() -> dict[str, Any]:
    [row] = platform_rows()
    return row


LIFECYCLE = [
    forwarded("new", T0),
    forwarded("hook-succeeded", T0 + timedelta(seconds=5),
              hook_results=[{"name": "drain", "status": "succeeded", "exitCode": 0}]),
    forwarded("approved", T0 + timedelta(seconds=6)),
    forwarded("started", T0 + timedelta(seconds=8), status="Started"),
    forwarded("vanished", T0 + timedelta(seconds=308), status="Started"),
]


def test_one_row_per_vm_and_event_from_first_sighting_to_the_end(
    host: FunctionsHost, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="maintenance.platform"):
        for raw in LIFECYCLE:
            deliver(raw)

    row = only_row()
    assert row["PartitionKey"] == "platform-2026-11"
    assert row["RowKey"] == f"web-01_{EVENT_ID.lower()}"
    assert (row["VmName"], row["EventId"], row["EventType"], row["EventSource"]) == (
        VM, EVENT_ID, "Reboot", "Platform")
    assert row["Resources"] == "web-01,web-02"
    assert row["FirstSeenAt"] == T0
    assert row["ApprovedAt"] == T0 + timedelta(seconds=6)
    assert row["StartedAt"] == T0 + timedelta(seconds=8)
    assert row["VanishedAt"] == T0 + timedelta(seconds=308)
    assert row["DurationSeconds"] == 300
    assert (row["LastChange"], row["HookOutcome"], row["HookFailures"]) == ("vanished", "succeeded", "")
    lines = [r for r in caplog.records if r.name == "maintenance.platform"]
    assert len(lines) == 5
    assert all(f"[{VM}/{EVENT_ID}]" in r.getMessage() for r in lines)
    assert all((r.vm_name, r.event_id) == (VM, EVENT_ID) for r in lines)  # type: ignore[attr-defined]
    assert "over after 300 s" in lines[-1].getMessage()


def test_redelivered_and_out_of_order_changes_end_in_the_same_row(host: FunctionsHost) -> None:
    for raw in LIFECYCLE:
        deliver(raw)
    in_order = only_row()

    table = get_runtime().clients.ledger_table()
    table.delete_entity(in_order["PartitionKey"], in_order["RowKey"])
    for index in (4, 3, 0, 2, 4, 1, 3, 0):  # vanished first, then each of the others, some twice
        deliver(LIFECYCLE[index])

    shuffled = only_row()
    for column in ("FirstSeenAt", "StartedAt", "ApprovedAt", "VanishedAt", "DurationSeconds", "LastChange",
                   "LastChangeAt", "HookOutcome", "EventStatus", "Resources"):
        assert shuffled[column] == in_order[column], column


def test_without_a_start_sighting_the_duration_runs_from_first_sighting(host: FunctionsHost) -> None:
    deliver(forwarded("new", T0, event_type="Freeze"))
    deliver(forwarded("vanished", T0 + timedelta(seconds=42), event_type="Freeze"))
    row = only_row()
    assert row["DurationSeconds"] == 42 and "StartedAt" not in row


def test_hook_failures_are_recorded_and_logged(host: FunctionsHost, caplog: pytest.LogCaptureFixture) -> None:
    deliver(forwarded("new", T0))
    with caplog.at_level(logging.WARNING, logger="maintenance.platform"):
        deliver(forwarded("hook-failed", T0 + timedelta(seconds=3), hook_results=[
            {"name": "drain", "status": "failed", "exitCode": 3}, {"name": "stop", "status": "skipped"}]))
    row = only_row()
    assert (row["HookOutcome"], row["HookFailures"]) == ("failed", "drain: failed (exit 3)")
    assert f"[{VM}/{EVENT_ID}] Reboot: hooks failed on the VM: drain: failed (exit 3)" in caplog.text


def test_end_hook_outcomes_are_recorded_beside_the_start_hooks(
    host: FunctionsHost, caplog: pytest.LogCaptureFixture
) -> None:
    deliver(forwarded("new", T0))
    deliver(forwarded("hook-succeeded", T0 + timedelta(seconds=3)))
    deliver(forwarded("vanished", T0 + timedelta(seconds=60)))
    with caplog.at_level(logging.WARNING, logger="maintenance.platform"):
        deliver(forwarded("end-hook-failed", T0 + timedelta(seconds=70), hook_results=[
            {"name": "start-app", "status": "failed", "exitCode": 1}]))
    row = only_row()
    assert (row["HookOutcome"], row["EndHookOutcome"]) == ("succeeded", "failed")
    assert row["EndHookFailures"] == "start-app: failed (exit 1)" and row["LastChange"] == "end-hook-failed"
    assert f"[{VM}/{EVENT_ID}] Reboot: end hooks failed on the VM: start-app: failed (exit 1)" in caplog.text
    deliver(forwarded("end-hook-succeeded", T0 + timedelta(seconds=80)))
    assert only_row()["EndHookOutcome"] == "succeeded"


def test_the_event_grid_schema_is_accepted_too(host: FunctionsHost) -> None:
    raw = forwarded("new", T0)
    event = func.EventGridEvent(id=raw["id"], data=raw["data"], topic="/subscriptions/s/topics/se", subject=EVENT_ID,
                                event_type=raw["type"], event_time=T0, data_version="1.0")
    record_platform_event(get_runtime(), event)
    assert only_row()["LastChange"] == "new"


def test_a_change_first_seen_last_month_stays_in_last_months_partition(host: FunctionsHost) -> None:
    first_seen = datetime(2026, 10, 31, 23, 55, tzinfo=UTC)
    deliver(forwarded("new", first_seen, first_seen=first_seen))
    deliver(forwarded("vanished", first_seen + timedelta(minutes=10), first_seen=first_seen))
    row = only_row()
    assert row["PartitionKey"] == "platform-2026-10" and row["DurationSeconds"] == 600


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda raw: raw.update(type="Microsoft.Maintenance.PreMaintenanceEvent"), "type"),
    (lambda raw: raw["data"].pop("vmName"), "data.vmName"),
    (lambda raw: raw["data"].update(change="exploded"), "data.change"),
    (lambda raw: raw["data"].update(observedAt="yesterday"), "data.observedAt"),
    (lambda raw: raw["data"].update(event="Reboot"), "data.event"),
    (lambda raw: raw.update(data="not json"), "data"),
])
def test_a_malformed_forwarded_event_is_logged_and_dropped(
    host: FunctionsHost, caplog: pytest.LogCaptureFixture, mutate: Any, field: str
) -> None:
    raw = forwarded("new", T0)
    mutate(raw)
    with caplog.at_level(logging.ERROR, logger="maintenance.platform"):
        deliver(raw)  # no exception: Event Grid must not retry it
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert f"{field}:" in line.getMessage()
    assert EVENT_ID in line.getMessage()
    assert platform_rows() == []


def test_which_vms_had_platform_maintenance_this_week(host: FunctionsHost) -> None:
    since, until = datetime(2026, 10, 29, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC)
    sightings = {
        "before-the-week": datetime(2026, 10, 20, 8, 0, tzinfo=UTC),
        "end-of-october": datetime(2026, 10, 30, 22, 0, tzinfo=UTC),
        "start-of-november": datetime(2026, 11, 2, 3, 0, tzinfo=UTC),
        "after-the-week": datetime(2026, 11, 6, 1, 0, tzinfo=UTC),
    }
    for vm, first_seen in sightings.items():
        deliver(forwarded("new", first_seen, first_seen=first_seen, vm=vm, event_id=f"id-{vm}"))
        deliver(forwarded("vanished", first_seen + timedelta(minutes=7), first_seen=first_seen, vm=vm,
                          event_id=f"id-{vm}"))

    rows = list_platform_events(get_runtime().clients.ledger_table(), since, until)
    assert [(r["VmName"], r["DurationSeconds"]) for r in rows] == [("end-of-october", 420),
                                                                   ("start-of-november", 420)]


def test_row_keys_are_table_safe() -> None:
    assert platform_row_key("Web/01#a?b\\c", "ID\t1") == "web-01-a-b-c_id-1"


def test_changes_published_by_the_real_agent_are_recorded(
    host: FunctionsHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's CloudEvents, as the fake topic received them, recorded centrally: the two sides agree.

    (tests.agent.conftest, imported above, puts agent/src on sys.path.)
    """
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the Event Grid client honours proxy variables
    from scheduled_events_agent.agent import Agent
    from scheduled_events_agent.config import parse_config

    imds, topic = ScheduledEventsServer(vm_name="web-01"), EventGridServer()
    key_file = tmp_path / "key"
    key_file.write_text(topic.key)
    agent = Agent(parse_config({
        "state_dir": str(tmp_path / "state"), "scheduled_events_url": imds.url,
        "instance_metadata_url": imds.instance_url, "http_timeout_seconds": 1, "first_poll_timeout_seconds": 1,
        "events": {"Reboot": {"hooks": [recording_hook(tmp_path / "calls.jsonl")], "approval": "approve"}},
        "forwarding": {"endpoint": topic.endpoint, "auth": "key", "key_file": str(key_file)},
    }), monotonic=FakeMonotonic())
    try:
        event_id = imds.add_event("Reboot", resources=["web-01", "web-02"])
        settle(agent, lambda: agent.state.events[event_id].status == "Started")  # approved, so started
        imds.remove(event_id)
        settle(agent, lambda: not agent.forwarder.pending)
    finally:
        agent.close()
        imds.close()
        topic.close()

    for raw in topic.received:
        deliver(raw)
    row = only_row()
    assert [t for _, t in topic.types()] == ["New", "HookSucceeded", "Approved", "Started", "Vanished"]
    assert (row["VmName"], row["EventId"], row["LastChange"], row["HookOutcome"]) == (
        "web-01", event_id, "vanished", "succeeded")
    assert row["FirstSeenAt"] <= row["ApprovedAt"] <= row["StartedAt"] <= row["VanishedAt"]
    assert row["DurationSeconds"] >= 0


def test_the_registered_scheduled_event_function_records_what_it_is_given(host: FunctionsHost) -> None:
    """Through the function app as the host invokes it, not just the handler."""
    for raw in LIFECYCLE:
        host.deliver_event("scheduled_event", raw)

    assert all(i.succeeded for i in host.invocations if i.function == "scheduled_event")
    row = only_row()
    assert row["VmName"] == VM and row["EventType"] == "Reboot"
