"""What the event-facing functions accept, refuse and record."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import azure.functions as func
import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.ledger import REJECTED_PARTITION
from handlers.runtime import get_runtime
from tests.conftest import CONFIG_ID, SUB_A, make_event


def rejected_rows() -> list[dict[str, Any]]:
    table = get_runtime().clients.ledger_table()
    return list(table.query_entities("PartitionKey eq @pk", parameters={"pk": REJECTED_PARTITION}))


def queued_work(host: FunctionsHost) -> int:
    queue = host.queue(get_runtime().settings.work_queue)
    return int(queue.get_queue_properties().approximate_message_count)


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

    function = host.functions["maintenance_events_queue"].get_user_function()
    function(func.QueueMessage(id="m1", body=body.encode()))
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
    function = host.functions["maintenance_events_queue"].get_user_function()
    function(func.QueueMessage(id="m2", body=b"definitely not an event"))

    rows = rejected_rows()
    assert len(rows) == 1 and "message" in rows[0]["Reason"]


@pytest.mark.parametrize(
    "step", [{"step": "everything"}, {"step": "lanes"}, {"step": "lanes", "lanes": "not-a-list"}],
)
def test_a_work_message_with_an_unknown_step_is_recorded_not_retried(
    host: FunctionsHost, emulator: AzureEmulator, step: dict[str, Any]
) -> None:
    from handlers.events import parse_event
    from handlers.lanes import step_message

    body = {**json.loads(step_message(parse_event(make_event("pre")), "verdict")), **step}
    host.functions["maintenance_worker"].get_user_function()(func.QueueMessage(id="m3", body=json.dumps(body).encode()))

    rows = rejected_rows()
    assert len(rows) == 1 and "message.step" in rows[0]["Reason"]
    assert emulator.requests == [], "nothing is done for a message we cannot read"
