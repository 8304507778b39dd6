"""The post phase's steps beside each other, through the registered functions: the tags go out
while the VMs go down, the report waits for the restores, and steps writing the same machine rows
at the same time keep each other's columns."""

from __future__ import annotations

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, make_event


def run_of(event: dict[str, object]) -> str:
    return str(event["data"]["correlationId"])  # type: ignore[index]


def pre_phase(host: FunctionsHost, emulator: AzureEmulator, machines: list[str]) -> dict[str, object]:
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), machines)
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    return pre


def went_down_at(emulator: AzureEmulator, vm: str) -> float:
    """When (simulated) the VM reached deallocated after its start."""
    with emulator.lock:
        found = emulator.find_vm(vm)
        found.settle(emulator.clock.now())
        return max(t for t, state in found.history if state == "deallocated")


def test_the_tags_go_out_while_the_vms_go_down_and_the_report_waits_for_them(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    vms = [emulator.add_vm(SUB_A, "rg-app", f"app-{i}", power_state="deallocated") for i in range(3)]
    running = emulator.add_vm(SUB_A, "rg-app", "web-0", power_state="running")
    pre = pre_phase(host, emulator, [*vms, running])
    for machine in (*vms, running):
        emulator.add_patch_result(machine, run_of(pre))
    emulator.operation_durations["deallocate"] = 2000.0  # simulated (1 s): far longer than the other steps

    host.deliver_event("post_maintenance", make_event("post", subscriptions=(SUB_A,)))
    host.run_queues()

    down = max(went_down_at(emulator, vm) for vm in vms)
    tagged = [r.time for r in emulator.requests if r.method == "PATCH" and r.path.endswith("/tags/default")]
    assert len(tagged) == 4
    assert max(tagged) < down, "every machine was tagged while the deallocations were still running"
    sent = [r.time for r in emulator.requests if r.method == "POST" and r.path.endswith("/deallocate")]
    assert len(sent) == 3 and max(sent) < min(tagged), "the restores went out before the tags"
    ledger = get_runtime().ledger
    records = {r.name: r for r in ledger.list_machines(run_of(pre))}
    assert {records[f"app-{i}"].restore_outcome for i in range(3)} == {"succeeded"}
    run = ledger.get_run(run_of(pre)) or {}
    restored = max(records[f"app-{i}"].restored_at for i in range(3))  # type: ignore[type-var]
    assert run["ReportWrittenAt"] >= restored, "the report was written once the restores had ended"
    assert run["TagsStamped"] == 4 and records["web-0"].health == "passed"


def test_a_restore_that_ends_while_the_patch_results_are_awaited_keeps_its_outcome(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_PATCH_RESULTS_WAIT_SECONDS", "7200")
    vm = emulator.add_vm(SUB_A, "rg-app", "app-0", power_state="deallocated")
    pre = pre_phase(host, emulator, [vm])
    result = emulator.add_patch_result(vm, run_of(pre), status="InProgress")
    # Final long after the restore has ended (2 simulated s): the patch-results step stores the
    # machine's row once before the restore ends and again after it.
    emulator.set_patch_status(result, "Succeeded", reboot_status="Completed", appears_after=1000.0)

    host.deliver_event("post_maintenance", make_event("post", subscriptions=(SUB_A,)))
    host.run_queues()

    record = get_runtime().ledger.list_machines(run_of(pre))[0]
    assert (record.restore_action, record.restore_outcome) == ("deallocate", "succeeded")
    assert (record.patch_status, record.patch_reboot) == ("Succeeded", "Completed")
    assert emulator.vm_power_state(vm) == "PowerState/deallocated"
