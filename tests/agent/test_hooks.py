"""Hook processes: environment and stdin, exit codes, timeouts killing the whole group, stop."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from scheduled_events_agent.agent import utcnow
from scheduled_events_agent.config import Hook
from scheduled_events_agent.document import parse_event
from scheduled_events_agent.hooks import HookRunner, hook_environment

from tests.agent.conftest import RECORDING_HOOK, hook_calls

EVENT = parse_event({
    "EventId": "602d9444-d2cd-49c7-8624-8643e7171297", "EventType": "Reboot", "ResourceType": "VirtualMachine",
    "Resources": ["vm-a", "vm-b"], "EventStatus": "Scheduled", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT",
    "Description": "Host server is undergoing maintenance.", "EventSource": "Platform", "DurationInSeconds": 5,
})


def runner(**kwargs: float) -> HookRunner:
    return HookRunner(kill_grace_seconds=kwargs.get("grace", 0.5), now=utcnow)


def env() -> dict[str, str]:
    return hook_environment(EVENT, vm_name="vm-a", incarnation=7)


def test_environment_and_stdin(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = runner().run(Hook("rec", (sys.executable, "-c", RECORDING_HOOK, str(out)), 10), EVENT, env())
    assert result.succeeded and result.exit_code == 0
    [call] = hook_calls(out)
    assert call["env"] == {
        "SCHEDULED_EVENT_ID": EVENT.event_id, "SCHEDULED_EVENT_TYPE": "Reboot",
        "SCHEDULED_EVENT_STATUS": "Scheduled", "SCHEDULED_EVENT_NOT_BEFORE": "Mon, 19 Sep 2016 18:29:47 GMT",
        "SCHEDULED_EVENT_RESOURCES": "vm-a,vm-b", "SCHEDULED_EVENT_RESOURCE_TYPE": "VirtualMachine",
        "SCHEDULED_EVENT_SOURCE": "Platform", "SCHEDULED_EVENT_DURATION_SECONDS": "5",
        "SCHEDULED_EVENT_DESCRIPTION": "Host server is undergoing maintenance.",
        "SCHEDULED_EVENT_DOCUMENT_INCARNATION": "7", "SCHEDULED_EVENT_VM_NAME": "vm-a",
        "SCHEDULED_EVENT_HOOK_PHASE": "scheduled", "SCHEDULED_EVENT_FIRST_SEEN_STATUS": "Scheduled",
        "SCHEDULED_EVENT_DEADLINE": "",
    }
    assert json.loads(call["stdin"]) == dict(EVENT.raw)


def test_shell_commands_output_and_exit_codes() -> None:
    result = runner().run(Hook("sh", ("/bin/sh", "-c", "echo draining; echo oops >&2; exit 4"), 10), EVENT, env())
    assert (result.status, result.exit_code) == ("failed", 4)
    assert result.output == "draining\noops\n"


def test_a_missing_executable_is_a_failure_not_a_crash() -> None:
    result = runner().run(Hook("missing", ("/nonexistent/hook",), 10), EVENT, env())
    assert result.status == "error" and "No such file" in result.output


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The child ignores SIGTERM and outlives its parent unless the whole group is killed.
    script = f"(trap '' TERM; sleep 30) & echo $! > {pid_file}; wait"
    started = time.monotonic()
    result = runner(grace=0.3).run(Hook("stuck", ("/bin/sh", "-c", script), 0.5), EVENT, env())
    assert result.status == "timed-out"
    assert time.monotonic() - started < 5
    child = int(pid_file.read_text())
    assert not _alive(child), "a grandchild of a timed-out hook survived"


def test_output_of_a_background_child_does_not_hold_up_the_hook() -> None:
    # The background sleep keeps the hook's stdout open; the hook still counts as done.
    started = time.monotonic()
    result = runner().run(Hook("bg", ("/bin/sh", "-c", "sleep 5 & echo started"), 10), EVENT, env())
    assert result.succeeded and time.monotonic() - started < 3


def test_run_all_stops_at_the_first_failure(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    hooks = [Hook("ok", ("/bin/true",), 5), Hook("bad", ("/bin/false",), 5),
             Hook("later", (sys.executable, "-c", RECORDING_HOOK, str(out)), 5)]
    results = runner().run_all(hooks, EVENT, env())
    assert [(r.name, r.status) for r in results] == [("ok", "succeeded"), ("bad", "failed"), ("later", "skipped")]
    assert not out.exists()


def test_stopping_the_agent_interrupts_a_running_hook() -> None:
    hook_runner = runner(grace=0.2)
    threading.Timer(0.3, hook_runner.cancel.set).start()
    started = time.monotonic()
    result = hook_runner.run(Hook("long", ("/bin/sleep", "30"), 60), EVENT, env())
    assert result.status == "interrupted"
    assert time.monotonic() - started < 5


def test_a_deadline_cuts_a_hook_short_and_its_own_timeout_still_applies() -> None:
    started = time.monotonic()
    cut = runner(grace=0.2).run(Hook("drain", ("/bin/sleep", "30"), 300), EVENT, env(),
                                deadline=utcnow() + timedelta(seconds=0.4))
    assert cut.status == "cut-short" and time.monotonic() - started < 3
    # A deadline further away than the hook's own timeout: an ordinary timeout.
    timed_out = runner(grace=0.2).run(Hook("drain", ("/bin/sleep", "30"), 0.3), EVENT, env(),
                                      deadline=utcnow() + timedelta(minutes=10))
    assert timed_out.status == "timed-out"
    missed = runner().run(Hook("late", ("/bin/true",), 10), EVENT, env(), deadline=utcnow() - timedelta(seconds=1))
    assert missed.status == "cut-short" and "not started" in missed.output and missed.exit_code is None


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(")")[-1].split()[0] == "Z":
                    return False  # a zombie waiting for its new parent to reap it: dead
        except FileNotFoundError:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True
