"""The watch for pre events that never came: the `missed_pre_events` timer, through the host."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.runtime import get_runtime
from tests.conftest import CONFIG_ID, SUB_A, SUB_B, make_event

OTHER_CONFIG = CONFIG_ID.replace("mc-weekly", "mc-other-team")


def run_id(name: str, config: str = CONFIG_ID) -> str:
    return f"{config}/providers/Microsoft.Maintenance/applyUpdates/{name}"


def missed_alerts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "MAINTENANCE ALERT missed-pre-event" in r.getMessage()]


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAINTENANCE_ALLOWED_CONFIGURATION_IDS", CONFIG_ID)


def test_a_window_that_started_without_its_pre_event_is_alerted_once(
    host: FunctionsHost, emulator: AzureEmulator, watched: None, caplog: pytest.LogCaptureFixture
) -> None:
    vms = [emulator.add_vm(SUB_A if i % 2 else SUB_B, "rg-w", f"vm{i}", power_state="deallocated") for i in range(3)]
    started = datetime.now(UTC) - timedelta(minutes=8)
    missed = run_id("20261122020000")
    emulator.add_run(missed, vms, window_start=started, status="InProgress")

    with caplog.at_level(logging.INFO):
        assert host.fire_timer("missed_pre_events")
        assert host.fire_timer("missed_pre_events"), "the next tick finds the alert already raised"

    (alert,) = missed_alerts(caplog)
    assert "run 20261122020000 of configuration mc-weekly" in alert and "3 machine(s), InProgress" in alert
    assert f"{started:%Y-%m-%d %H:%M} UTC" in alert
    ledger = get_runtime().ledger
    assert set(ledger.list_alerts(missed)) == {"missed-pre-event"}
    run = ledger.get_run(missed)
    assert run is not None and run["LastAlert"].startswith("missed-pre-event: ") and run["WindowStart"] == started
    assert [emulator.vm_power_state(vm) for vm in vms] == ["PowerState/deallocated"] * 3, "nothing is acted on"


def test_runs_whose_pre_event_came_are_not_alerted(
    host: FunctionsHost, emulator: AzureEmulator, watched: None, caplog: pytest.LogCaptureFixture
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-w", "vm-ok", power_state="running")
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(str(pre["data"]["correlationId"]), [vm],  # type: ignore[index]
                     window_start=datetime.now(UTC) - timedelta(minutes=20))
    host.deliver_event("pre_maintenance", pre)

    with caplog.at_level(logging.INFO):
        assert host.fire_timer("missed_pre_events")

    assert missed_alerts(caplog) == []
    assert any("1 run(s) started in the watched span, 0 newly alerted" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("config", "minutes_ago", "why"), [
    (OTHER_CONFIG, 10, "a configuration this deployment does not watch (another team's schedule)"),
    (CONFIG_ID, 3, "within the grace: the pre event may still be on its way"),
    (CONFIG_ID, -30, "a window still ahead"),
    (CONFIG_ID, 70, "older than the watched hour"),
])
def test_runs_outside_the_watch_are_not_alerted(
    host: FunctionsHost, emulator: AzureEmulator, watched: None, caplog: pytest.LogCaptureFixture,
    config: str, minutes_ago: int, why: str,
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-w", "vm-x", power_state="running")
    emulator.add_run(run_id("20261122020000", config), [vm],
                     window_start=datetime.now(UTC) - timedelta(minutes=minutes_ago))

    with caplog.at_level(logging.INFO):
        assert host.fire_timer("missed_pre_events")

    assert missed_alerts(caplog) == [], why


def test_nothing_is_watched_without_allowed_configurations(
    host: FunctionsHost, emulator: AzureEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-w", "vm-y", power_state="running")
    emulator.add_run(run_id("20261122020000"), [vm], window_start=datetime.now(UTC) - timedelta(minutes=10))

    with caplog.at_level(logging.INFO):
        assert host.fire_timer("missed_pre_events")

    assert missed_alerts(caplog) == [] and emulator.requests == [], "no query at all"
    assert any("not watched (MAINTENANCE_ALLOWED_CONFIGURATION_IDS is empty)" in r.getMessage()
               for r in caplog.records)


def test_a_row_with_a_run_id_of_another_shape_is_left_out(
    host: FunctionsHost, emulator: AzureEmulator, watched: None, caplog: pytest.LogCaptureFixture
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-w", "vm-z", power_state="running")
    odd = run_id("20261122020000").replace("/applyUpdates/20261122020000", "/applyUpdates/../../x")
    emulator.add_run(odd, [vm], maintenance_configuration_id=CONFIG_ID,
                     window_start=datetime.now(UTC) - timedelta(minutes=10))

    with caplog.at_level(logging.INFO):
        assert host.fire_timer("missed_pre_events")

    assert missed_alerts(caplog) == []
    assert get_runtime().ledger.list_runs() == []
