"""Health after patching, through the registered functions: the machines expected to be on are on
again (instance view), their VM agent is Ready, the application's probe answers; the failing ones
are checked again within the wait, and one that still fails is a rollback candidate when the run
has snapshots of its disks (its row, `HealthSummary`, the report)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from azure.storage.blob import BlobClient

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers import runtime as app_runtime
from handlers.core.status import Outcome
from handlers.ledger import MachineRecord
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, SUB_B, make_event


def run_of(event: dict[str, object]) -> str:
    return str(event["data"]["correlationId"])  # type: ignore[index]


def rows(event: dict[str, object]) -> dict[str, MachineRecord]:
    return {r.name: r for r in get_runtime().ledger.list_machines(run_of(event))}


def run_row(event: dict[str, object]) -> dict[str, Any]:
    row = get_runtime().ledger.get_run(run_of(event))
    assert row is not None
    return row


def health_summary(event: dict[str, object]) -> dict[str, Any]:
    return json.loads(str(run_row(event)["HealthSummary"]))  # type: ignore[no-any-return]


def whole_run(host: FunctionsHost, emulator: AzureEmulator, machines: list[str], *,
              before_post: Callable[[], object] | None = None, status: str = "Succeeded") -> dict[str, object]:
    """Pre event, its queues, then `before_post` (what patching did to the machines), post event."""
    pre = make_event("pre")
    emulator.add_run(run_of(pre), machines)
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    if before_post is not None:
        before_post()
    host.deliver_event("post_maintenance", make_event("post", status=status))
    host.run_queues()
    return pre


def report_files(event: dict[str, object], app_env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """The run's report: its JSON and its HTML, read back from the app's storage."""
    name = str(run_row(event)["ReportUrl"]).split("/reports/", 1)[1]
    connection = app_env["AzureWebJobsStorage"]
    page = BlobClient.from_connection_string(connection, "reports", name).download_blob().readall().decode()
    data = BlobClient.from_connection_string(connection, "reports", name.replace(".html", ".json"))
    return json.loads(data.download_blob().readall()), page


def resumed_at(event: dict[str, object]) -> str:
    """The step the post phase last went on at in a new invocation ("": it ran in one)."""
    phase = get_runtime().ledger.get_phase(run_of(event), "post")
    assert phase is not None
    return str(phase.get("Resume") or "")


def instance_views(emulator: AzureEmulator, vm: str) -> int:
    return emulator.count("GET", path_contains=f"{vm}/instanceView")


def test_a_vm_running_before_and_stopped_after_is_a_rollback_candidate(
    host: FunctionsHost, emulator: AzureEmulator, app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MAINTENANCE_POST_CHECK_WAIT_SECONDS", "20")
    app = emulator.add_vm(SUB_A, "rg-app", "app-01", power_state="running", data_disks=1)
    web = emulator.add_vm(SUB_B, "rg-web", "web-02", power_state="running")
    monkeypatch.setenv("MAINTENANCE_SNAPSHOT_DISKS", "all")
    caplog.set_level(logging.WARNING, logger="maintenance")
    pre = whole_run(host, emulator, [app, web], before_post=lambda: emulator.set_power_state(app, "stopped"))

    recorded = rows(pre)
    assert recorded["app-01"].health == "failed"
    assert recorded["app-01"].health_detail == \
        "not running: power state stopped (it was running before the window)"
    assert (recorded["web-02"].health, recorded["web-02"].health_detail) == ("passed", "")
    snapshots = sorted((s for s in get_runtime().ledger.list_snapshots(run_of(pre)) if s.vm_id.lower() == app.lower()),
                       key=lambda s: s.role != "os")
    assert [s.outcome for s in snapshots] == [Outcome.SUCCEEDED, Outcome.SUCCEEDED]
    ids = [s.snapshot_id for s in snapshots]
    assert all("/providers/Microsoft.Compute/snapshots/" in i for i in ids)

    summary = health_summary(pre)
    assert summary["waited_seconds"] >= 20, "rechecked for the whole wait before giving up"
    assert {k: summary[k] for k in ("checks", "checked", "passed", "failed", "rollback_candidates",
                                    "rollback_candidates_not_listed", "run_findings")} == {
        "checks": ["running-again"], "checked": 2, "passed": 1, "failed": 1,
        "rollback_candidates": [{"name": "app-01", "resource_id": app, "snapshot_ids": ids,
                                 "reasons": ["not running: power state stopped (it was running before the window)"]}],
        "rollback_candidates_not_listed": 0, "run_findings": []}
    assert float(run_row(pre)["HealthWaited"]) >= 20 and resumed_at(pre) == "", "waited in one invocation"
    assert any(r.levelno == logging.WARNING and app in r.getMessage() and "rollback candidate" in r.getMessage()
               and run_of(pre) in r.getMessage() for r in caplog.records)

    data, page = report_files(pre, app_env)
    by_name = {m["name"]: m for m in data["machines"]}
    assert by_name["app-01"]["health"] == {
        "passed": False, "reasons": ["not running: power state stopped (it was running before the window)"],
        "rollback_candidate": True, "snapshot_ids": ids}
    assert by_name["web-02"]["health"] == {"passed": True, "reasons": [], "rollback_candidate": False,
                                           "snapshot_ids": []}
    assert data["counts"]["unhealthy"] == 1 and data["counts"]["rollback_candidates"] == 1
    assert data["run"]["health"]["rollback_candidates"][0]["resource_id"] == app
    assert "rollback candidate" in page and "1</span> <span class=\"l\">rollback candidates" in page
    assert all(i.rsplit("/", 1)[1] in page for i in ids), "the snapshots a rollback would use are named"
    assert all(i.succeeded for i in host.invocations)


def test_a_vm_whose_agent_is_not_ready_fails_vm_agent_ready(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_POST_CHECKS", "running-again,vm-agent-ready")
    monkeypatch.setenv("MAINTENANCE_POST_CHECK_WAIT_SECONDS", "10")
    sql = emulator.add_vm(SUB_A, "rg-data", "sql-01", power_state="running", os_type="Windows")
    web = emulator.add_vm(SUB_A, "rg-web", "web-03", power_state="running")
    pre = whole_run(host, emulator, [sql, web], before_post=lambda: emulator.set_agent_ready(sql, False))

    recorded = rows(pre)
    assert (recorded["sql-01"].health, recorded["sql-01"].health_detail) == ("failed", "the VM agent is not Ready")
    assert recorded["web-03"].health == "passed"
    summary = health_summary(pre)
    assert (summary["checked"], summary["failed"]) == (2, 1)
    assert [c["reasons"] for c in summary["rollback_candidates"]] == [["the VM agent is not Ready"]]


def test_a_vm_back_a_little_later_passes_after_a_recheck(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_POST_CHECK_WAIT_SECONDS", "3600")
    vm = emulator.add_vm(SUB_A, "rg-app", "app-04", power_state="running")
    seen: dict[str, int] = {}

    def rebooting() -> None:
        """Stopped when the post phase looks first; back on once it has seen it stopped."""
        emulator.set_power_state(vm, "stopped")
        seen["before"] = instance_views(emulator, vm)

        def comes_back() -> None:
            deadline = time.monotonic() + 30
            while instance_views(emulator, vm) == seen["before"] and time.monotonic() < deadline:
                time.sleep(0.001)
            emulator.set_power_state(vm, "running")

        threading.Thread(target=comes_back, daemon=True).start()

    pre = whole_run(host, emulator, [vm], before_post=rebooting)

    assert (rows(pre)["app-04"].health, rows(pre)["app-04"].health_detail) == ("passed", "")
    assert instance_views(emulator, vm) - seen["before"] >= 2, "found stopped, then checked again"
    summary = health_summary(pre)
    assert (summary["checked"], summary["passed"], summary["rollback_candidates"]) == (1, 1, [])
    assert 0 < summary["waited_seconds"] < 3600, "it stopped waiting once the VM was back"
    assert resumed_at(pre) == "", "rechecked within the invocation"


def test_machines_the_run_turns_off_or_leaves_alone_are_not_flagged(
    host: FunctionsHost, emulator: AzureEmulator, app_env: dict[str, str]
) -> None:
    started = emulator.add_vm(SUB_A, "rg-app", "started", power_state="deallocated")
    turned_off = emulator.add_vm(SUB_A, "rg-app", "turned-off", power_state="running",
                                 tags={"maintenance-after": "deallocate"})
    kept_on = emulator.add_vm(SUB_A, "rg-app", "kept-on", power_state="deallocated",
                              tags={"maintenance-after": "leave-running"})
    opted_out = emulator.add_vm(SUB_B, "rg-app", "opted-out", power_state="running",
                                tags={"maintenance-opt-out": "true"})
    pre = whole_run(host, emulator, [started, turned_off, kept_on, opted_out],
                    before_post=lambda: emulator.set_power_state(opted_out, "stopped"))

    assert emulator.vm_power_state(started) == "PowerState/deallocated"
    assert emulator.vm_power_state(turned_off) == "PowerState/deallocated"
    recorded = rows(pre)
    assert {name: r.health for name, r in recorded.items()} == {
        "started": "", "turned-off": "", "kept-on": "passed", "opted-out": ""}
    summary = health_summary(pre)
    assert (summary["checked"], summary["passed"], summary["failed"]) == (1, 1, 0)
    data, page = report_files(pre, app_env)
    by_name = {m["name"]: m for m in data["machines"]}
    assert by_name["started"]["health"] is None and by_name["turned-off"]["health"] is None
    assert by_name["kept-on"]["health"]["passed"] is True
    assert data["counts"]["unhealthy"] == 0 and "rollback candidate" not in page


@pytest.mark.parametrize(("answers", "finding"), [([503], "answered 503"), ([503, 200], None)],
                         ids=["keeps-failing", "back-after-a-recheck"])
def test_http_probe_failing_is_a_finding_for_the_run(
    host: FunctionsHost, emulator: AzureEmulator, app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    probe_server: dict[str, Any], answers: list[int], finding: str | None,
) -> None:
    probe_server["answers"] = answers
    monkeypatch.setenv("MAINTENANCE_POST_CHECKS", "running-again,http-probe")
    monkeypatch.setenv("MAINTENANCE_HTTP_PROBE_URL", probe_server["url"])
    monkeypatch.setenv("MAINTENANCE_HTTP_PROBE_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("MAINTENANCE_POST_CHECK_WAIT_SECONDS", "600")  # 0.3 s at the emulator's time scale
    vm = emulator.add_vm(SUB_A, "rg-app", "app-05", power_state="running")
    pre = whole_run(host, emulator, [vm])

    summary = health_summary(pre)
    assert (summary["checked"], summary["passed"], summary["failed"]) == (1, 1, 0), "a finding for no machine"
    expected = [f"http-probe: {probe_server['url']} {finding}"] if finding else []
    assert summary["run_findings"] == expected
    assert probe_server["requests"] >= len(answers)
    data, page = report_files(pre, app_env)
    assert data["run"]["health"]["run_findings"] == expected
    assert ("Unhealthy after patching" in page) is bool(finding)
    if finding:
        assert f"{probe_server['url']} {finding}" in page


def test_no_checks_checks_nothing(
    host: FunctionsHost, emulator: AzureEmulator, app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_POST_CHECKS", "none")
    vm = emulator.add_vm(SUB_A, "rg-app", "app-06", power_state="running")
    pre = whole_run(host, emulator, [vm], before_post=lambda: emulator.set_power_state(vm, "stopped"))
    before = instance_views(emulator, vm)

    assert rows(pre)["app-06"].health == "" and "HealthSummary" not in run_row(pre)
    data, page = report_files(pre, app_env)
    assert data["machines"][0]["health"] is None and data["run"]["health"] is None
    assert data["counts"]["unhealthy"] == 0 and "not checked" in page
    assert instance_views(emulator, vm) == before


def test_a_cancelled_run_is_checked_once_without_waiting(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_POST_CHECK_WAIT_SECONDS", "3600")
    vm = emulator.add_vm(SUB_A, "rg-app", "app-07", power_state="running")
    seen: dict[str, int] = {}

    def stop() -> None:
        emulator.set_power_state(vm, "deallocated")
        seen["before"] = instance_views(emulator, vm)

    pre = whole_run(host, emulator, [vm], before_post=stop, status="Canceled")

    assert rows(pre)["app-07"].health == "failed"
    assert instance_views(emulator, vm) - seen["before"] == 1, "read once: nothing was installed to wait for"
    assert health_summary(pre)["waited_seconds"] < 3600


def test_the_wait_goes_on_in_the_next_invocation(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_POST_CHECK_WAIT_SECONDS", "2400")
    vm = emulator.add_vm(SUB_A, "rg-app", "app-08", power_state="running")

    def on_simulated_time() -> None:
        # Deadlines on the emulator's time too: an invocation's 1680 s (functionTimeout 30 min, less
        # its margin) then pass in under a second, and the 2400 s wait needs two invocations.
        emulator.set_power_state(vm, "stopped")
        app_runtime.configure(transport=emulator.transport(), clock=emulator.clock, wall=emulator.clock.utcnow)

    pre = whole_run(host, emulator, [vm], before_post=on_simulated_time)

    assert rows(pre)["app-08"].health == "failed"
    waited = float(run_row(pre)["HealthWaited"])
    assert waited >= 2400, "the wait adds up over invocations"
    assert resumed_at(pre) == "health", "the phase went on at the step in a new message"
    assert all(i.succeeded for i in host.invocations)
