"""An unchecked run never goes ahead: when the pre phase cannot establish the run's machines by the
deadline, the verdict cancels it (a cancel needs nothing but the correlation id), records why and
alerts; MAINTENANCE_UNCHECKED_RUN=report turns the cancel into a report."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.ledger.alerts import ALERT_MARKER
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, make_event, wait_for_fallback_verdict
from tests.reliability.conftest import arm_writes, run_of

SAFETY = 8


@pytest.fixture
def resource_graph_down(emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """A run of one deallocated VM whose cutoff is 14 s away (the deadline 6 s), with Resource
    Graph answering 503 to every query for the whole pre phase."""
    monkeypatch.setenv("MAINTENANCE_CUTOFF_SAFETY_SECONDS", str(SAFETY))
    vm = emulator.add_vm(SUB_A, "rg-app", "app-01", power_state="deallocated")
    emulator.fail("graph", status=503, code="ServiceUnavailable", message="Resource Graph is unavailable.")
    return vm


def test_resource_graph_down_for_the_whole_pre_phase_cancels_the_run_records_why_and_alerts(
    host: FunctionsHost, emulator: AzureEmulator, resource_graph_down: str, caplog: pytest.LogCaptureFixture
) -> None:
    pre = make_event("pre", subscriptions=(SUB_A,), cutoff_in=timedelta(seconds=14))
    emulator.add_run(run_of(pre), [resource_graph_down])

    with caplog.at_level(logging.ERROR):
        host.deliver_event("pre_maintenance", pre)
        host.run_queues()
        worker = [i.succeeded for i in host.invocations if i.function == "maintenance_worker"]
        assert worker == [False] * 5, "the worker fails on every attempt and its message goes to the poison queue"
        assert emulator.run_status(run_of(pre)) != "Cancelled", "nothing decides before the deadline"
        wait_for_fallback_verdict(pre, SAFETY)
        host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled", "an unchecked run must not go ahead"
    assert [w for w in arm_writes(emulator) if "applyupdates" not in w.lower()] == [], "only the cancel"
    ledger = get_runtime().ledger
    run = ledger.get_run(run_of(pre))
    assert run is not None and run["Verdict"] == "failed" and run["CancelOutcome"] == "accepted"
    assert "the run's machines could not be established" in run["FailingReasons"]
    assert "503" in run["Unchecked"] and "ServiceUnavailable" in run["Unchecked"]
    alerts = ledger.list_alerts(run_of(pre))
    assert {"unchecked-run", "poison-message"} <= set(alerts), sorted(alerts)
    assert "cancel: accepted" in alerts["unchecked-run"]["Message"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"{ALERT_MARKER} unchecked-run" in m and run_of(pre) in m for m in errors)
    assert ledger.get_phase(run_of(pre), "pre")["Status"] == "completed"  # type: ignore[index]


def test_with_unchecked_runs_reported_only_the_run_goes_ahead_with_the_alert(
    host: FunctionsHost, emulator: AzureEmulator, resource_graph_down: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_UNCHECKED_RUN", "report")
    pre = make_event("pre", subscriptions=(SUB_A,), cutoff_in=timedelta(seconds=14))
    emulator.add_run(run_of(pre), [resource_graph_down])

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    wait_for_fallback_verdict(pre, SAFETY)
    host.run_queues()

    assert emulator.run_status(run_of(pre)) != "Cancelled"
    assert arm_writes(emulator) == []
    run = get_runtime().ledger.get_run(run_of(pre))
    assert run is not None and run["Verdict"] == "failed"
    assert run["CancelOutcome"] == "not-requested (MAINTENANCE_UNCHECKED_RUN is report)"
    assert "unchecked-run" in get_runtime().ledger.list_alerts(run_of(pre))


def test_a_start_answered_502_is_sent_again_not_counted_against_the_run(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    # azure-core retries a POST on 500, 503 and 504 only; a gateway error once cancelled the run.
    vm = emulator.add_vm(SUB_A, "rg-app", "app-02", power_state="deallocated")
    emulator.fail("start", vm, status=502, code="BadGateway", message="The gateway did not answer.", times=1)
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [vm])

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.vm_power_state(vm) == "PowerState/running"
    assert emulator.run_status(run_of(pre)) != "Cancelled"
    assert get_runtime().ledger.get_run(run_of(pre))["Verdict"] == "ready"  # type: ignore[index]
