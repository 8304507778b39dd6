"""End-of-event hooks (after it happened, after a cancel, across restarts) and hooks for events
first seen already Started (issue 14, gap 1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from scheduled_events_agent.state import STATE_FILE

from tests.agent.conftest import AgentFactory, hook_calls, recording_hook, settle
from tests.agent.fakes import EventGridServer, ScheduledEventsServer


def ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


def reboot(calls: Path, ends: Path, *, start_exit: int = 0, **extra: Any) -> dict[str, Any]:
    return {"Reboot": {"hooks": [recording_hook(calls, exit_code=start_exit)],
                       "end_hooks": [recording_hook(ends, name="undo")], "approval": "wait", **extra}}


def test_end_hooks_run_once_when_the_event_is_over(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    agent = make_agent(events=reboot(calls, ends))
    event_id = imds.add_event("Reboot")
    settle(agent)
    assert hook_calls(ends) == []
    imds.start(event_id)
    settle(agent)
    assert hook_calls(ends) == [], "Started is not over"
    imds.remove(event_id)
    settle(agent)
    settle(agent, lambda: not agent.forwarder.pending)

    [start] = hook_calls(calls)
    assert start["env"]["SCHEDULED_EVENT_HOOK_PHASE"] == "scheduled"
    [end] = hook_calls(ends)
    env = end["env"]
    assert env["SCHEDULED_EVENT_HOOK_PHASE"] == "end"
    assert env["SCHEDULED_EVENT_ID"] == event_id
    assert env["SCHEDULED_EVENT_LAST_STATUS"] == env["SCHEDULED_EVENT_STATUS"] == "Started"
    assert env["SCHEDULED_EVENT_START_HOOKS"] == "succeeded"
    assert env["SCHEDULED_EVENT_FIRST_SEEN_STATUS"] == "Scheduled"
    assert env["SCHEDULED_EVENT_VANISHED_AT"] == agent.state.events[event_id].vanished_at
    assert json.loads(end["stdin"])["EventStatus"] == "Started"
    assert topic.types() == [(event_id, "New"), (event_id, "HookSucceeded"), (event_id, "Started"),
                             (event_id, "Vanished"), (event_id, "EndHookSucceeded")]
    assert topic.received[-1]["data"]["hookResults"][0]["name"] == "undo"
    assert agent.state.events[event_id].end_hooks == "succeeded"


@pytest.mark.parametrize("start_exit", [0, 5])
def test_end_hooks_run_when_azure_cancels_the_event(
    start_exit: int, tmp_path: Path, imds: ScheduledEventsServer, make_agent: AgentFactory
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    agent = make_agent(events=reboot(calls, ends, start_exit=start_exit))
    event_id = imds.add_event("Reboot")
    settle(agent)
    imds.remove(event_id)  # straight from Scheduled to gone: Azure decided not to apply it
    settle(agent)
    settle(agent)

    [end] = hook_calls(ends)
    assert end["env"]["SCHEDULED_EVENT_LAST_STATUS"] == "Scheduled"
    assert end["env"]["SCHEDULED_EVENT_START_HOOKS"] == ("succeeded" if start_exit == 0 else "failed"), \
        "a failed start hook may have half-stopped the app: recovery runs anyway"


def test_end_hooks_run_after_a_restart_when_the_event_ended_meanwhile(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    first = make_agent(events=reboot(calls, ends))
    event_id = imds.add_event("Reboot")
    settle(first)
    first.close()
    imds.start(event_id)
    imds.remove(event_id)  # the reboot happened while the agent was down

    second = make_agent(events=reboot(calls, ends))
    settle(second)
    settle(second, lambda: not second.forwarder.pending)
    second.close()
    third = make_agent(events=reboot(calls, ends))
    settle(third)
    settle(third)

    assert len(hook_calls(calls)) == 1 and len(hook_calls(ends)) == 1
    assert [t for _, t in topic.types()] == ["New", "HookSucceeded", "Vanished", "EndHookSucceeded"]


def test_end_hooks_interrupted_by_a_crash_are_not_rerun(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory,
    base_config: dict[str, Any],
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    event = {"EventId": "E1", "EventType": "Reboot", "ResourceType": "VirtualMachine", "Resources": ["vm-a"],
             "EventStatus": "Started", "NotBefore": "", "EventSource": "Platform", "DurationInSeconds": -1}
    state_dir = Path(base_config["state_dir"])
    state_dir.mkdir(parents=True)
    (state_dir / STATE_FILE).write_text(json.dumps({"version": 1, "last_incarnation": 1, "events": {"E1": {
        "event_id": "E1", "event": event, "first_seen_at": ago(30), "status": "Started", "vanished_at": ago(2),
        "hooks": "succeeded", "end_hooks": "running", "end_hooks_started_at": ago(1)}}}))

    agent = make_agent(events=reboot(calls, ends))
    settle(agent, lambda: not agent.forwarder.pending)
    settle(agent)

    assert hook_calls(ends) == []
    assert agent.state.events["E1"].end_hooks == "failed"
    assert topic.types() == [("E1", "EndHookFailed")]
    assert topic.received[0]["data"]["hookResults"][0]["status"] == "interrupted"


def test_end_hooks_wait_for_start_hooks_still_running(
    tmp_path: Path, imds: ScheduledEventsServer, make_agent: AgentFactory
) -> None:
    calls = tmp_path / "calls.jsonl"  # start and end hooks append to the same file: it shows the order
    slow = {"name": "slow", "command": "sleep 0.5", "timeout_seconds": 10}
    agent = make_agent(events={"Freeze": {"hooks": [slow, recording_hook(calls)],
                                          "end_hooks": [recording_hook(calls, name="undo")]}})
    event_id = imds.add_event("Freeze")
    agent.run_once()
    assert agent.hooks_running == 1
    imds.remove(event_id)  # a short Freeze: over before its start hooks are
    agent.run_once()
    settle(agent)
    settle(agent)

    assert [call["env"]["SCHEDULED_EVENT_HOOK_PHASE"] for call in hook_calls(calls)] == ["scheduled", "end"]


def test_no_end_hooks_when_no_hooks_ran_here(
    tmp_path: Path, imds: ScheduledEventsServer, make_agent: AgentFactory, base_config: dict[str, Any]
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    # An event that was over before this agent version (no end_hooks in its record).
    state_dir = Path(base_config["state_dir"])
    state_dir.mkdir(parents=True)
    event = {"EventId": "OLD", "EventType": "Reboot", "Resources": ["vm-a"], "EventStatus": "Started"}
    (state_dir / STATE_FILE).write_text(json.dumps({"version": 1, "last_incarnation": 1, "events": {"OLD": {
        "event_id": "OLD", "event": event, "first_seen_at": ago(30), "status": "Started", "vanished_at": ago(10),
        "hooks": "succeeded"}}}))
    agent = make_agent(events=reboot(calls, ends))
    other = imds.add_event("Reboot", resources=["vm-b"])
    settle(agent)
    imds.remove(other)
    settle(agent)
    settle(agent)

    assert hook_calls(calls) == [] and hook_calls(ends) == []
    assert agent.state.events["OLD"].end_hooks == ""
    assert agent.state.events[other].end_hooks == ""


def test_an_event_first_seen_started_gets_its_hooks_and_end_hooks(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    agent = make_agent(events=reboot(calls, ends, approval="approve"))
    # A host hardware failure: no notice, the event is Started when it first shows up.
    event_id = imds.add_event("Reboot", status="Started")
    settle(agent)
    imds.remove(event_id)
    settle(agent)
    settle(agent, lambda: not agent.forwarder.pending)

    [start] = hook_calls(calls)
    assert start["env"]["SCHEDULED_EVENT_HOOK_PHASE"] == "started"
    assert start["env"]["SCHEDULED_EVENT_FIRST_SEEN_STATUS"] == "Started"
    assert start["env"]["SCHEDULED_EVENT_DEADLINE"] == ""
    assert imds.approvals == []
    [end] = hook_calls(ends)
    assert end["env"]["SCHEDULED_EVENT_FIRST_SEEN_STATUS"] == "Started"
    assert [t for _, t in topic.types()] == ["New", "HookSucceeded", "Vanished", "EndHookSucceeded"]


def test_hooks_for_started_events_can_be_switched_off(
    tmp_path: Path, imds: ScheduledEventsServer, make_agent: AgentFactory
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    agent = make_agent(events=reboot(calls, ends, run_hooks_for_started_events=False))
    event_id = imds.add_event("Reboot", status="Started")
    settle(agent)
    imds.remove(event_id)
    settle(agent)
    settle(agent)

    assert hook_calls(calls) == [] and hook_calls(ends) == []
    assert agent.state.events[event_id].hooks == "skipped"
