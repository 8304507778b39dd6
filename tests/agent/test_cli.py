"""The console entry point: --help, config errors, and a real run stopped with SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scheduled_events_agent.cli import main

from tests.agent.conftest import AGENT_SRC, hook_calls, recording_hook
from tests.agent.fakes import EventGridServer, ScheduledEventsServer


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    # main() configures the root logger as a process would (basicConfig, force=True) onto this
    # test's captured stderr; left there, every later test's log line hits a closed stream.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_a_config_error_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"events": {"Reboot": {"hooks": [{"command": "x", "timeout": 5}]}}}))
    assert main(["--config", str(path)]) == 2
    assert "events.Reboot.hooks[0].timeout: unknown key" in capsys.readouterr().err


def test_check_config_prints_the_effective_settings(
    tmp_path: Path, base_config: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(base_config | {
        "events": {"Reboot": {"approval": "approve", "end_hooks": [{"name": "undo", "command": "true"}]}},
        "approval_rules": [{"name": "short-freeze", "event_types": ["Freeze"], "duration_under_seconds": 9,
                            "approval": "approve-immediately"}],
        "must_go_alone": ["vm-db"]}))
    assert main(["--config", str(path), "--check-config"]) == 0
    out = capsys.readouterr().out
    assert "Reboot: hooks none; end hooks undo (300 s); approval approve" in out
    assert "approval_rules[0] short-freeze: type Freeze, duration under 9 s -> approve-immediately" in out
    assert "must_go_alone: vm-db" in out and "forwarding: http://127.0.0.1" in out


def test_the_service_runs_and_stops_cleanly_on_sigterm(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, base_config: dict[str, Any]
) -> None:
    calls = tmp_path / "calls.jsonl"
    config = base_config | {
        "stop_grace_seconds": 0.3,
        "events": {
            "Reboot": {"hooks": [recording_hook(calls)], "approval": "approve"},
            # Still running when SIGTERM comes: killed after the grace and recorded as interrupted.
            "Freeze": {"hooks": [{"name": "long", "command": ["/bin/sleep", "30"], "timeout_seconds": 60}]},
        },
    }
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    reboot = imds.add_event("Reboot")
    freeze = imds.add_event("Freeze")
    env = {**os.environ, "PYTHONPATH": str(AGENT_SRC), "NO_PROXY": "127.0.0.1,localhost"}
    process = subprocess.Popen([sys.executable, "-m", "scheduled_events_agent", "--config", str(config_path)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not (imds.approvals and len(topic.received) >= 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert imds.approvals == [{"StartRequests": [{"EventId": reboot}]}]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = output.decode()
    assert process.returncode == 0, log
    assert "SIGTERM received: stopping" in log and "agent stopped" in log

    state = json.loads((Path(config["state_dir"]) / "state.json").read_text())
    assert state["events"][reboot]["approval"] == "approved"
    assert state["events"][freeze]["hooks"] == "failed"
    assert state["events"][freeze]["hook_results"][0]["status"] == "interrupted"
    assert len(hook_calls(calls)) == 1
    subjects = [(s, t) for s, t in topic.types()]
    assert (freeze, "HookFailed") in subjects, "the interrupted hook is forwarded before the agent exits"
    assert not list(Path(config["state_dir"]).glob(".*.tmp")), "no half-written files"
