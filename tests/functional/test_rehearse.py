"""The rehearsal CLI against the emulator over HTTPS on loopback, as it meets live Azure:
its own transport, DefaultAzureCredential from the environment, an in-memory ledger."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator import AzureEmulator
from emulator.https_server import LoopbackEndpoints, serve_on_loopback
from tests.conftest import CONFIG_ID, SUB_A, make_event
from tools.rehearse import EXIT_EMPTY, EXIT_INPUT, EXIT_OK, EXIT_VERDICT, main


@pytest.fixture
def emulator() -> AzureEmulator:
    return AzureEmulator(time_scale=0.0005)


@pytest.fixture
def live(emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackEndpoints]:
    endpoints = serve_on_loopback(emulator)
    for name in list(os.environ):
        if name.startswith(("MAINTENANCE_", "AzureWebJobsStorage", "AZURE_")):
            monkeypatch.delenv(name)
    for name, value in endpoints.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MAINTENANCE_POLL_INTERVAL_SECONDS", "1")
    # The CLI configures logging as a program does; give the rest of the session its levels back.
    app_logger = logging.getLogger("maintenance")
    level, root_handlers = app_logger.level, list(logging.getLogger().handlers)
    yield endpoints
    endpoints.close()
    app_logger.setLevel(level)
    logging.getLogger().handlers[:] = root_handlers


def rehearse(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def event_file(tmp_path: Path, emulator: AzureEmulator, machines: list[str]) -> Path:
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(pre["data"]["correlationId"], machines)
    path = tmp_path / "pre.json"
    path.write_text(json.dumps(pre))
    return path


def writes(emulator: AzureEmulator) -> int:
    return sum(1 for r in emulator.requests if r.method in ("PUT", "DELETE")
               or (r.method == "POST" and "resourcegraph" not in r.path.lower()))


def test_dry_run_prints_the_plan_and_changes_nothing(
    live: LoopbackEndpoints, emulator: AzureEmulator, tmp_path: Path
) -> None:
    off = emulator.add_vm(SUB_A, "rg-r", "vm-off", power_state="deallocated")
    on = emulator.add_vm(SUB_A, "rg-r", "vm-on", power_state="running")

    code, out, err = rehearse("--event", str(event_file(tmp_path, emulator, [off, on])), "--keep-times",
                              "--dry-run", "--quiet")

    assert code == EXIT_OK, err
    assert writes(emulator) == 0
    assert "vm-off" in out and "start" in out and "planned" in out
    assert "the run would go ahead" in out
    assert "kept in memory" in err


def test_live_rehearsal_starts_and_snapshots(live: LoopbackEndpoints, emulator: AzureEmulator, tmp_path: Path) -> None:
    off = emulator.add_vm(SUB_A, "rg-r", "vm-off", power_state="stopped")

    code, out, err = rehearse("--event", str(event_file(tmp_path, emulator, [off])), "--keep-times", "--quiet")

    assert code == EXIT_OK, err + out
    assert emulator.actions(off) == ["start"]
    assert len(emulator.snapshots()) == 1
    assert "verdict: ready" in out


def test_failing_run_is_cancelled_and_exits_1(
    live: LoopbackEndpoints, emulator: AzureEmulator, tmp_path: Path
) -> None:
    off = emulator.add_vm(SUB_A, "rg-r", "vm-off", power_state="stopped")
    path = event_file(tmp_path, emulator, [off])
    emulator.fail("start", off, mode="operation", code="AllocationFailed")

    code, out, _ = rehearse("--event", str(path), "--keep-times", "--quiet")

    assert code == EXIT_VERDICT
    assert emulator.run_status(json.loads(path.read_text())["data"]["correlationId"]) == "Cancelled"
    assert "AllocationFailed" in out


def test_configuration_id_rehearses_the_next_run_without_cancelling(
    live: LoopbackEndpoints, emulator: AzureEmulator
) -> None:
    off = emulator.add_vm(SUB_A, "rg-r", "vm-off", power_state="deallocated")
    held = emulator.add_vm(SUB_A, "rg-r", "vm-held", power_state="running", tags={"maintenance-hold": "yes"})
    emulator.assign(CONFIG_ID, [off, held])

    code, out, err = rehearse("--configuration-id", CONFIG_ID, "--quiet")

    assert code == EXIT_VERDICT, err
    assert "the run would be cancelled" in out and "hold tag" in out
    assert emulator.actions(off) == ["start"]
    assert not [r for r in emulator.requests if "applyupdates" in r.path.lower()]


def test_bad_input_and_empty_runs_have_their_own_exit_codes(
    live: LoopbackEndpoints, emulator: AzureEmulator, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"eventType": "Microsoft.Maintenance.PreMaintenanceEvent", "data": {}}')
    code, _, err = rehearse("--event", str(broken), "--quiet")
    assert code == EXIT_INPUT and "data." in err

    empty = event_file(tmp_path, emulator, [])
    code, out, _ = rehearse("--event", str(empty), "--keep-times", "--quiet")
    assert code == EXIT_EMPTY and "no machines" in out


def test_dry_run_reports_what_would_cancel(live: LoopbackEndpoints, emulator: AzureEmulator, tmp_path: Path) -> None:
    held = emulator.add_vm(SUB_A, "rg-r", "vm-held", power_state="running", tags={"maintenance-hold": "INC-7"})

    code, out, _ = rehearse("--event", str(event_file(tmp_path, emulator, [held])), "--keep-times", "--dry-run",
                            "--quiet")

    assert code == EXIT_VERDICT
    assert "the run would be cancelled" in out and "INC-7" in out
    assert writes(emulator) == 0


def test_dry_run_shows_which_commands_would_run_where_and_in_which_wave(
    live: LoopbackEndpoints, emulator: AzureEmulator, tmp_path: Path
) -> None:
    db = emulator.add_vm(SUB_A, "rg-r", "db-01", power_state="deallocated", os_type="Windows",
                         tags={"maintenance-stop-services": "MSSQLSERVER", "maintenance-wave": "1"})
    app = emulator.add_vm(SUB_A, "rg-r", "app-01", power_state="running",
                          tags={"maintenance-pre-script": "example", "maintenance-wave": "2"})

    code, out, err = rehearse("--event", str(event_file(tmp_path, emulator, [app, db])), "--keep-times",
                              "--dry-run", "--quiet")

    assert code == EXIT_OK, err
    assert writes(emulator) == 0 and emulator.run_command_executions() == []
    lines = out.splitlines()
    db_line = next(line for line in lines if line.startswith("db-01"))
    app_line = next(line for line in lines if line.startswith("app-01"))
    assert lines.index(db_line) < lines.index(app_line), "listed wave by wave"
    assert " 1 " in db_line and "stop-services MSSQLSERVER (planned)" in db_line
    assert " 2 " in app_line and "script example (example.sh) (planned)" in app_line
