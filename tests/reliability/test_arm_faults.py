"""Faults between the app and ARM: errors and dropped connections on a share of all calls, writes
that take effect and then fail, restores that fail. The promises: no needless cancel, and every
VM we started goes off again (or is alerted by name)."""

from __future__ import annotations

import logging

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, SUB_B, make_event
from tests.reliability.conftest import run_of

ORIGINAL = {"deallocated": "PowerState/deallocated", "stopped": "PowerState/stopped"}


def fleet(emulator: AzureEmulator, count: int = 16) -> dict[str, str]:
    """VM id -> its power state before the run: deallocated and stopped, over two subscriptions."""
    states = {}
    for i in range(count):
        state = "deallocated" if i % 3 else "stopped"
        states[emulator.add_vm(SUB_A if i % 2 else SUB_B, "rg-faults", f"vm{i:02d}", power_state=state)] = state
    return states


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_run_with_30_percent_of_arm_calls_failing_is_neither_cancelled_nor_left_running(
    host: FunctionsHost, emulator: AzureEmulator, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    vms = fleet(emulator)
    pre = make_event("pre", run=f"2026112202000{seed}")
    emulator.add_run(run_of(pre), list(vms))
    # 500, 503 and connection resets on 30 % of every ARM call (queries, starts, polls, snapshots,
    # instance views, the cancel); 30 % of the faults on writes strike after the write took effect.
    stats = emulator.inject_faults(0.3, seed=seed, kinds=("500", "503", "reset"), applied_share=0.3)

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert {vm: emulator.vm_power_state(vm) for vm in vms} == dict.fromkeys(vms, "PowerState/running")
    ledger = get_runtime().ledger
    run = ledger.get_run(run_of(pre))
    assert run is not None and run["Verdict"] == "ready", run.get("FailingReasons")
    assert emulator.run_status(run_of(pre)) != "Cancelled", "no needless cancel"
    after_pre = stats.total

    host.deliver_event("post_maintenance", make_event("post", run=f"2026112202000{seed}"))
    host.run_queues()

    assert {vm: emulator.vm_power_state(vm) for vm in vms} == {vm: ORIGINAL[s] for vm, s in vms.items()}
    assert "left-running" not in ledger.list_alerts(run_of(pre))
    assert {r.restore_outcome for r in ledger.list_machines(run_of(pre))} <= {"succeeded", "skipped"}
    requests = len(emulator.requests)
    with capsys.disabled():
        print(f"\n[arm faults] seed {seed}: {requests} ARM requests, {stats.total} faults injected "
              f"({after_pre} in the pre phase; {dict(stats.injected)}; {stats.applied} after the write took "
              f"effect): {len(vms)}/{len(vms)} started, 0 cancels, {len(vms)}/{len(vms)} restored")


def test_a_start_whose_answer_is_lost_is_read_back_not_failed(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_ARM_RETRIES", "0")  # the pipeline gives up at once: the read-back decides
    took_effect = emulator.add_vm(SUB_A, "rg-faults", "lost-answer", power_state="deallocated")
    never_sent = emulator.add_vm(SUB_A, "rg-faults", "reset-before", power_state="stopped")
    emulator.fail("start", took_effect, mode="lost-answer", times=1)
    emulator.fail("start", never_sent, mode="reset", times=1)
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [took_effect, never_sent])

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.actions(took_effect) == ["start"], "it was starting: followed, not started again"
    assert emulator.actions(never_sent) == ["start"], "it had not started: sent again, once"
    assert emulator.vm_power_state(took_effect) == emulator.vm_power_state(never_sent) == "PowerState/running"
    rows = {r.name: r for r in get_runtime().ledger.list_machines(run_of(pre))}
    assert rows["lost-answer"].pre_outcome == rows["reset-before"].pre_outcome == "succeeded"
    assert emulator.run_status(run_of(pre)) != "Cancelled"


def test_a_restore_keeps_trying_and_alerts_by_name_on_what_stays_running(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MAINTENANCE_RESTORE_TIMEOUT_SECONDS", "10")
    flaky = emulator.add_vm(SUB_A, "rg-faults", "flaky", power_state="deallocated")
    stuck = emulator.add_vm(SUB_A, "rg-faults", "stuck", power_state="stopped")
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [flaky, stuck])
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    emulator.fail("deallocate", flaky, mode="operation", code="InternalExecutionError", times=2)
    emulator.fail("powerOff", stuck, status=409, code="OperationNotAllowed", message="The VM is locked.")

    with caplog.at_level(logging.ERROR):
        host.deliver_event("post_maintenance", make_event("post", subscriptions=(SUB_A,)))
        host.run_queues()

    assert emulator.vm_power_state(flaky) == "PowerState/deallocated", "two failed deallocations, then it worked"
    assert emulator.actions(flaky) == ["start", "deallocate", "deallocate", "deallocate"]
    assert emulator.vm_power_state(stuck) == "PowerState/running"
    ledger = get_runtime().ledger
    rows = {r.name: r for r in ledger.list_machines(run_of(pre))}
    assert rows["flaky"].restore_outcome == "succeeded"
    assert rows["stuck"].restore_outcome == "timed-out" and "OperationNotAllowed" in rows["stuck"].restore_detail
    alert = ledger.list_alerts(run_of(pre))["left-running"]
    assert stuck in str(alert["Message"]) and flaky not in str(alert["Message"])
    assert any("MAINTENANCE ALERT left-running" in r.getMessage() and stuck in r.getMessage() for r in caplog.records)
