"""A restore's status is polled half as often as the pre phase's operations: nobody waits on its
end closely, and a fleet's restores would otherwise take ARM's read budget from the steps beside."""

from __future__ import annotations

from itertools import pairwise

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from tests.conftest import SUB_A, make_event

DEALLOCATE_SECONDS = 60.0  # simulated; MAINTENANCE_POLL_INTERVAL_SECONDS is 1 in the tests


@pytest.fixture
def emulator() -> AzureEmulator:
    # Slow enough (10 ms per simulated second) that the polls go out when they are due.
    return AzureEmulator(time_scale=0.01)


def test_a_restore_is_polled_every_other_interval(host: FunctionsHost, emulator: AzureEmulator) -> None:
    vm = emulator.add_vm(SUB_A, "rg-app", "app-0", power_state="deallocated")
    emulator.operation_durations["start"] = 5.0
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(str(pre["data"]["correlationId"]), [vm])  # type: ignore[index]
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    emulator.operation_durations["deallocate"] = DEALLOCATE_SECONDS
    since = emulator.clock.now()

    host.deliver_event("post_maintenance", make_event("post", subscriptions=(SUB_A,)))
    host.run_queues()

    assert emulator.vm_power_state(vm) == "PowerState/deallocated"
    polls = [r for r in emulator.requests if r.time >= since and "/operations/" in r.path.lower()]
    # Each poll 2 s or more after the one before (never the pre phase's 1 s: a poll is due that long
    # after the last answer, so a busy machine only makes gaps longer), and the wait was polled
    # along the way (at least a third of the 30 due), not read once at its end.
    gaps = [later.time - earlier.time for earlier, later in pairwise(polls)]
    assert gaps and min(gaps) >= 2 - 1e-6, gaps
    assert DEALLOCATE_SECONDS / 2 / 3 <= len(polls) <= DEALLOCATE_SECONDS / 2 + 3, len(polls)
