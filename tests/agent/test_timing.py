"""Timing: hooks bounded by the notice before NotBefore (RFC 1123 or ISO 8601), no late approval,
polling and backoff near once a second, and a Preempt never waiting behind another event's hook
(issue 14, gap 3)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from scheduled_events_agent.config import parse_config

from tests.agent.conftest import AgentFactory, FakeMonotonic, hook_calls, recording_hook, settle
from tests.agent.fakes import ScheduledEventsServer, rfc1123

SLOW = {"name": "drain", "command": "sleep 30", "timeout_seconds": 300}
FORMATS: dict[str, Callable[[datetime], str]] = {
    "rfc1123": rfc1123,
    "iso-z": lambda when: when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "iso-offset": lambda when: when.astimezone(timezone(timedelta(hours=2))).isoformat(timespec="seconds"),
    "iso-7-digits": lambda when: when.strftime("%Y-%m-%dT%H:%M:%S.1234567Z"),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_hook_outliving_the_notice_is_cut_short_and_the_event_not_approved(
    fmt: str, imds: ScheduledEventsServer, make_agent: AgentFactory
) -> None:
    agent = make_agent(notice_margin_seconds=0.5, events={"Reboot": {"approval": "approve", "hooks": [SLOW]}})
    event_id = imds.add_event("Reboot")
    imds.update(event_id, NotBefore=FORMATS[fmt](datetime.now(UTC) + timedelta(seconds=2)))
    started = time.monotonic()
    settle(agent)

    assert time.monotonic() - started < 3.5, "the 300 s hook ran past NotBefore"
    record = agent.state.events[event_id]
    [result] = record.hook_results
    assert result["status"] == "cut-short"
    assert (record.hooks, record.approval) == ("failed", "hooks-failed")
    assert imds.approvals == []


def test_hooks_see_their_deadline(tmp_path: Path, imds: ScheduledEventsServer, make_agent: AgentFactory) -> None:
    calls = tmp_path / "calls.jsonl"
    agent = make_agent(notice_margin_seconds=5, events={"Preempt": {"hooks": [recording_hook(calls)]}})
    imds.add_event("Preempt", not_before=timedelta(seconds=30))
    settle(agent)
    [call] = hook_calls(calls)
    deadline = datetime.fromisoformat(call["env"]["SCHEDULED_EVENT_DEADLINE"])
    expected = datetime.now(UTC) + timedelta(seconds=25)
    assert abs((deadline - expected).total_seconds()) < 3


def test_no_hook_starts_and_nothing_is_approved_once_not_before_has_come(
    tmp_path: Path, imds: ScheduledEventsServer, make_agent: AgentFactory
) -> None:
    calls = tmp_path / "calls.jsonl"
    agent = make_agent(default_approval="approve", events={"Reboot": {"hooks": [recording_hook(calls)]}})
    late_hooks = imds.add_event("Reboot", not_before=timedelta(seconds=-5))
    late_freeze = imds.add_event("Freeze", not_before=timedelta(seconds=-5))
    settle(agent)

    assert hook_calls(calls) == []
    assert agent.state.events[late_hooks].hook_results[0]["status"] == "cut-short"
    assert agent.state.events[late_freeze].approval == "too-late"
    assert imds.approvals == []


def test_a_preempt_never_waits_behind_a_long_hook(
    tmp_path: Path, imds: ScheduledEventsServer, make_agent: AgentFactory
) -> None:
    calls = tmp_path / "checkpoint.jsonl"
    # hook_workers once capped how many events' hooks ran at a time; it no longer queues anything.
    agent = make_agent(hook_workers=1, stop_grace_seconds=0.1, events={
        "Reboot": {"hooks": [SLOW], "approval": "approve"},
        "Preempt": {"hooks": [recording_hook(calls, name="checkpoint")], "approval": "approve"},
    })
    reboot = imds.add_event("Reboot")
    agent.run_once()
    assert agent.hooks_running == 1
    preempt = imds.add_event("Preempt", not_before=timedelta(seconds=30))
    started = time.monotonic()
    while not imds.approvals and time.monotonic() - started < 5:
        agent.run_once()
        time.sleep(0.02)

    assert imds.approvals == [{"StartRequests": [{"EventId": preempt}]}]
    assert time.monotonic() - started < 2
    assert len(hook_calls(calls)) == 1
    assert agent.state.events[reboot].hooks == "running"


def test_polling_and_backoff_stay_near_once_a_second(
    imds: ScheduledEventsServer, make_agent: AgentFactory, clock: FakeMonotonic
) -> None:
    defaults = parse_config({})
    assert (defaults.poll_interval_seconds, defaults.backoff_initial_seconds, defaults.backoff_max_seconds) == (
        1.0, 1.0, 2.0)
    agent = make_agent(backoff_initial_seconds=None, backoff_max_seconds=None)  # the defaults
    imds.down()
    attempts: list[float] = []
    seen = 0
    for _ in range(200):  # 20 s in 0.1 s steps
        agent.run_once()
        failures = agent._poll_backoff.failures  # noqa: SLF001 - counting attempts without a server
        if failures != seen:
            attempts.append(clock.now)
            seen = failures
        clock.advance(0.1)
    gaps = [round(b - a, 1) for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] == 1 and set(gaps[1:]) == {2}
