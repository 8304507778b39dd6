"""A subscription the app's identity cannot read: Resource Graph answers it with nothing, not an
error. It is detected (absent from `resourcecontainers`), warned about by name with the likely
missing role, recorded on the run, and fails the run by the subscriptions-readable check."""

from __future__ import annotations

import logging

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, SUB_B, make_event
from tests.reliability.conftest import run_of

SUB_C = "00000000-0000-0000-0000-00000000000c"


def test_a_subscription_the_identity_cannot_read_fails_the_run_by_name(
    host: FunctionsHost, emulator: AzureEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    seen = emulator.add_vm(SUB_A, "rg-a", "seen", power_state="deallocated")
    hidden = emulator.add_vm(SUB_B, "rg-b", "hidden", power_state="deallocated")
    emulator.readable_subscriptions = {SUB_A}  # no Reader on SUB_B
    pre = make_event("pre", subscriptions=(SUB_A, SUB_B))
    emulator.add_run(run_of(pre), [seen, hidden])

    with caplog.at_level(logging.WARNING):
        host.deliver_event("pre_maintenance", pre)
        host.run_queues()

    assert emulator.vm_power_state(seen) == "PowerState/running"
    assert emulator.actions(hidden) == [], "it could not even be found"
    assert emulator.run_status(run_of(pre)) == "Cancelled", "the run would go ahead with SUB_B unchecked"
    run = get_runtime().ledger.get_run(run_of(pre))
    assert run is not None and run["UnreadableSubscriptions"] == SUB_B.lower()
    assert f"subscriptions-readable: /subscriptions/{SUB_B.lower()}: not readable" in run["FailingReasons"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(SUB_B.lower() in m and "Reader" in m for m in warnings)


def test_a_run_whose_only_subscription_is_unreadable_is_not_an_empty_run(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    hidden = emulator.add_vm(SUB_B, "rg-b", "hidden", power_state="stopped")
    emulator.readable_subscriptions = set()
    pre = make_event("pre", subscriptions=(SUB_B,))
    emulator.add_run(run_of(pre), [hidden])

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled"
    assert get_runtime().ledger.get_run(run_of(pre))["Verdict"] == "failed"  # type: ignore[index]


def test_a_readable_subscription_without_machines_of_the_run_is_reported_not_failed(
    host: FunctionsHost, emulator: AzureEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-a", "only", power_state="deallocated")
    emulator.add_subscription(SUB_C)
    pre = make_event("pre", subscriptions=(SUB_A, SUB_C))
    emulator.add_run(run_of(pre), [vm])

    with caplog.at_level(logging.WARNING):
        host.deliver_event("pre_maintenance", pre)
        host.run_queues()

    assert emulator.run_status(run_of(pre)) != "Cancelled"
    run = get_runtime().ledger.get_run(run_of(pre))
    assert run is not None and run["Verdict"] == "ready" and run["SubscriptionsWithoutMachines"] == SUB_C
    assert any(SUB_C in r.getMessage() and "none of this run's machines" in r.getMessage() for r in caplog.records)
