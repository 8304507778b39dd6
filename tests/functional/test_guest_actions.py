"""In the guest, through the registered functions: services stopped before patching and started
after, operator scripts from the catalogue, Arc machines, waves, failures and repeats."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.mgmt.compute import ComputeManagementClient
from azure.storage.blob import BlobServiceClient

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.core.ids import subscription_of
from handlers.ledger import Ledger, MachineRecord
from handlers.phases.guest import command_name
from handlers.runtime import get_runtime
from tests.conftest import ARM, SUB_A, SUB_B, make_event

STOP = "maintenance-stop-services"


def run_of(event: dict[str, object]) -> str:
    return str(event["data"]["correlationId"])  # type: ignore[index]


def ledger() -> Ledger:
    return get_runtime().ledger


def rows(event: dict[str, object]) -> dict[str, MachineRecord]:
    return {r.name: r for r in ledger().list_machines(run_of(event))}


def request_times(emulator: AzureEmulator, method: str, needle: str) -> list[float]:
    return [r.time for r in emulator.requests if r.method == method and needle.lower() in r.path.lower()
            and 200 <= r.status < 300]


def pre_only(host: FunctionsHost, emulator: AzureEmulator, machines: list[str], **event: Any) -> dict[str, object]:
    """A run of these machines, its pre event delivered and its work done."""
    pre = make_event("pre", **event)
    emulator.add_run(run_of(pre), machines)
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    return pre


def pre_then_post(host: FunctionsHost, emulator: AzureEmulator, machines: list[str]) -> dict[str, object]:
    pre = pre_only(host, emulator, machines)
    host.deliver_event("post_maintenance", make_event("post"))
    host.run_queues()
    return pre


def test_services_stop_in_order_before_the_snapshot_and_start_in_reverse_after(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    started = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="deallocated",
                              tags={STOP: "nginx,myapp.service"})
    running = emulator.add_vm(SUB_B, "rg-db", "sql-01", power_state="running", os_type="Windows",
                              tags={STOP: "MSSQLSERVER,W3SVC"})
    emulator.script_behaviour(running, duration=30.0, output="MSSQLSERVER: stopped\nW3SVC: stopped\n")
    pre = pre_then_post(host, emulator, [started, running])

    web = emulator.run_command_executions(started)
    assert [e.run_command for e in web] == [command_name(run_of(pre), "stop-services")], \
        "a VM we start and turn off again gets no start script"
    assert "systemctl stop" in web[0].script and "for unit in 'nginx' 'myapp.service'; do" in web[0].script
    start_request = request_times(emulator, "POST", "/virtualMachines/web-01/start")[0]
    assert web[0].put_at > start_request + emulator.operation_durations["start"] - 1, "sent once it is running"
    web_snapshot = [r.time for r in emulator.requests if r.method == "PUT" and "web-01" in r.path.lower()
                    and "/snapshots/" in r.path.lower()]
    assert web[0].ended_at is not None and web_snapshot[0] >= web[0].ended_at

    sql = emulator.run_command_executions(running)
    assert [e.run_command for e in sql] == [command_name(run_of(pre), s) for s in ("stop-services", "start-services")]
    assert "@('MSSQLSERVER', 'W3SVC')" in sql[0].script and "Stop-Service" in sql[0].script
    assert "@('W3SVC', 'MSSQLSERVER')" in sql[1].script and "Start-Service" in sql[1].script, "reverse order"
    sql_snapshot = [r.time for r in emulator.requests if r.method == "PUT" and "sql-01" in r.path.lower()
                    and "/snapshots/" in r.path.lower()]
    assert sql[0].ended_at is not None and sql_snapshot[0] >= sql[0].ended_at, "the disk is taken quiescent"
    assert emulator.run_commands(started) == [] and emulator.run_commands(running) == [], "deleted after"

    recorded = rows(pre)
    assert recorded["sql-01"].guest_pre_outcome == "succeeded"
    assert recorded["sql-01"].guest_pre == "stop-services MSSQLSERVER,W3SVC"
    assert "stop-services: exit 0 after 30 s" in recorded["sql-01"].guest_pre_detail
    assert "W3SVC: stopped" in recorded["sql-01"].guest_pre_output
    assert recorded["sql-01"].guest_post_outcome == "succeeded" and recorded["sql-01"].os_type == "windows"
    assert recorded["web-01"].guest_post_outcome == "skipped"
    assert "turned off again" in recorded["web-01"].guest_post_detail
    assert emulator.run_status(run_of(pre)) != "Cancelled"
    assert all(i.succeeded for i in host.invocations)


def test_an_invalid_service_name_is_refused_before_anything_is_sent(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="running", tags={STOP: "nginx;reboot"})
    pre = pre_only(host, emulator, [vm])

    assert emulator.run_command_executions() == []
    assert emulator.run_status(run_of(pre)) == "Cancelled"
    row = rows(pre)["web-01"]
    assert row.guest_pre_outcome == "failed" and "'nginx;reboot' is not a service name" in row.guest_pre_detail
    run = ledger().get_run(run_of(pre))
    assert run is not None and "guest-actions" in str(run["FailingReasons"])


def test_a_failing_stop_script_cancels_the_run_and_its_output_is_kept(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="running", tags={STOP: "nginx"})
    emulator.script_behaviour(vm, duration=5.0, exit_code=1, error="nginx: systemctl stop failed\n",
                              contains="systemctl stop")
    pre = pre_only(host, emulator, [vm])

    assert emulator.run_status(run_of(pre)) == "Cancelled"
    row = rows(pre)["web-01"]
    assert row.guest_pre_outcome == "failed" and "stop-services: exit 1 after 5 s" in row.guest_pre_detail
    assert "nginx: systemctl stop failed" in row.guest_pre_output
    assert emulator.run_commands(vm) == [], "a command that ended is deleted"


def test_a_script_still_running_at_the_deadline_fails_the_run_and_is_left_to_the_post_phase(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_CUTOFF_SAFETY_SECONDS", "2")
    vm = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="running", tags={STOP: "nginx"})
    off = emulator.add_vm(SUB_A, "rg-web", "web-02", power_state="deallocated", tags={STOP: "nginx"})
    emulator.run_command_start_delay = 10_000_000.0  # the guest agent does not pick it up in time
    pre = make_event("pre", cutoff_in=timedelta(seconds=6))
    emulator.add_run(run_of(pre), [vm, off])
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled"
    row = rows(pre)["web-01"]
    assert row.guest_pre_outcome == "timed-out" and "still running at the deadline" in row.guest_pre_detail
    assert [c.name for c in emulator.run_commands(vm)] == [command_name(run_of(pre), "stop-services")]

    emulator.run_command_start_delay = 1.0
    host.deliver_event("post_maintenance", make_event("post", status="Canceled"))
    host.run_queues()
    assert [c.name for c in emulator.run_commands(vm)] == [], "the post phase deletes what the pre left"
    assert rows(pre)["web-01"].guest_post_outcome == "succeeded", "its services are started again"
    assert emulator.run_commands(off) == [], "also on a machine turned off again, which gets no command"
    assert rows(pre)["web-02"].guest_post_outcome == "skipped"


def test_an_answer_lost_after_the_put_does_not_run_the_script_twice(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="running", tags={STOP: "nginx"})
    emulator.fail("runCommand", vm, mode="lost-answer", times=1)
    pre = pre_only(host, emulator, [vm])

    assert len(emulator.run_command_executions(vm)) == 1, "read back, found, followed: not sent again"
    assert rows(pre)["web-01"].guest_pre_outcome == "succeeded"
    assert emulator.run_status(run_of(pre)) != "Cancelled"


def test_a_retried_worker_follows_the_command_an_earlier_attempt_created(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="running", tags={STOP: "nginx"})
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [vm])
    host.deliver_event("pre_maintenance", pre)
    # An earlier attempt recorded the machine, created its command, and died.
    earlier = ledger().claim_phase(run_of(pre), "pre")
    assert earlier is not None and not isinstance(earlier, type(None))
    ledger().add_rows(run_of(pre), [MachineRecord(
        resource_id=vm, kind="vm", subscription_id=SUB_A, resource_group="rg-web", name="web-01",
        location="westeurope", original_power_state="running", pre_outcome="not-needed", lane=subscription_of(vm),
        os_type="linux", stop_services="nginx", guest_pre="stop-services nginx", guest_pre_outcome="pending")])
    compute = ComputeManagementClient(_Credential(), SUB_A, base_url=ARM, transport=emulator.transport())
    compute.virtual_machine_run_commands.begin_create_or_update(
        "rg-web", "web-01", command_name(run_of(pre), "stop-services"),
        {"location": "westeurope", "properties": {"source": {"script": "echo earlier"}, "asyncExecution": True}},
        polling=False)
    ledger().release_phase(earlier, error="worker died")  # type: ignore[arg-type]

    host.run_queues()

    executions = emulator.run_command_executions(vm)
    assert [e.script for e in executions] == ["echo earlier"], "the earlier command is followed, not re-run"
    assert rows(pre)["web-01"].guest_pre_outcome == "succeeded"


def test_arc_servers_run_catalogue_scripts_before_and_after(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "drain.ps1").write_text("Write-Output 'drained'\n")
    (tmp_path / "smoke.ps1").write_text("Write-Output 'healthy'\n")
    (tmp_path / "drain.sh").write_text("echo drained\n")
    monkeypatch.setenv("MAINTENANCE_SCRIPT_FOLDER", str(tmp_path))
    arc = emulator.add_arc_machine(SUB_B, "rg-arc", "onprem-01", os_type="Windows", tags={
        "maintenance-pre-script": "drain", "maintenance-post-script": "smoke"})
    disconnected = emulator.add_arc_machine(SUB_B, "rg-arc", "onprem-02", status="Disconnected",
                                            tags={"maintenance-pre-script": "drain"})
    pre = pre_then_post(host, emulator, [arc, disconnected])

    assert [e.script for e in emulator.run_command_executions(arc)] == ["Write-Output 'drained'\n",
                                                                       "Write-Output 'healthy'\n"]
    assert all("/microsoft.hybridcompute/machines/onprem-01/runcommands/" in r.path.lower()
               for r in emulator.requests if r.method == "PUT" and "runcommands" in r.path.lower())
    recorded = rows(pre)
    assert recorded["onprem-01"].guest_pre_outcome == "succeeded"
    assert recorded["onprem-01"].guest_pre == "script drain (drain.ps1)"
    assert recorded["onprem-01"].guest_post_outcome == "succeeded"
    assert recorded["onprem-02"].guest_pre_outcome == "skipped" and emulator.run_command_executions(disconnected) == []
    assert "its Arc agent is disconnected" in recorded["onprem-02"].guest_pre_detail
    assert emulator.run_status(run_of(pre)) == "Cancelled", "a command that cannot run fails the check"


def test_the_catalogue_can_live_in_a_blob_container(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch, app_env: dict[str, str]
) -> None:
    container = BlobServiceClient.from_connection_string(app_env["AzureWebJobsStorage"]).get_container_client(
        f"scripts{uuid.uuid4().hex[:8]}")
    container.create_container()
    container.upload_blob("flush.sh", b"sync; echo flushed\n")
    monkeypatch.setenv("MAINTENANCE_SCRIPT_CONTAINER", container.container_name)
    vm = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="running", tags={"maintenance-pre-script": "flush"})
    missing = emulator.add_vm(SUB_A, "rg-web", "web-02", power_state="running",
                              tags={"maintenance-pre-script": "example"})  # in the folder, not in the container
    pre = pre_only(host, emulator, [vm, missing])

    assert [e.script for e in emulator.run_command_executions(vm)] == ["sync; echo flushed\n"]
    row = rows(pre)["web-02"]
    assert row.guest_pre_outcome == "failed" and emulator.run_command_executions(missing) == []
    expected = f"not in the catalogue: blob container '{container.container_name}', blob 'example.sh'"
    assert expected in row.guest_pre_detail


def test_waves_come_up_in_order_and_go_down_in_reverse(host: FunctionsHost, emulator: AzureEmulator) -> None:
    db = emulator.add_vm(SUB_A, "rg-app", "db-01", power_state="deallocated",
                         tags={"maintenance-wave": "1", STOP: "postgresql"})
    app = emulator.add_vm(SUB_A, "rg-app", "app-01", power_state="deallocated", tags={"maintenance-wave": "2"})
    first = emulator.add_vm(SUB_B, "rg-app", "cache-01", power_state="stopped")  # no wave: first
    emulator.script_behaviour(db, duration=40.0)
    pre_then_post(host, emulator, [app, db, first])

    start = {name: request_times(emulator, "POST", f"/virtualMachines/{name}/start")[0]
             for name in ("cache-01", "db-01", "app-01")}
    stop_ended = emulator.run_command_executions(db)[0].ended_at
    assert stop_ended is not None
    assert start["cache-01"] <= start["db-01"] - emulator.operation_durations["start"] + 1
    assert start["app-01"] >= stop_ended, "wave 2 starts once wave 1 is running and its services stopped"
    down = {name: request_times(emulator, "POST", f"/virtualMachines/{name}/")[-1] for name in ("db-01", "app-01")}
    assert down["db-01"] >= down["app-01"] + emulator.operation_durations["deallocate"] - 1, "reverse order"
    cache_down = request_times(emulator, "POST", "/virtualMachines/cache-01/powerOff")[0]
    assert cache_down >= down["db-01"] + emulator.operation_durations["deallocate"] - 1, "no wave: down last"


def test_a_wave_that_does_not_come_up_holds_the_next_and_cancels(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    db = emulator.add_vm(SUB_A, "rg-app", "db-01", power_state="deallocated", tags={"maintenance-wave": "1"})
    app = emulator.add_vm(SUB_A, "rg-app", "app-01", power_state="deallocated", tags={"maintenance-wave": "2"})
    emulator.fail("start", db, mode="operation", code="AllocationFailed")
    pre = pre_only(host, emulator, [db, app])

    assert emulator.actions(app) == [], "wave 2 never starts"
    assert emulator.run_status(run_of(pre)) == "Cancelled"
    assert "wave 2 not begun: wave 1 did not finish" in rows(pre)["app-01"].pre_detail


def test_dry_run_sends_no_command_and_says_what_would_run(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MAINTENANCE_DRY_RUN", "true")
    vm = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="deallocated",
                         tags={STOP: "nginx", "maintenance-pre-script": "example", "maintenance-wave": "3"})
    caplog.set_level(logging.INFO)
    pre = pre_then_post(host, emulator, [vm])

    assert emulator.count(path_contains="/runcommands/") == 0
    assert emulator.actions(vm) == []
    assert rows(pre)["web-01"].guest_pre_outcome == "planned"
    logged = caplog.text
    assert "would run script example (example.sh) on " + vm + " (linux, wave 3)" in logged
    assert "would run stop-services nginx on " + vm in logged


class _Credential:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("emulator-token", 2_000_000_000)


def test_a_command_left_running_is_deleted_after_the_window_when_no_machine_gets_one(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_CUTOFF_SAFETY_SECONDS", "2")
    off = emulator.add_vm(SUB_A, "rg-web", "web-02", power_state="deallocated", tags={STOP: "nginx"})
    emulator.run_command_start_delay = 10_000_000.0
    pre = make_event("pre", cutoff_in=timedelta(seconds=6))
    emulator.add_run(run_of(pre), [off])
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    assert len(emulator.run_commands(off)) == 1 and rows(pre)["web-02"].guest_pre_outcome == "timed-out"

    host.deliver_event("post_maintenance", make_event("post", status="Canceled"))
    host.run_queues()
    assert emulator.run_commands(off) == [] and emulator.actions(off) == ["start", "deallocate"]
    assert rows(pre)["web-02"].guest_post_outcome == "skipped"
