"""What the event-facing functions accept, refuse and record."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import HttpResponseError

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.edge.intake import accept_queue_delivery, accept_raw_event
from handlers.ledger import REJECTED_PARTITION, Ledger, run_key
from handlers.runtime import get_runtime
from tests.conftest import CONFIG_ID, SUB_A, SUB_B, make_event


def rejected_rows() -> list[dict[str, Any]]:
    table = get_runtime().clients.ledger_table()
    return list(table.query_entities("PartitionKey eq @pk", parameters={"pk": REJECTED_PARTITION}))


def queued_work(host: FunctionsHost) -> int:
    queue = host.queue(get_runtime().settings.work_queue)
    return int(queue.get_queue_properties().approximate_message_count)


def deliver_to_queue_function(host: FunctionsHost, body: bytes) -> None:
    """The events-queue function as the host calls it (raises if the invocation would fail)."""
    host.call("maintenance_events_queue", func.QueueMessage(id="m", body=body))


def refused_field(row: dict[str, Any]) -> str:
    """The field a refusal's reason names ("invalid maintenance event: <field>: <problem>")."""
    return str(row["Reason"]).split(": ", 2)[1]


def nested(depth: int) -> Any:
    leaf: Any = 1
    for _ in range(depth):
        leaf = [leaf]
    return leaf


class CountingTable:
    """The ledger's table, counting the writes that go to each partition (per kind of call)."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.writes: Counter[tuple[str, str]] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def upsert_entity(self, entity: Any, *args: Any, **kwargs: Any) -> Any:
        self.writes[("upsert_entity", entity["PartitionKey"])] += 1
        return self._table.upsert_entity(entity, *args, **kwargs)

    def create_entity(self, entity: Any, *args: Any, **kwargs: Any) -> Any:
        self.writes[("create_entity", entity["PartitionKey"])] += 1
        return self._table.create_entity(entity, *args, **kwargs)

    def submit_transaction(self, operations: Any, *args: Any, **kwargs: Any) -> Any:
        operations = list(operations)
        self.writes[("submit_transaction", operations[0][1]["PartitionKey"])] += 1
        return self._table.submit_transaction(operations, *args, **kwargs)


class FailingTable:
    """A ledger table whose service is down: every call fails as the SDK fails."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise HttpResponseError(message=f"{name}: the table service is unavailable")
        return fail


def test_malformed_event_is_refused_with_the_field_named(
    host: FunctionsHost, emulator: AzureEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    pre = make_event("pre")
    pre["data"]["correlationId"] = pre["data"]["correlationId"] + "/../../../virtualMachines/x"

    with caplog.at_level(logging.ERROR):
        host.deliver_event("pre_maintenance", pre)

    assert host.invocations[-1].succeeded, "a malformed event is acknowledged: retrying it cannot help"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("data.correlationId" in message for message in errors)
    assert queued_work(host) == 0
    assert emulator.requests == []
    rows = rejected_rows()
    assert len(rows) == 1 and "data.correlationId" in rows[0]["Reason"]


def test_unknown_event_type_is_ignored_with_a_warning(
    host: FunctionsHost, caplog: pytest.LogCaptureFixture
) -> None:
    event = make_event("pre")
    event["eventType"] = "Microsoft.Maintenance.SomethingNew"

    with caplog.at_level(logging.WARNING):
        host.deliver_event("pre_maintenance", event)

    assert host.invocations[-1].succeeded
    assert any("SomethingNew" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert queued_work(host) == 0


def test_allow_list_refuses_other_configurations(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = CONFIG_ID.replace("mc-weekly", "mc-allowed")
    monkeypatch.setenv("MAINTENANCE_ALLOWED_CONFIGURATION_IDS", other)

    host.deliver_event("pre_maintenance", make_event("pre"))

    assert queued_work(host) == 0
    assert "MAINTENANCE_ALLOWED_CONFIGURATION_IDS" in rejected_rows()[0]["Reason"]


@pytest.mark.parametrize("encoding", ["plain", "base64"])
@pytest.mark.parametrize("shape", ["object", "array"])
def test_events_delivered_to_a_storage_queue(
    host: FunctionsHost, emulator: AzureEmulator, encoding: str, shape: str
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-q", "vm-q", power_state="deallocated")
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(pre["data"]["correlationId"], [vm])
    text = json.dumps(pre if shape == "object" else [pre])
    body = base64.b64encode(text.encode()).decode() if encoding == "base64" else text

    host.call("maintenance_events_queue", func.QueueMessage(id="m1", body=body.encode()))
    host.run_queues()

    assert emulator.actions(vm) == ["start"]


def test_cloudevents_schema_is_handled_like_event_grid(host: FunctionsHost, emulator: AzureEmulator) -> None:
    vm = emulator.add_vm(SUB_A, "rg-ce", "vm-ce", power_state="stopped")
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(pre["data"]["correlationId"], [vm])
    cloud_event = {
        "specversion": "1.0", "id": pre["id"], "source": pre["topic"], "subject": pre["subject"],
        "type": pre["eventType"], "time": pre["eventTime"], "data": pre["data"],
    }

    host.deliver_event("pre_maintenance", cloud_event)
    host.run_queues()

    assert emulator.actions(vm) == ["start"]


def test_unreadable_queue_message_is_recorded_not_retried(host: FunctionsHost) -> None:
    host.call("maintenance_events_queue", func.QueueMessage(id="m2", body=b"definitely not an event"))

    rows = rejected_rows()
    assert len(rows) == 1 and "message" in rows[0]["Reason"]


@pytest.mark.parametrize(
    ("step", "field"), [({"step": "everything"}, "message.step"), ({"step": "lanes"}, "message.lanes"),
                        ({"step": "lanes", "lanes": "not-a-list"}, "message.lanes"),
                        ({"step": "lanes", "lanes": ["00000000-0000-0000-0000-0000000000ff"]}, "message.lanes")],
)
def test_a_work_message_with_an_unknown_step_is_recorded_not_retried(
    host: FunctionsHost, emulator: AzureEmulator, step: dict[str, Any], field: str
) -> None:
    from handlers.core.events import parse_event
    from handlers.core.work import Step, WorkMessage

    body = {**json.loads(WorkMessage(parse_event(make_event("pre")), Step.VERDICT).to_json()), **step}
    host.call("maintenance_worker", func.QueueMessage(id="m3", body=json.dumps(body).encode()))

    rows = rejected_rows()
    assert len(rows) == 1 and field in rows[0]["Reason"]
    assert emulator.requests == [], "nothing is done for a message we cannot read"


# --- contradictory, spoofed, oversized and pathological events ----------------------


def _with(kind: str, path: str, value: Any) -> dict[str, Any]:
    event = make_event(kind)
    *parents, leaf = path.split(".")
    target = event
    for key in parents:
        target = target[key]
    target[leaf] = value
    return event


def _later(event: dict[str, Any], key: str, delta: timedelta) -> str:
    from datetime import datetime
    moment = datetime.fromisoformat(event["data"][key].replace("Z", "+00:00")) + delta
    return moment.isoformat().replace("+00:00", "Z")


def _cutoff_after_start() -> dict[str, Any]:
    pre = make_event("pre")
    pre["data"]["cancellationCutOffDateTime"] = _later(pre, "startDateTime", timedelta(minutes=1))
    return pre


def _window_of_25_hours() -> dict[str, Any]:
    post = make_event("post")
    post["data"]["endDateTime"] = _later(post, "startDateTime", timedelta(hours=25))
    return post


OTHER_CONFIG = CONFIG_ID.replace("mc-weekly", "mc-other")
REFUSED_EVENTS = [
    pytest.param(_cutoff_after_start, "data.cancellationCutOffDateTime", id="cutoff-after-start"),
    pytest.param(_window_of_25_hours, "data.endDateTime", id="window-of-25-hours"),
    pytest.param(lambda: _with("pre", "topic", OTHER_CONFIG), "topic", id="topic-of-another-configuration"),
    pytest.param(lambda: _with("post", "topic", f"/subscriptions/{SUB_A}/resourceGroups/rg/providers/"
                               "Microsoft.EventGrid/topics/spoof"), "topic", id="post-from-a-custom-topic"),
    pytest.param(lambda: _with("pre", "id", "i" * 1025), "id", id="id-over-1024"),
    pytest.param(lambda: _with("pre", "subject", "s" * 2049), "subject", id="subject-over-2048"),
    pytest.param(lambda: _with("pre", "data.resourceSubscriptionIds",
                               [f"00000000-0000-0000-0000-{i:012x}" for i in range(1001)]),
                 "data.resourceSubscriptionIds", id="1001-subscriptions"),
    pytest.param(lambda: _with("pre", "data.padding", ["p" * 1000] * 70), "data", id="data-over-64-KiB"),
    pytest.param(lambda: _with("pre", "data.extra", nested(5000)), "data", id="data-nested-5000-levels"),
    pytest.param(lambda: _with("pre", "subject", nested(5000)), "subject", id="subject-nested-5000-levels"),
]


@pytest.mark.parametrize(("make", "field"), REFUSED_EVENTS)
def test_refused_event_is_recorded_with_the_field_and_acknowledged(
    host: FunctionsHost, emulator: AzureEmulator, caplog: pytest.LogCaptureFixture, make: Any, field: str
) -> None:
    event = make()
    function = "pre_maintenance" if event["eventType"].endswith("PreMaintenanceEvent") else "post_maintenance"

    with caplog.at_level(logging.ERROR):
        host.deliver_event(function, event)

    assert host.invocations[-1].succeeded, host.invocations[-1].error
    assert any(field in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    rows = rejected_rows()
    assert len(rows) == 1 and refused_field(rows[0]) == field
    assert len(rows[0]["Raw"]) <= 16_000
    assert queued_work(host) == 0
    assert emulator.requests == []


def test_cloudevents_source_that_is_not_the_configuration_is_refused(host: FunctionsHost) -> None:
    pre = make_event("pre")
    cloud_event = {
        "specversion": "1.0", "id": pre["id"], "source": OTHER_CONFIG, "subject": pre["subject"],
        "type": pre["eventType"], "time": pre["eventTime"], "data": pre["data"],
    }

    host.deliver_event("pre_maintenance", cloud_event)

    assert host.invocations[-1].succeeded
    assert [refused_field(row) for row in rejected_rows()] == ["source"]
    assert queued_work(host) == 0


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(b"[" * 20_000 + b"]" * 20_000, "nested deeper", id="nested-20000-levels"),
        pytest.param(base64.b64encode(b"[" * 5000 + b"]" * 5000), "nested deeper", id="nested-in-base64"),
        pytest.param(json.dumps([make_event("pre", run=f"202611220200{i:02d}") for i in range(60)]).encode(),
                     "64 KiB", id="over-64-KiB"),
    ],
)
def test_pathological_queue_body_is_recorded_not_raised(
    host: FunctionsHost, emulator: AzureEmulator, body: bytes, problem: str
) -> None:
    deliver_to_queue_function(host, body)

    rows = rejected_rows()
    assert len(rows) == 1 and refused_field(rows[0]) == "message" and problem in rows[0]["Reason"]
    assert rows[0]["Raw"] and len(rows[0]["Raw"]) <= 16_000
    assert queued_work(host) == 0 and emulator.requests == []


def test_refusal_of_an_id_that_is_not_valid_unicode_reaches_the_ledger(host: FunctionsHost) -> None:
    # JSON can escape a lone surrogate; Python decodes it into a str that UTF-8 cannot encode.
    deliver_to_queue_function(host, b'[{"id": "\\ud800-run", "eventType": 7}, {"id": "x", "data": "\\udc00"}]')

    rows = rejected_rows()
    assert sorted(refused_field(row) for row in rows) == ["eventType", "eventType"]
    assert sorted(row["EventId"] for row in rows) == ["x", "\ufffd-run"]


def test_an_event_grid_event_with_data_nested_beyond_the_encoder_is_recorded(host: FunctionsHost) -> None:
    pre = make_event("pre")
    pre["data"]["extra"] = nested(100_000)  # json.dumps raises RecursionError on this

    host.deliver_event("pre_maintenance", pre)

    assert host.invocations[-1].succeeded, host.invocations[-1].error
    rows = rejected_rows()
    assert len(rows) == 1 and refused_field(rows[0]) == "data"
    assert rows[0]["Raw"].startswith('{"id": "') and "nested deeper than 32 levels" in rows[0]["Raw"]


@pytest.mark.parametrize("ahead", [timedelta(hours=3), timedelta(days=8)], ids=["3-hours", "8-days"])
def test_pre_event_for_a_window_far_ahead_is_refused(
    host: FunctionsHost, emulator: AzureEmulator, ahead: timedelta
) -> None:
    pre = make_event("pre", cutoff_in=ahead - timedelta(minutes=10))

    host.deliver_event("pre_maintenance", pre)

    assert host.invocations[-1].succeeded
    rows = rejected_rows()
    assert len(rows) == 1 and refused_field(rows[0]) == "data.startDateTime" and "from now" in rows[0]["Reason"]
    assert queued_work(host) == 0 and emulator.requests == []


def test_pre_event_within_two_hours_of_its_window_is_accepted(host: FunctionsHost) -> None:
    pre = make_event("pre", cutoff_in=timedelta(minutes=100))  # the window starts in 1 h 50 min

    assert accept_raw_event(get_runtime(), pre) == "accepted"
    assert queued_work(host) == 1 and rejected_rows() == []


def test_ledger_failure_still_propagates_so_the_delivery_is_retried(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_runtime(), "ledger", Ledger(FailingTable()))

    host.deliver_event("pre_maintenance", _with("pre", "topic", OTHER_CONFIG))
    host.deliver_event("pre_maintenance", make_event("pre"))
    with pytest.raises(HttpResponseError):
        deliver_to_queue_function(host, b"[" * 20_000)

    assert [invocation.succeeded for invocation in host.invocations] == [False, False]
    assert all(isinstance(invocation.error, HttpResponseError) for invocation in host.invocations)


# --- pre events that come too late -------------------------------------------------


def _run_row(event: dict[str, Any]) -> dict[str, Any]:
    row = get_runtime().ledger.get_run(event["data"]["correlationId"])
    assert row is not None
    return dict(row)


def test_pre_event_after_its_window_began_starts_nothing(
    host: FunctionsHost, emulator: AzureEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-late", "vm-late", power_state="deallocated")
    pre = make_event("pre", cutoff_in=-timedelta(minutes=15))  # the window began 5 minutes ago
    emulator.add_run(pre["data"]["correlationId"], [vm])

    with caplog.at_level(logging.WARNING):
        host.deliver_event("pre_maintenance", pre)
        host.run_queues()

    assert host.invocations[0].succeeded
    assert queued_work(host) == 0 and emulator.requests == [] and rejected_rows() == []
    assert "window began" in _run_row(pre)["LatePreEvent"]
    phase = get_runtime().ledger.get_phase(pre["data"]["correlationId"], "pre")
    assert phase is not None and phase["Status"] == "completed"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(pre["data"]["correlationId"] in m and "MAINTENANCE ALERT late-pre-event" in m for m in errors)
    assert "late-pre-event" in get_runtime().ledger.list_alerts(pre["data"]["correlationId"])

    assert accept_raw_event(get_runtime(), pre) == "late", "a redelivery is still late"
    assert any("delivered again" in r.getMessage() for r in caplog.records)


def test_pre_event_after_the_runs_post_event_starts_nothing(host: FunctionsHost, emulator: AzureEmulator) -> None:
    post, pre = make_event("post"), make_event("pre")
    host.deliver_event("post_maintenance", post)
    assert queued_work(host) == 1

    assert accept_raw_event(get_runtime(), pre) == "late"

    assert queued_work(host) == 1, "only the post event's work"
    assert "post event" in _run_row(pre)["LatePreEvent"]
    assert emulator.requests == []


def test_pre_event_after_its_cutoff_but_before_its_window_still_goes_ahead(host: FunctionsHost) -> None:
    pre = make_event("pre", cutoff_in=-timedelta(minutes=2))  # the window starts in 8 minutes

    assert accept_raw_event(get_runtime(), pre) == "accepted"
    assert queued_work(host) == 1


# --- many malformed events in one delivery -------------------------------------------


def test_a_delivery_of_1500_malformed_events_is_recorded_in_batches(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = get_runtime()
    table = CountingTable(runtime.clients.ledger_table())
    monkeypatch.setattr(runtime, "ledger", Ledger(table))
    valid = make_event("pre", subscriptions=(SUB_A, SUB_B))
    events: list[Any] = [{"id": f"bad-{index:04d}"} for index in range(1500)]
    events.insert(700, valid)
    body = json.dumps(events, separators=(",", ":")).encode()

    started = time.monotonic()
    outcomes = accept_queue_delivery(runtime, body)
    seconds = time.monotonic() - started

    assert Counter(outcomes) == {"invalid": 1500, "accepted": 1}
    assert outcomes[700] == "accepted"
    rows = rejected_rows()
    assert len(rows) == 1500 and {refused_field(row) for row in rows} == {"eventType"}
    rejected_writes = {call: n for (call, partition), n in table.writes.items() if partition == REJECTED_PARTITION}
    assert rejected_writes == {"submit_transaction": 15}, "100 refusals per transaction"
    assert table.writes[("create_entity", run_key(valid["data"]["correlationId"]))] == 1
    assert queued_work(host) == 1 and emulator.requests == []
    print(f"1500 refusals and 1 accepted event from one delivery in {seconds:.2f} s")
