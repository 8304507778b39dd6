"""At least once in, at most one action per machine and phase: the same events delivered to two
hosts at once, each host draining the queue at the same time, act once."""

from __future__ import annotations

import threading
from collections.abc import Callable

from emulator import AzureEmulator
from emulator.azurite import Azurite
from emulator.functions_host import FunctionsHost
from tests.conftest import SUB_A, SUB_B, make_event
from tests.reliability.conftest import run_of


def together(*calls: Callable[[], object]) -> None:
    """Run the calls at the same moment, each in a thread of its own."""
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_the_same_events_on_two_hosts_at_once_act_once_per_machine(
    host: FunctionsHost, emulator: AzureEmulator, azurite: Azurite
) -> None:
    import function_app

    other = FunctionsHost(function_app.app, azurite.connection_string)
    vms = {emulator.add_vm(SUB_A if i % 2 else SUB_B, "rg-dup", f"vm{i}", power_state=state): state
           for i, state in enumerate(["deallocated", "stopped", "deallocated", "running", "stopped", "deallocated"])}
    pre, post = make_event("pre"), make_event("post")
    emulator.add_run(run_of(pre), list(vms))

    together(*[lambda h=h: h.deliver_event("pre_maintenance", pre) for h in (host, other, host, other)])
    together(host.run_queues, other.run_queues)
    together(*[lambda h=h: h.deliver_event("post_maintenance", post) for h in (host, other, host, other)])
    together(host.run_queues, other.run_queues)

    restore = {"deallocated": "deallocate", "stopped": "powerOff"}
    assert {vm: emulator.actions(vm) for vm in vms} == {
        vm: ([] if state == "running" else ["start", restore[state]]) for vm, state in vms.items()}
    snapshot_puts = [r for r in emulator.requests if r.method == "PUT" and "/snapshots/" in r.path.lower()]
    assert len(snapshot_puts) == len(vms), "one snapshot per disk"
    cancels = [r for r in emulator.requests if r.method == "PUT" and "applyupdates" in r.path.lower()]
    assert cancels == [] and emulator.run_status(run_of(pre)) != "Cancelled"
    invocations = host.invocations + other.invocations
    assert all(i.succeeded for i in invocations), [i.error for i in invocations if not i.succeeded]
