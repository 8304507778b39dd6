"""Subscriptions are sent to in lanes of their own: one that ARM keeps throttling (another caller
drains its bucket) must not hold up the starts in the others."""

from __future__ import annotations

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from tests.conftest import SUB_A, SUB_B, make_event


@pytest.fixture
def emulator() -> AzureEmulator:
    # Slower simulated time than the other tests': retries wait on Retry-After (1 simulated s) and
    # must take clearly longer than a request's own CPU.
    return AzureEmulator(time_scale=0.01, latency=0.1)


def test_a_throttled_subscription_does_not_hold_up_the_others(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_PARALLELISM", "4")
    monkeypatch.setenv("MAINTENANCE_SNAPSHOT_DISKS", "none")
    throttled = [emulator.add_vm(SUB_A, "rg-a", f"a{i}", power_state="deallocated") for i in range(8)]
    free = [emulator.add_vm(SUB_B, "rg-b", f"b{i}", power_state="deallocated") for i in range(8)]
    for vm in throttled:
        emulator.fail("start", vm, status=429, code="TooManyRequests", times=4)
    pre = make_event("pre")
    emulator.add_run(str(pre["data"]["correlationId"]), throttled + free)  # type: ignore[index]

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    accepted = {r.path.lower().removesuffix("/start"): r.time for r in emulator.requests
                if r.method == "POST" and r.path.lower().endswith("/start") and r.status == 202}
    assert len(accepted) == 16, "every VM is started, the throttled ones after their retries"
    last_free = max(accepted[vm.lower()] for vm in free)
    first_throttled = min(accepted[vm.lower()] for vm in throttled)
    assert last_free < first_throttled, (
        f"subscription B's starts waited on A's retries: last B start at {last_free:.1f} s, "
        f"first A start accepted at {first_throttled:.1f} s")
