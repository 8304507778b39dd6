"""Late and stale pre events start nothing: once a run's window has begun, or its post event is
recorded, whatever a pre event started nothing would turn off (Event Grid retries for 24 hours)."""

from __future__ import annotations

from datetime import timedelta

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, make_event
from tests.reliability.conftest import arm_writes, queue_work, run_of


def test_pre_work_reaching_the_worker_after_the_window_began_starts_nothing_and_is_reported(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-late", "late-01", power_state="deallocated")
    pre = make_event("pre", subscriptions=(SUB_A,), cutoff_in=timedelta(minutes=-20))  # window began 10 min ago
    emulator.add_run(run_of(pre), [vm])

    queue_work(host, pre)  # accepted in time, but the worker got to it only now
    host.run_queues()

    assert arm_writes(emulator) == [], "no start, no snapshot, no cancel"
    ledger = get_runtime().ledger
    run = ledger.get_run(run_of(pre))
    assert run is not None and run["Verdict"] == "late" and "window began" in run["LatePreEvent"]
    assert "late-pre-event" in ledger.list_alerts(run_of(pre))
    assert ledger.get_phase(run_of(pre), "pre")["Status"] == "completed"  # type: ignore[index]

    host.deliver_event("post_maintenance", make_event("post", subscriptions=(SUB_A,)))
    host.run_queues()
    assert arm_writes(emulator) == [] and emulator.vm_power_state(vm) == "PowerState/deallocated"
    assert ledger.get_phase(run_of(pre), "post")["Status"] == "completed", "the post does not wait for it"  # type: ignore[index]


def test_pre_work_after_the_runs_post_event_starts_nothing(host: FunctionsHost, emulator: AzureEmulator) -> None:
    vm = emulator.add_vm(SUB_A, "rg-late", "late-02", power_state="stopped")
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [vm])
    host.deliver_event("post_maintenance", make_event("post", subscriptions=(SUB_A,)))
    host.run_queues()

    queue_work(host, pre)  # a pre event's work after the run's post event
    host.run_queues()

    assert arm_writes(emulator) == [] and emulator.vm_power_state(vm) == "PowerState/stopped"
    run = get_runtime().ledger.get_run(run_of(pre))
    assert run is not None and "after the run's post event" in run["LatePreEvent"]


def test_a_window_that_begins_while_starts_are_being_sent_stops_the_sending(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    # The window begins 3 s from now; the worker takes it up at once, but its reads take 2 s each
    # (three or more before the first start): by the time the starts would leave, it has begun.
    vms = [emulator.add_vm(SUB_A, "rg-late", f"late-{i}", power_state="deallocated") for i in range(3)]
    pre = make_event("pre", subscriptions=(SUB_A,), cutoff_in=timedelta(minutes=-10, seconds=3))
    emulator.add_run(run_of(pre), vms)
    emulator.latency = 2.0 / emulator.clock.time_scale

    queue_work(host, pre)
    host.run_queues()

    assert [w for w in arm_writes(emulator) if "/start" in w.lower()] == []
    rows = {r.name: r for r in get_runtime().ledger.list_machines(run_of(pre))}
    assert {r.pre_outcome for r in rows.values()} == {"skipped"}, [(r.name, r.pre_outcome) for r in rows.values()]
    assert all("window had begun" in r.pre_detail and r.pre_action == "none" for r in rows.values()), (
        "a start never sent is recorded as such, and never restored")
