"""A whole maintenance run through the registered functions: Event Grid trigger, queue worker,
emulated ARM and a real Azurite ledger."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.core.ids import subscription_of
from handlers.ledger import Ledger, MachineRecord, run_key
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, SUB_B, make_event, wait_for_fallback_verdict

WRITE_METHODS = ("PUT", "POST", "DELETE", "PATCH")


def arm_writes(emulator: AzureEmulator) -> list[str]:
    """Requests that change something in Azure (Resource Graph queries are POSTs but read)."""
    return [
        f"{r.method} {r.path}" for r in emulator.requests
        if r.method in WRITE_METHODS and "microsoft.resourcegraph" not in r.path.lower()
    ]


def ledger() -> Ledger:
    return get_runtime().ledger


def machine_rows(correlation_id: str) -> dict[str, object]:
    return {r.name: r for r in ledger().list_machines(correlation_id)}


@pytest.fixture
def fleet(emulator: AzureEmulator) -> dict[str, str]:
    """Two subscriptions: running, deallocated, stopped, opted-out, Arc; all in one run."""
    vms = {
        "web-running": emulator.add_vm(SUB_A, "rg-web", "web-running", power_state="running"),
        "web-deallocated": emulator.add_vm(SUB_A, "rg-web", "web-deallocated", power_state="deallocated"),
        "db-stopped": emulator.add_vm(SUB_B, "rg-db", "db-stopped", power_state="stopped"),
        "db-optout": emulator.add_vm(SUB_B, "rg-db", "db-optout", power_state="deallocated",
                                     tags={"maintenance-opt-out": "true"}),
        "onprem-arc": emulator.add_arc_machine(SUB_B, "rg-arc", "onprem-arc"),
    }
    return vms


def run_of(event: dict[str, object]) -> str:
    return str(event["data"]["correlationId"])  # type: ignore[index]


def test_pre_starts_only_what_is_off_and_post_puts_each_back(
    host: FunctionsHost, emulator: AzureEmulator, fleet: dict[str, str]
) -> None:
    pre = make_event("pre")
    emulator.add_run(run_of(pre), list(fleet.values()))

    host.deliver_event("pre_maintenance", pre)
    assert emulator.requests == [], "the Event Grid trigger must only acknowledge, not call Azure"
    host.run_queues()

    assert emulator.vm_power_state(fleet["web-deallocated"]) == "PowerState/running"
    assert emulator.vm_power_state(fleet["db-stopped"]) == "PowerState/running"
    assert emulator.vm_power_state(fleet["db-optout"]) == "PowerState/deallocated"
    assert emulator.actions(fleet["web-running"]) == []
    assert emulator.actions(fleet["web-deallocated"]) == ["start"]
    assert emulator.actions(fleet["db-stopped"]) == ["start"]
    assert emulator.actions(fleet["db-optout"]) == []
    assert emulator.run_status(run_of(pre)) != "Cancelled"

    rows = machine_rows(run_of(pre))
    assert rows["web-running"].pre_outcome == "not-needed"  # type: ignore[attr-defined]
    assert rows["web-deallocated"].original_power_state == "deallocated"  # type: ignore[attr-defined]
    assert rows["web-deallocated"].pre_outcome == "succeeded"  # type: ignore[attr-defined]
    assert rows["db-stopped"].original_power_state == "stopped"  # type: ignore[attr-defined]
    assert rows["db-optout"].opted_out is True  # type: ignore[attr-defined]
    assert rows["onprem-arc"].pre_outcome == "skipped"  # type: ignore[attr-defined]
    assert "Arc" in rows["onprem-arc"].pre_detail  # type: ignore[attr-defined]

    host.deliver_event("post_maintenance", make_event("post"))
    host.run_queues()

    assert emulator.vm_power_state(fleet["web-deallocated"]) == "PowerState/deallocated"
    assert emulator.vm_power_state(fleet["db-stopped"]) == "PowerState/stopped"
    assert emulator.vm_power_state(fleet["web-running"]) == "PowerState/running"
    assert emulator.actions(fleet["web-deallocated"]) == ["start", "deallocate"]
    assert emulator.actions(fleet["db-stopped"]) == ["start", "powerOff"]
    assert emulator.actions(fleet["web-running"]) == []
    assert all(i.succeeded for i in host.invocations)
    run = ledger().get_run(run_of(pre))
    assert run is not None and run["RunStatus"] == "succeeded"


def test_failed_start_cancels_the_run(host: FunctionsHost, emulator: AzureEmulator, fleet: dict[str, str]) -> None:
    pre = make_event("pre")
    emulator.add_run(run_of(pre), list(fleet.values()))
    emulator.fail("start", fleet["db-stopped"], mode="operation", code="AllocationFailed",
                  message="no capacity for this size")

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled"
    rows = machine_rows(run_of(pre))
    assert rows["db-stopped"].pre_outcome == "failed"  # type: ignore[attr-defined]
    assert "AllocationFailed" in rows["db-stopped"].pre_detail  # type: ignore[attr-defined]
    assert rows["web-deallocated"].pre_outcome == "succeeded"  # type: ignore[attr-defined]
    run = ledger().get_run(run_of(pre))
    assert run is not None and run["CancelOutcome"] == "accepted" and run["Verdict"] == "failed"


def test_failed_start_with_cancel_off_only_reports(
    host: FunctionsHost, emulator: AzureEmulator, fleet: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_CANCEL_ON_FAILURE", "false")
    pre = make_event("pre")
    emulator.add_run(run_of(pre), list(fleet.values()))
    emulator.fail("start", fleet["db-stopped"], status=409, code="OperationNotAllowed")

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.run_status(run_of(pre)) != "Cancelled"
    assert not [w for w in arm_writes(emulator) if "applyupdates" in w.lower()]
    run = ledger().get_run(run_of(pre))
    assert run is not None and run["CancelOutcome"].startswith("not-requested")


def test_same_pre_event_twice_starts_each_vm_once(
    host: FunctionsHost, emulator: AzureEmulator, fleet: dict[str, str]
) -> None:
    pre = make_event("pre")
    emulator.add_run(run_of(pre), list(fleet.values()))

    host.deliver_event("pre_maintenance", pre)
    host.deliver_event("pre_maintenance", pre)  # Event Grid redelivers while the first is queued
    host.run_queues()
    host.deliver_event("pre_maintenance", pre)  # ... and again after the work is done
    host.run_queues()

    assert emulator.actions(fleet["web-deallocated"]) == ["start"]
    assert emulator.actions(fleet["db-stopped"]) == ["start"]
    assert ledger().get_phase(run_of(pre), "pre")["Status"] == "completed"  # type: ignore[index]


def test_post_without_ledger_record_stops_nothing(
    host: FunctionsHost, emulator: AzureEmulator, fleet: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    post = make_event("post")
    emulator.add_run(run_of(post), list(fleet.values()))

    with caplog.at_level(logging.WARNING):
        host.deliver_event("post_maintenance", post)
        host.run_queues()

    assert arm_writes(emulator) == []
    assert emulator.vm_power_state(fleet["web-running"]) == "PowerState/running"
    assert any("no ledger record" in r.getMessage() and run_of(post) in r.getMessage() for r in caplog.records)


def test_dry_run_writes_nothing_to_azure(
    host: FunctionsHost, emulator: AzureEmulator, fleet: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MAINTENANCE_DRY_RUN", "true")
    pre = make_event("pre")
    emulator.add_run(run_of(pre), list(fleet.values()))

    with caplog.at_level(logging.INFO):
        host.deliver_event("pre_maintenance", pre)
        host.run_queues()
        host.deliver_event("post_maintenance", make_event("post"))
        host.run_queues()

    assert arm_writes(emulator) == []
    assert emulator.count(method="GET") + emulator.count(method="POST") > 0, "dry run still reads"
    rows = machine_rows(run_of(pre))
    assert rows["web-deallocated"].pre_outcome == "planned"  # type: ignore[attr-defined]
    assert any("would start" in r.getMessage() and fleet["db-stopped"] in r.getMessage() for r in caplog.records)


def test_start_still_pending_at_deadline_cancels_before_cutoff(
    host: FunctionsHost, emulator: AzureEmulator, fleet: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_CUTOFF_SAFETY_SECONDS", "2")
    emulator.operation_durations["start"] = 10_000_000.0  # never finishes while we wait
    pre = make_event("pre", cutoff_in=timedelta(seconds=4))
    emulator.add_run(run_of(pre), list(fleet.values()))

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled"
    cancels = [r for r in emulator.requests if r.method == "PUT" and "applyupdates" in r.path.lower()]
    assert len(cancels) == 1
    rows = machine_rows(run_of(pre))
    assert rows["db-stopped"].pre_outcome == "timed-out"  # type: ignore[attr-defined]


def test_cutoff_already_passed_sends_no_cancel(
    host: FunctionsHost, emulator: AzureEmulator, fleet: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    emulator.operation_durations["start"] = 10_000_000.0
    pre = make_event("pre", cutoff_in=timedelta(seconds=-30))
    emulator.add_run(run_of(pre), list(fleet.values()))

    with caplog.at_level(logging.ERROR):
        host.deliver_event("pre_maintenance", pre)
        host.run_queues()

    assert not [r for r in emulator.requests if r.method == "PUT" and "applyupdates" in r.path.lower()]
    assert emulator.run_status(run_of(pre)) != "Cancelled"
    assert any("could NOT be cancelled" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    run = ledger().get_run(run_of(pre))
    assert run is not None and run["CancelOutcome"] == "missed (cutoff passed)"


def test_throttled_arm_still_gets_everything_done(host: FunctionsHost, monkeypatch: pytest.MonkeyPatch) -> None:
    from handlers import runtime

    # Tiny buckets so a dozen VMs overrun them: 3 writes burst, refilling 0.2/s. At this time
    # scale (1 real second = 100 simulated) that is 20 writes per real second: slower than a
    # dozen parallel requests arrive even on a loaded machine, fast enough for retries to heal.
    emulator = AzureEmulator(time_scale=0.01, throttling=True,
                             buckets={"arm.write": (3, 0.2), "graph": (2, 0.2), "compute.operation.vm": (2, 0.1)})
    runtime.configure(transport=emulator.transport(), clock=emulator.clock)
    vms = [emulator.add_vm(SUB_A, "rg-fleet", f"vm{i:02d}", power_state="deallocated") for i in range(12)]
    pre = make_event("pre")
    emulator.add_run(run_of(pre), vms)

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.count(status=429) > 0, "the scenario must actually throttle"
    assert all(emulator.vm_power_state(v) == "PowerState/running" for v in vms)
    assert all(emulator.actions(v) == ["start"] for v in vms)
    assert emulator.run_status(run_of(pre)) != "Cancelled"


def test_acknowledgement_does_not_grow_with_the_fleet(host: FunctionsHost, emulator: AzureEmulator) -> None:
    vms = [emulator.add_vm(SUB_A, "rg-big", f"vm{i:04d}", power_state="deallocated") for i in range(300)]
    pre = make_event("pre")
    emulator.add_run(run_of(pre), vms)

    host.deliver_event("pre_maintenance", pre)

    ack = host.invocations[-1]
    assert ack.function == "pre_maintenance" and ack.succeeded
    assert emulator.requests == []
    assert ledger().get_phase(run_of(pre), "pre")["Status"] == "queued"  # type: ignore[index]
    assert run_key(run_of(pre)) in ledger().get_run(run_of(pre))["PartitionKey"]  # type: ignore[index]


def test_retried_worker_does_not_start_twice_and_finishes_the_cancel(
    host: FunctionsHost, emulator: AzureEmulator, fleet: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_ARM_RETRIES", "0")  # let the injected 503 reach the worker
    pre = make_event("pre")
    emulator.add_run(run_of(pre), list(fleet.values()))
    emulator.fail("start", fleet["db-stopped"], mode="operation", code="AllocationFailed")
    emulator.fail("cancel", status=503, code="ServiceUnavailable", times=1)

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    worker_runs = [i for i in host.invocations if i.function == "maintenance_worker"]
    assert [i.succeeded for i in worker_runs] == [False, True], "first attempt fails on the cancel, retry succeeds"
    assert emulator.actions(fleet["web-deallocated"]) == ["start"]
    assert emulator.actions(fleet["db-stopped"]) == ["start"]
    assert emulator.run_status(run_of(pre)) == "Cancelled"
    phase = ledger().get_phase(run_of(pre), "pre")
    assert phase is not None and phase["Status"] == "completed" and phase["Attempts"] == 2


def test_a_worker_that_died_while_sending_is_retried_without_a_second_start(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    sent = emulator.add_vm(SUB_A, "rg-app", "sent-before", power_state="deallocated")
    unsent = emulator.add_vm(SUB_A, "rg-app", "not-sent-yet", power_state="stopped")
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [sent, unsent])
    host.deliver_event("pre_maintenance", pre)
    # An earlier attempt recorded both plans, had its start of the first accepted, and died.
    earlier = ledger().claim_phase(run_of(pre), "pre")
    assert earlier is not None
    ledger().add_rows(run_of(pre), [
        MachineRecord(resource_id=vm, kind="vm", subscription_id=SUB_A, resource_group="rg-app", name=name,
                      location="westeurope", original_power_state=state, pre_action="start", pre_outcome="pending",
                      lane=subscription_of(vm))
        for vm, name, state in ((sent, "sent-before", "deallocated"), (unsent, "not-sent-yet", "stopped"))
    ])
    emulator.set_power_state(sent, "running")
    ledger().release_phase(earlier, error="worker died")

    host.run_queues()

    assert emulator.actions(sent) == [], "its state is read, and it is running: no second start"
    assert emulator.actions(unsent) == ["start"]
    rows = machine_rows(run_of(pre))
    assert rows["sent-before"].pre_outcome == "succeeded"  # type: ignore[attr-defined]
    assert rows["sent-before"].original_power_state == "deallocated", "the first sighting is kept"  # type: ignore[attr-defined]
    assert rows["not-sent-yet"].pre_outcome == "succeeded"  # type: ignore[attr-defined]
    assert ledger().get_phase(run_of(pre), "pre")["Attempts"] == 2  # type: ignore[index]


def test_post_waits_for_a_pre_phase_still_running(
    host: FunctionsHost, emulator: AzureEmulator, fleet: dict[str, str]
) -> None:
    pre = make_event("pre")
    emulator.add_run(run_of(pre), list(fleet.values()))
    host.deliver_event("pre_maintenance", pre)
    assert ledger().claim_phase(run_of(pre), "pre") is not None  # a worker elsewhere is busy with it

    host.deliver_event("post_maintenance", make_event("post"))
    host.run_queues()

    assert arm_writes(emulator) == []
    assert ledger().get_phase(run_of(pre), "post")["Status"] == "retrying"  # type: ignore[index]
    work = host.queue(get_runtime().settings.work_queue).get_queue_properties()
    assert work.approximate_message_count == 1, "the post work is queued again, invisible for a while"


def test_a_fleet_larger_than_one_id_query_is_read_by_resource_group(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    vms = [emulator.add_vm(SUB_A if i % 2 else SUB_B, f"rg-{i % 3}", f"vm{i:03d}", power_state="deallocated")
           for i in range(250)]
    outsiders = [emulator.add_vm(SUB_A, "rg-1", f"outside{i}", power_state="deallocated") for i in range(3)]
    pre = make_event("pre")
    emulator.add_run(run_of(pre), vms)

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert all(emulator.actions(v) == ["start"] for v in vms)
    assert all(emulator.actions(v) == [] for v in outsiders), "machines outside the run are never touched"
    graph_queries = emulator.count(method="POST", path_contains="microsoft.resourcegraph")
    assert graph_queries <= 6, f"{graph_queries} Resource Graph queries for 250 machines"
    per_vm_gets = emulator.count(method="GET", path_contains="/virtualmachines/")
    assert per_vm_gets == 0, "power states and disks come from Resource Graph in bulk"


def test_a_pre_worker_failing_on_every_attempt_still_gets_the_run_checked_and_cancelled(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_ARM_RETRIES", "0")
    monkeypatch.setenv("MAINTENANCE_CUTOFF_SAFETY_SECONDS", "8")
    vm = emulator.add_vm(SUB_A, "rg-app", "app-01", power_state="deallocated")
    pre = make_event("pre", cutoff_in=timedelta(seconds=12))
    emulator.add_run(run_of(pre), [vm])
    emulator.fail("graph", status=500, code="InternalServerError", times=5)  # every attempt of the worker

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    worker_runs = [i.succeeded for i in host.invocations if i.function == "maintenance_worker"]
    assert worker_runs == [False] * 5, "the message went to the poison queue"
    assert emulator.run_status(run_of(pre)) != "Cancelled"
    wait_for_fallback_verdict(pre, 8)
    host.run_queues()

    assert emulator.actions(vm) == []
    assert emulator.run_status(run_of(pre)) == "Cancelled", "an unchecked run must not go ahead"
    run = ledger().get_run(run_of(pre))
    assert run is not None and run["Verdict"] == "failed"
    assert f"{vm}: not running: not recorded" in run["FailingReasons"]
    assert ledger().get_phase(run_of(pre), "pre")["Status"] == "completed"  # type: ignore[index]
