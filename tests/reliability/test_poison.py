"""Messages that failed on every attempt end in `<queue>-poison`: each is alerted and recorded,
and what can still be saved is saved."""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import timedelta

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.core.events import parse_event
from handlers.core.ids import subscription_of
from handlers.core.work import Step, WorkMessage
from handlers.ledger import ALERTS_PARTITION, MachineRecord
from handlers.ledger.alerts import ALERT_MARKER
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, make_event
from tests.reliability.conftest import run_of


def poison(host: FunctionsHost, queue: str, body: str) -> None:
    host.queue(f"{queue}-poison").send_message(base64.b64encode(body.encode()).decode())


def alert_rows() -> list[dict[str, object]]:
    table = get_runtime().clients.ledger_table()
    return list(table.query_entities("PartitionKey eq @pk", parameters={"pk": ALERTS_PARTITION}))


def test_an_unreadable_poison_message_is_alerted_and_recorded(
    host: FunctionsHost, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        poison(host, get_runtime().settings.work_queue, '{"version": 7, "secret": "x"}')
        host.run_queues()

    assert [i.function for i in host.invocations] == ["maintenance_work_poison"]
    assert all(i.succeeded for i in host.invocations)
    rows = alert_rows()
    assert len(rows) == 1 and rows[0]["Kind"] == "poison-message" and "message.version" in str(rows[0]["Message"])
    assert any(f"{ALERT_MARKER} poison-message" in r.getMessage() for r in caplog.records)


def test_a_poisoned_post_phase_names_the_vms_we_started_that_may_still_run(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-p", "started-01", power_state="running")
    post = make_event("post", subscriptions=(SUB_A,))
    ledger = get_runtime().ledger
    ledger.add_rows(run_of(post), [MachineRecord(
        resource_id=vm, kind="vm", subscription_id=SUB_A, resource_group="rg-p", name="started-01",
        original_power_state="deallocated", pre_action="start", pre_outcome="succeeded", lane=subscription_of(vm))])

    poison(host, get_runtime().settings.work_queue, WorkMessage(parse_event(post)).to_json())
    host.run_queues()

    alerts = ledger.list_alerts(run_of(post))
    assert {"poison-message", "left-running"} <= set(alerts)
    assert vm in str(alerts["left-running"]["Message"])
    run = ledger.get_run(run_of(post)) or {}
    assert run.get("PostEndedHow") == "failed"
    assert str(run.get("ReportUrl")).endswith("/report.html"), "the report is written all the same"
    container = get_runtime().clients.blob_container(get_runtime().settings.report_container)
    name = str(run["ReportUrl"]).split(f"/{container.container_name}/", 1)[1].replace(".html", ".json")
    report = json.loads(container.download_blob(name).readall())
    assert report["run"]["step_errors"] == {"post phase": "ended before its report (failed)"}
    assert [m["name"] for m in report["machines"]] == ["started-01"]


def test_a_poisoned_pre_phase_still_gets_its_verdict_before_the_cutoff(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_CUTOFF_SAFETY_SECONDS", "4")
    vm = emulator.add_vm(SUB_A, "rg-p", "never-started", power_state="deallocated")
    pre = make_event("pre", subscriptions=(SUB_A,), cutoff_in=timedelta(seconds=6))
    emulator.add_run(run_of(pre), [vm])
    host.deliver_event("pre_maintenance", pre)
    work = get_runtime().settings.work_queue
    host.queue(work).clear_messages()  # its work message failed on every attempt, before queueing anything

    poison(host, work, WorkMessage(parse_event(pre)).to_json())
    host.run_queues()  # the poison handler queues the verdict for the deadline
    assert emulator.run_status(run_of(pre)) != "Cancelled"
    time.sleep(3)
    host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled", "the VM was never started: the verdict cancels"
    assert emulator.actions(vm) == []
    run = get_runtime().ledger.get_run(run_of(pre))
    assert run is not None and f"{vm}: not running: not recorded" in run["FailingReasons"]
    assert run["PreEndedHow"] == "verdict", "the fallback verdict ended the pre phase"


def test_a_poisoned_verdict_fails_closed_at_once(host: FunctionsHost, emulator: AzureEmulator) -> None:
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [])
    host.deliver_event("pre_maintenance", pre)
    host.queue(get_runtime().settings.work_queue).clear_messages()

    verdict = WorkMessage(parse_event(pre), Step.VERDICT)
    poison(host, get_runtime().settings.work_queue, verdict.to_json())
    host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled"
    run = get_runtime().ledger.get_run(run_of(pre))
    assert run is not None and run["CancelOutcome"] == "accepted" and "every attempt" in run["Unchecked"]
    assert run["PreEndedHow"] == "failed-closed"


def test_a_poisoned_event_delivery_is_alerted_and_accepted_once_more(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-p", "from-poison", power_state="stopped")
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [vm])

    poison(host, get_runtime().settings.events_queue, json.dumps(pre))
    host.run_queues()

    assert emulator.vm_power_state(vm) == "PowerState/running", "the storage outage is over: the run goes ahead"
    assert any(row["Kind"] == "poison-message" for row in alert_rows())
