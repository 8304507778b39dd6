"""Once per event through any document sequence: malformed documents, an incarnation going back,
an event vanishing and coming back, and restarts in between (issue 14, defect 1)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import AgentFactory, FakeMonotonic, hook_calls, recording_hook, settle
from tests.agent.fakes import EventGridServer, ScheduledEventsServer


def with_end_hooks(calls: Path, ends: Path) -> dict[str, Any]:
    return {"Reboot": {"hooks": [recording_hook(calls)], "end_hooks": [recording_hook(ends, name="undo")],
                       "approval": "wait"}}


def serve(imds: ScheduledEventsServer, document: dict[str, Any]) -> None:
    imds.override = (200, json.dumps(document).encode())


def ticks(agent: Any, clock: FakeMonotonic, count: int, step: float = 2) -> None:
    for _ in range(count):
        agent.run_once()
        agent.wait_for_hooks(0.05)
        clock.advance(step)


def test_a_document_without_events_changes_nothing(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory,
    clock: FakeMonotonic, caplog: pytest.LogCaptureFixture,
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    agent = make_agent(events=with_end_hooks(calls, ends))
    event_id = imds.add_event("Reboot")
    settle(agent)

    serve(imds, {"DocumentIncarnation": 99})  # a few seconds of a document without Events
    with caplog.at_level(logging.ERROR, logger="scheduled_events_agent"):
        ticks(agent, clock, 4)
    imds.override = None
    clock.advance(2)
    settle(agent, lambda: not agent.forwarder.pending)
    settle(agent)

    assert len(hook_calls(calls)) == 1, "the hooks ran a second time"
    assert hook_calls(ends) == [], "a malformed document made the event look over"
    assert agent.state.events[event_id].active
    assert agent.state.last_incarnation == imds.incarnation
    assert topic.types() == [(event_id, "New"), (event_id, "HookSucceeded")]
    [logged] = [r.getMessage() for r in caplog.records if "Events is missing" in r.getMessage()]
    assert "malformed document skipped, the last good view kept" in logged


def test_an_incarnation_going_back_is_skipped(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory,
    clock: FakeMonotonic, caplog: pytest.LogCaptureFixture,
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    agent = make_agent(events=with_end_hooks(calls, ends))
    event_id = imds.add_event("Reboot")
    imds.update(event_id, Description="rescheduled")
    settle(agent)
    assert agent.state.last_incarnation == 3

    serve(imds, {"DocumentIncarnation": 1, "Events": []})  # an older document: the event not there yet
    with caplog.at_level(logging.WARNING, logger="scheduled_events_agent"):
        ticks(agent, clock, 5)  # 10 s, well under incarnation_reset_seconds
    assert agent.state.events[event_id].active
    assert agent.state.last_incarnation == 3
    imds.override = None
    clock.advance(2)
    settle(agent, lambda: not agent.forwarder.pending)

    assert len(hook_calls(calls)) == 1 and hook_calls(ends) == []
    assert topic.types() == [(event_id, "New"), (event_id, "HookSucceeded")]
    went_back = [r.getMessage() for r in caplog.records if "went back from 3 to 1" in r.getMessage()]
    assert len(went_back) == 1, "logged once per episode, not once a poll"


def test_a_lower_incarnation_that_lasts_is_taken_as_a_restarted_counter(
    tmp_path: Path, imds: ScheduledEventsServer, make_agent: AgentFactory, clock: FakeMonotonic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    agent = make_agent(events=with_end_hooks(calls, ends), incarnation_reset_seconds=30)
    old = imds.add_event("Reboot")
    for _ in range(5):
        imds.update(old, Description="bump")
    settle(agent)
    new = imds.add_event("Reboot")
    # The counter restarts (say, on another host) and keeps counting from there.
    serve(imds, {"DocumentIncarnation": 2, "Events": list(imds.document()["Events"])})
    with caplog.at_level(logging.WARNING, logger="scheduled_events_agent"):
        ticks(agent, clock, 20)  # 40 s
        settle(agent)

    assert agent.state.last_incarnation == 2
    assert any("taken as a restarted counter" in r.getMessage() for r in caplog.records)
    assert sorted(call["env"]["SCHEDULED_EVENT_ID"] for call in hook_calls(calls)) == sorted([old, new])
    assert hook_calls(ends) == []


def test_an_event_that_vanishes_and_comes_back_runs_each_hook_set_once(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    agent = make_agent(events=with_end_hooks(calls, ends))
    event_id = imds.add_event("Reboot")
    settle(agent)
    imds.remove(event_id)
    settle(agent)
    settle(agent)
    with caplog.at_level(logging.WARNING, logger="scheduled_events_agent"):
        imds.add_event("Reboot", event_id=event_id)
        settle(agent)
    imds.remove(event_id)
    settle(agent)
    settle(agent, lambda: not agent.forwarder.pending)

    assert len(hook_calls(calls)) == 1 and len(hook_calls(ends)) == 1
    assert [t for _, t in topic.types()] == ["New", "HookSucceeded", "Vanished", "EndHookSucceeded", "Updated",
                                              "Vanished"]
    assert any(f"[{event_id}] Reboot is back" in r.getMessage() for r in caplog.records)


def test_once_per_event_through_a_document_sequence_and_restarts(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory,
    clock: FakeMonotonic,
) -> None:
    calls, ends = tmp_path / "calls.jsonl", tmp_path / "ends.jsonl"
    events = with_end_hooks(calls, ends)
    first = make_agent(events=events)
    event_id = imds.add_event("Reboot")
    settle(first)
    serve(imds, {"DocumentIncarnation": 50})
    ticks(first, clock, 2)
    first.close()

    # Restarted while the endpoint serves an older, empty document: the state file remembers
    # the incarnation, so the event is not taken as over.
    serve(imds, {"DocumentIncarnation": 1, "Events": []})
    second = make_agent(events=events)
    ticks(second, clock, 3)
    assert second.state.events[event_id].active
    imds.override = None
    clock.advance(2)
    settle(second)
    imds.start(event_id)
    settle(second)
    imds.remove(event_id)
    settle(second)
    settle(second, lambda: not second.forwarder.pending)
    second.close()

    third = make_agent(events=events)
    settle(third)
    settle(third)

    assert len(hook_calls(calls)) == 1 and len(hook_calls(ends)) == 1
    assert [t for _, t in topic.types()] == ["New", "HookSucceeded", "Started", "Vanished", "EndHookSucceeded"]
