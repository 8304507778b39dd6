"""Storage failing between the app and Azurite (through a fault-injecting proxy): the work queue
failing as the worker queues its fallback verdict, the ledger failing right after a claim, and
the queue unreachable while an Event Grid delivery is being acknowledged."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from azure.data.tables import TableServiceClient

from emulator import AzureEmulator
from emulator.azurite import Azurite
from emulator.functions_host import FunctionsHost
from emulator.storage_faults import StorageFaultProxy
from handlers import runtime
from handlers.core.events import parse_event
from handlers.core.work import Step, WorkMessage, send_work
from handlers.ledger import Ledger
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, SUB_B, make_event
from tests.reliability.conftest import run_of


def azurite_ledger(azurite: Azurite) -> Ledger:
    """The ledger read straight from Azurite, past the proxy (the test's own reads must not fail)."""
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    return Ledger(service.get_table_client(get_runtime().settings.ledger_table))


@pytest.fixture
def proxy(azurite: Azurite, host: FunctionsHost, emulator: AzureEmulator,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[StorageFaultProxy]:
    """The app's storage (AzureWebJobsStorage) behind the proxy; the host stand-in's own queue
    calls go to Azurite directly, as the real host's would go on while the app's fail."""
    with StorageFaultProxy(azurite) as faults:
        monkeypatch.setenv("AzureWebJobsStorage", faults.connection_string)
        runtime.configure(transport=emulator.transport(), clock=emulator.clock)
        yield faults


def test_the_work_queue_failing_as_the_fallback_is_queued_does_not_stop_the_phase(
    host: FunctionsHost, emulator: AzureEmulator, proxy: StorageFaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    vms = [emulator.add_vm(SUB_A, "rg-q", f"vm{i}", power_state="deallocated") for i in range(3)]
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), vms)
    host.deliver_event("pre_maintenance", pre)
    work = get_runtime().settings.work_queue
    rule = proxy.fail("queue", method="POST", path_contains=f"/{work}/messages", status=503)  # sends fail

    with caplog.at_level(logging.WARNING):
        host.run_queues()

    assert rule.fired >= 1, "the fallback verdict's send was refused"
    assert all(emulator.vm_power_state(vm) == "PowerState/running" for vm in vms)
    ledger = get_runtime().ledger
    phase = ledger.get_phase(run_of(pre), "pre")
    assert phase is not None and phase["Status"] == "completed" and phase["Attempts"] == 1
    assert ledger.get_run(run_of(pre))["Verdict"] == "ready"  # type: ignore[index]
    assert any("could not queue the fallback verdict" in r.getMessage() for r in caplog.records)


def test_the_ledger_failing_right_after_the_claim_leaves_nothing_stuck(
    host: FunctionsHost, emulator: AzureEmulator, proxy: StorageFaultProxy, azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAINTENANCE_LEASE_SECONDS", "6")
    host.retry_visibility = 3  # host.json says 30 s; a failed message comes back after that
    vms = [emulator.add_vm(SUB_A, "rg-t", f"vm{i}", power_state="stopped") for i in range(3)]
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), vms)
    host.deliver_event("pre_maintenance", pre)

    def table_down_once_discovery_starts() -> None:
        while not emulator.requests:  # the worker has claimed the phase and asks Resource Graph
            time.sleep(0.005)
        proxy.fail("table", status=503, seconds=8)  # the release fails too: only the lease frees the phase

    trigger = threading.Thread(target=table_down_once_discovery_starts, daemon=True)
    trigger.start()
    ledger = azurite_ledger(azurite)
    finish_by = time.monotonic() + 60
    while (ledger.get_phase(run_of(pre), "pre") or {}).get("Status") != "completed":
        assert time.monotonic() < finish_by, "the phase stayed stuck"
        host.run_queues()
        time.sleep(0.3)

    assert {vm: emulator.actions(vm) for vm in vms} == {vm: ["start"] for vm in vms}
    assert all(emulator.vm_power_state(vm) == "PowerState/running" for vm in vms)
    attempts = [i for i in host.invocations if i.function == "maintenance_worker"]
    assert not attempts[0].succeeded and any(i.succeeded for i in attempts[1:])
    assert ledger.get_phase(run_of(pre), "pre")["Attempts"] >= 2  # type: ignore[index]
    assert ledger.get_run(run_of(pre))["Verdict"] == "ready"  # type: ignore[index]


@pytest.mark.parametrize("outage", ["unreachable", "blackhole"])
def test_an_unreachable_queue_fails_the_acknowledgement_after_a_bounded_number_of_attempts(
    host: FunctionsHost, proxy: StorageFaultProxy, outage: str
) -> None:
    # How long that takes is measured by the benchmark (bench/edge.py), not asserted here.
    rule = getattr(proxy, outage)("queue")

    host.deliver_event("pre_maintenance", make_event("pre"))

    ack = host.invocations[-1]
    assert not ack.succeeded, "the event is not acknowledged: Event Grid delivers it again"
    if outage == "blackhole":
        assert rule.fired == 3, "three attempts, each given 5 s to answer (the SDK's default is four, 85 s in all)"
    phase = get_runtime().ledger.get_phase(run_of(make_event("pre")), "pre")
    assert phase is not None and phase["Status"] == "received", "the redelivery sends the work again"


def test_a_verdict_that_cannot_read_the_ledger_at_its_last_chance_fails_closed(
    host: FunctionsHost, emulator: AzureEmulator, proxy: StorageFaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-v", "vm-v", power_state="deallocated")
    pre = make_event("pre", subscriptions=(SUB_A,), cutoff_in=timedelta(seconds=20))  # 20 s: no time for a retry
    emulator.add_run(run_of(pre), [vm])
    host.deliver_event("pre_maintenance", pre)
    host.queue(get_runtime().settings.work_queue).clear_messages()  # only the fallback verdict is left to act
    proxy.fail("table", status=503)  # the ledger is down
    host.retry_visibility = 30  # host.json: a failed message comes back in 30 s, after the cutoff

    with caplog.at_level(logging.ERROR):
        send_work(get_runtime().work_queue(), WorkMessage(parse_event(pre), Step.VERDICT))
        host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled", "no verdict could be read or recorded: fail closed"
    assert emulator.actions(vm) == []
    assert any("MAINTENANCE ALERT unchecked-run" in r.getMessage() and "cancel: accepted" in r.getMessage()
               for r in caplog.records), "the alert reaches the log even when the ledger cannot take it"


def test_a_poison_handler_retried_after_a_storage_failure_alerts_once(
    host: FunctionsHost, emulator: AzureEmulator, proxy: StorageFaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-p", "vm-p", power_state="deallocated")
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [vm])
    host.deliver_event("pre_maintenance", pre)
    work = get_runtime().settings.work_queue
    host.queue(work).clear_messages()
    host.queue(f"{work}-poison").send_message(
        base64.b64encode(WorkMessage(parse_event(pre)).to_json().encode()).decode())
    # The poison handler queues the fallback verdict: its first invocation's three attempts fail.
    rule = proxy.fail("queue", method="POST", path_contains=f"/{work}/messages", status=503, times=3)

    with caplog.at_level(logging.ERROR):
        host.run_queues(max_messages=2)

    handled = [i.succeeded for i in host.invocations if i.function == "maintenance_work_poison"]
    assert rule.fired == 3 and handled == [False, True], "the handler failed once, then queued the verdict"
    alerts = [r for r in caplog.records if "MAINTENANCE ALERT poison-message" in r.getMessage()]
    assert len(alerts) == 1, "one alert per message, not one per attempt"
    assert getattr(alerts[0], "maintenance.alert", "").startswith("poison-message:")
    assert "poison-message" in get_runtime().ledger.list_alerts(run_of(pre))


@pytest.mark.parametrize(("method", "warning"), [
    ("PUT", "could not store the groups' hand-offs"),
    ("GET", "the coordinator's hand-off could not be read"),
])
def test_the_handoff_container_failing_leaves_each_group_to_find_its_own_machines(
    host: FunctionsHost, emulator: AzureEmulator, proxy: StorageFaultProxy, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch, method: str, warning: str,
) -> None:
    monkeypatch.setenv("MAINTENANCE_SUBSCRIPTIONS_PER_WORKER", "1")
    vms = [emulator.add_vm(sub, "rg-h", "vm", power_state="deallocated") for sub in (SUB_A, SUB_B)]
    pre = make_event("pre", subscriptions=(SUB_A, SUB_B))
    emulator.add_run(run_of(pre), vms)
    host.deliver_event("pre_maintenance", pre)
    rule = proxy.fail("blob", method=method, path_contains=f"/{get_runtime().settings.handoff_container}/", status=503)

    with caplog.at_level(logging.WARNING):
        host.run_queues()

    assert rule.fired >= 1
    assert all(emulator.actions(vm) == ["start"] for vm in vms)
    assert azurite_ledger(proxy.azurite).get_run(run_of(pre))["Verdict"] == "ready"  # type: ignore[index]
    assert any(warning in r.getMessage() for r in caplog.records)
    # Each group asked Resource Graph for its machines (and views) itself.
    assert emulator.count("POST", "/providers/Microsoft.ResourceGraph/resources") > 3 + 1


def test_a_ledger_transaction_whose_connection_drops_is_sent_again(
    host: FunctionsHost, emulator: AzureEmulator, proxy: StorageFaultProxy, azurite: Azurite
) -> None:
    # Storage closes idle keep-alive connections; a transaction (a POST) sent on one as it closes
    # is reset. azure-core sends no POST again on its own: a group's last outcomes would be lost
    # with the invocation (seen at 20,000 machines, where the message's retry then mended it).
    from handlers.ledger import MachineRecord

    run = run_of(make_event("pre"))
    rows = [MachineRecord(resource_id=f"/subscriptions/{SUB_A}/resourceGroups/rg/providers/Microsoft.Compute/"
                          f"virtualMachines/vm{i}", kind="vm", subscription_id=SUB_A, resource_group="rg",
                          name=f"vm{i}", pre_outcome="succeeded") for i in range(3)]
    ledger = get_runtime().ledger
    first = proxy.reset("table", method="POST", path_contains="$batch", times=1)
    ledger.add_rows(run, rows)
    again = proxy.reset("table", method="POST", path_contains="$batch", times=1)
    ledger.save_rows(run, [replace(r, pre_detail="stored again") for r in rows])

    assert first.fired == 1 and again.fired == 1
    stored = azurite_ledger(azurite).list_machines(run)
    assert sorted(r.name for r in stored) == ["vm0", "vm1", "vm2"]
    assert {r.pre_detail for r in stored} == {"stored again"}


def test_steps_failing_together_are_all_named_when_the_first_ones_write_is_slow(
    host: FunctionsHost, emulator: AzureEmulator, proxy: StorageFaultProxy, azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The post phase's steps beside each other fail at the same moment when Resource Graph refuses
    # them all. Each failure writes the run's StepErrors whole, so the one written last must hold
    # every failure: the first write, held up in storage, must not land over the second.
    monkeypatch.setenv("MAINTENANCE_ARM_RETRIES", "0")
    vm = emulator.add_vm(SUB_A, "rg-s", "vm-s", power_state="deallocated")
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [vm])
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    emulator.fail("graph", status=400, code="BadRequest", message="query refused")
    slow = proxy.delay("table", 3.0, path_contains=get_runtime().settings.ledger_table,
                       body_contains='"StepErrors"', times=1)

    host.deliver_event("post_maintenance", make_event("post", subscriptions=(SUB_A,)))
    host.run_queues()

    assert slow.fired == 1
    run = azurite_ledger(azurite).get_run(run_of(pre))
    assert run is not None and run.get("ReportUrl")
    assert {"retention", "patch-results"} <= set(json.loads(str(run["StepErrors"])))
