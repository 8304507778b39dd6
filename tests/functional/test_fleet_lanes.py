"""Subscriptions are sent to in lanes of their own: one that ARM keeps throttling (another caller
drains its bucket) must not hold up the starts in the others, and many subscriptions must not
mean many times MAINTENANCE_PARALLELISM threads."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.inventory import MachineKind, RunMachine
from handlers.logs import run_logger
from handlers.operations import MAX_SEND_WORKERS, MIN_LANE_WORKERS, Operation, run_operations
from handlers.power import power_operation
from handlers.runtime import get_runtime
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


def test_many_subscriptions_share_a_bounded_number_of_send_threads(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    subscriptions = [f"00000000-0000-0000-0000-{i:012d}" for i in range(1, 71)]
    machines = [RunMachine(emulator.add_vm(sub, "rg", f"vm{n}", power_state="deallocated"), MachineKind.VM, sub,
                           "rg", f"vm{n}") for sub in subscriptions for n in range(6)]
    clients = get_runtime().clients
    senders: set[int] = set()

    def slowly(operation: Operation) -> Operation:
        def send() -> Any:
            senders.add(threading.get_ident())
            time.sleep(0.02)  # every task of a lane is handed over before the first is answered
            return operation.send()
        return replace(operation, send=send)

    tasks = [[slowly(power_operation(clients, m, "start"))] for m in machines]
    results = run_operations(clients, tasks, parallelism=32, deadline=datetime.now(UTC) + timedelta(minutes=5),
                             log=run_logger(None))

    assert {r.outcome for r in results.values()} == {"succeeded"} and len(results) == 420
    per_lane = max(MIN_LANE_WORKERS, MAX_SEND_WORKERS // 70)
    assert len(senders) == 70 * per_lane, "each lane gets its share of the cap, not 6 threads of its own"
