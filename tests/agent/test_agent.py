"""The agent against loopback IMDS and Event Grid: hooks, approvals, restarts, outages, forwarding."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from scheduled_events_agent.state import STATE_FILE

from tests.agent.conftest import AgentFactory, FakeMonotonic, hook_calls, recording_hook, settle
from tests.agent.fakes import EventGridServer, ScheduledEventsServer


def reboot_approves(path: Path, **hook: Any) -> dict[str, Any]:
    return {"Reboot": {"hooks": [recording_hook(path, **hook)], "approval": "approve"}}


def test_reboot_hook_gets_the_event_then_the_event_is_approved(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    calls = tmp_path / "calls.jsonl"
    agent = make_agent(events=reboot_approves(calls))
    event_id = imds.add_event("Reboot", resources=["vm-a", "vm-b"], duration=300)
    scheduled = dict(imds.events[event_id])

    agent.run_once()
    assert imds.approvals == [], "no approval before the hooks finished"
    settle(agent, lambda: bool(imds.approvals))

    [call] = hook_calls(calls)
    env = call["env"]
    assert env["SCHEDULED_EVENT_ID"] == event_id
    assert env["SCHEDULED_EVENT_TYPE"] == "Reboot"
    assert env["SCHEDULED_EVENT_STATUS"] == "Scheduled"
    assert env["SCHEDULED_EVENT_RESOURCES"] == "vm-a,vm-b"
    assert env["SCHEDULED_EVENT_NOT_BEFORE"].endswith(" GMT")
    assert env["SCHEDULED_EVENT_SOURCE"] == "Platform"
    assert env["SCHEDULED_EVENT_DURATION_SECONDS"] == "300"
    assert env["SCHEDULED_EVENT_DESCRIPTION"] == "Reboot planned by the platform"
    assert json.loads(call["stdin"]) == scheduled
    assert imds.approvals == [{"StartRequests": [{"EventId": event_id}]}]
    approval = [r for r in imds.requests if r.method == "POST"][0]
    assert approval.headers["Metadata"] == "true"

    settle(agent, lambda: bool(topic.received) and not agent.forwarder.pending)
    assert topic.types() == [(event_id, "New"), (event_id, "HookSucceeded"), (event_id, "Approved"),
                             (event_id, "Started")]
    first = topic.received[0]
    assert first["source"] == "/vms/vm-a"
    assert first["specversion"] == "1.0"
    assert first["data"]["vmName"] == "vm-a"
    assert first["data"]["change"] == "new"
    assert first["data"]["event"]["EventId"] == event_id
    assert first["data"]["documentIncarnation"] == 2
    hook_result = topic.received[1]["data"]["hookResults"][0]
    assert hook_result["name"] == "record" and hook_result["status"] == "succeeded" and hook_result["exitCode"] == 0


def test_freeze_with_approval_off_runs_hooks_but_never_approves(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    calls = tmp_path / "calls.jsonl"
    agent = make_agent(events={"Freeze": {"hooks": [recording_hook(calls)], "approval": "wait"}},
                       default_approval="approve")
    event_id = imds.add_event("Freeze")

    settle(agent, lambda: not agent.forwarder.pending)

    assert len(hook_calls(calls)) == 1
    assert imds.approvals == []
    assert agent.state.events[event_id].approval == "wait"
    assert topic.types() == [(event_id, "New"), (event_id, "HookSucceeded")]


def test_a_failing_hook_blocks_approval_and_is_forwarded(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    calls = tmp_path / "calls.jsonl"
    second = tmp_path / "second.jsonl"
    agent = make_agent(events={"Reboot": {"approval": "approve", "hooks": [
        recording_hook(calls, exit_code=3, name="drain"), recording_hook(second, name="after")]}})
    event_id = imds.add_event("Reboot")

    settle(agent, lambda: not agent.forwarder.pending)

    assert imds.approvals == []
    assert not second.exists(), "hooks after a failed one are skipped"
    record = agent.state.events[event_id]
    assert (record.hooks, record.approval) == ("failed", "hooks-failed")
    assert topic.types() == [(event_id, "New"), (event_id, "HookFailed")]
    results = topic.received[1]["data"]["hookResults"]
    assert [(r["name"], r["status"], r["exitCode"]) for r in results] == [("drain", "failed", 3),
                                                                           ("after", "skipped", None)]


def test_a_hook_that_times_out_is_killed_and_blocks_approval(
    imds: ScheduledEventsServer, make_agent: AgentFactory
) -> None:
    agent = make_agent(events={"Reboot": {"approval": "approve", "hooks": [
        {"name": "slow", "command": "sleep 30", "timeout_seconds": 0.3}]}})
    event_id = imds.add_event("Reboot")

    settle(agent)

    assert imds.approvals == []
    [result] = agent.state.events[event_id].hook_results
    assert result["status"] == "timed-out" and result["durationSeconds"] < 5


def test_a_restarted_agent_does_not_rerun_hooks_or_report_again(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    calls = tmp_path / "calls.jsonl"
    events = {"Reboot": {"hooks": [recording_hook(calls)], "approval": "wait"}}
    first = make_agent(events=events)
    event_id = imds.add_event("Reboot")
    settle(first, lambda: not first.forwarder.pending)
    first.close()

    second = make_agent(events=events)
    settle(second)
    settle(second)

    assert len(hook_calls(calls)) == 1
    assert second.state.events[event_id].hooks == "succeeded"
    assert topic.types() == [(event_id, "New"), (event_id, "HookSucceeded")]


def test_hooks_interrupted_by_a_crash_are_not_rerun_and_count_as_failed(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory,
    base_config: dict[str, Any],
) -> None:
    calls = tmp_path / "calls.jsonl"
    event_id = imds.add_event("Reboot")
    # What a process killed (SIGKILL, power loss) between "hooks running" and their end leaves.
    state_dir = Path(base_config["state_dir"])
    state_dir.mkdir(parents=True)
    event = dict(imds.events[event_id])
    (state_dir / STATE_FILE).write_text(json.dumps({"version": 1, "last_incarnation": imds.incarnation, "events": {
        event_id: {"event_id": event_id, "event": event, "first_seen_at": "2026-11-22T01:00:00+00:00",
                   "status": "Scheduled", "hooks": "running", "hooks_started_at": "2026-11-22T01:00:01+00:00"}}}))

    agent = make_agent(events={"Reboot": {"hooks": [recording_hook(calls)], "approval": "approve"}})
    settle(agent, lambda: not agent.forwarder.pending)

    assert hook_calls(calls) == []
    assert imds.approvals == []
    assert agent.state.events[event_id].hooks == "failed"
    assert topic.types() == [(event_id, "HookFailed")]
    assert topic.received[0]["data"]["hookResults"][0]["status"] == "interrupted"


def test_a_vanished_event_is_forwarded_as_vanished(
    imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    agent = make_agent()
    event_id = imds.add_event("Freeze")
    settle(agent)
    imds.start(event_id)
    settle(agent)
    imds.remove(event_id)
    settle(agent, lambda: not agent.forwarder.pending)

    assert topic.types() == [(event_id, "New"), (event_id, "Started"), (event_id, "Vanished")]
    vanished = topic.received[-1]["data"]
    assert vanished["firstSeenAt"] == topic.received[0]["data"]["observedAt"]
    assert agent.state.events[event_id].vanished_at is not None


def test_events_without_hooks_follow_the_default_approval(
    imds: ScheduledEventsServer, make_agent: AgentFactory
) -> None:
    agent = make_agent(default_approval="approve")
    redeploy = imds.add_event("Redeploy")
    settle(agent)
    assert imds.approvals == [{"StartRequests": [{"EventId": redeploy}]}]


def test_only_the_first_resource_approves_when_so_configured(
    imds: ScheduledEventsServer, make_agent: AgentFactory
) -> None:
    agent = make_agent(events={"Reboot": {"approval": "approve", "approve_only_if_first_resource": True}})
    not_first = imds.add_event("Reboot", resources=["vm-z", "vm-a"])
    first = imds.add_event("Reboot", resources=["VM-A", "vm-z"])  # names compare case-insensitively
    settle(agent)

    assert imds.approvals == [{"StartRequests": [{"EventId": first}]}]
    assert agent.state.events[not_first].approval == "not-first-resource"


def test_an_event_for_other_vms_of_the_set_is_left_to_them(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    calls = tmp_path / "calls.jsonl"
    agent = make_agent(default_approval="approve", events=reboot_approves(calls))
    other = imds.add_event("Reboot", resources=["vm-b", "vm-c"])  # same availability set, other VMs
    mine = imds.add_event("Freeze")
    settle(agent, lambda: not agent.forwarder.pending)

    assert hook_calls(calls) == []
    assert imds.approvals == [{"StartRequests": [{"EventId": mine}]}]
    assert {subject for subject, _ in topic.types()} == {mine}
    assert (agent.state.events[other].hooks, agent.state.events[other].approval) == ("not-this-vm", "not-this-vm")


def test_vm_name_and_resource_id_come_from_instance_metadata(
    imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    imds.vm_name = "vmss_3"
    imds.resource_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vmss_3"
    agent = make_agent(vm_name=None, events={"Reboot": {"approval": "approve",
                                                        "approve_only_if_first_resource": True}})
    event_id = imds.add_event("Reboot", resources=["vmss_3"])
    settle(agent, lambda: not agent.forwarder.pending)

    assert agent.vm_name == "vmss_3"
    assert imds.approvals == [{"StartRequests": [{"EventId": event_id}]}]
    assert {e["source"] for e in topic.received} == {imds.resource_id}
    names = [r for r in imds.requests if r.path == "/metadata/instance/compute/name"]
    assert names[0].query == {"api-version": ["2021-02-01"], "format": ["text"]}


def test_endpoint_down_backs_off_logs_once_and_recovers(
    imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory, clock: FakeMonotonic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = make_agent()
    agent.run_once()
    imds.down()
    with caplog.at_level(logging.DEBUG, logger="scheduled_events_agent"):
        for _ in range(40):  # 40 ticks of 0.5 s: 20 s of outage
            agent.run_once()
            clock.advance(0.5)
        event_id = imds.add_event("Reboot")
        imds.up()
        clock.advance(8)
        settle(agent, lambda: not agent.forwarder.pending)

    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    outages = [m for m in messages if "Scheduled Events endpoint unavailable" in m]
    recoveries = [m for m in messages if "Scheduled Events endpoint available again" in m]
    assert len(outages) == 1 and "Connection refused" in outages[0]
    assert len(recoveries) == 1 and "after 2" in recoveries[0]  # ~20 s of outage
    assert topic.types() == [(event_id, "New")]


def test_backoff_is_capped_and_exponential(
    imds: ScheduledEventsServer, make_agent: AgentFactory, clock: FakeMonotonic
) -> None:
    agent = make_agent()
    imds.down()
    attempts: list[float] = []
    tried_before = 0
    for _ in range(600):  # 60 s in 0.1 s steps
        agent.run_once()
        failures = agent._poll_backoff.failures  # noqa: SLF001 - counting attempts without a server
        if failures != tried_before:
            attempts.append(clock.now)
            tried_before = failures
        clock.advance(0.1)
    gaps = [round(b - a) for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[:4] == [1, 2, 4, 8] and set(gaps[4:]) == {8}


def test_slow_endpoint_times_out_then_recovers(
    imds: ScheduledEventsServer, make_agent: AgentFactory, clock: FakeMonotonic, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent(http_timeout_seconds=0.2, first_poll_timeout_seconds=0.2)
    imds.delay = 0.5
    with caplog.at_level(logging.INFO, logger="scheduled_events_agent"):
        agent.run_once()
        imds.delay = 0
        clock.advance(2)
        event_id = imds.add_event("Freeze")
        settle(agent)
    assert event_id in agent.state.events
    assert any("no answer within 0.2 s" in r.getMessage() for r in caplog.records)


def test_a_malformed_document_is_logged_and_skipped(
    imds: ScheduledEventsServer, make_agent: AgentFactory, clock: FakeMonotonic, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent()
    imds.override = (200, b'{"DocumentIncarnation": "three", "Events": []}')
    with caplog.at_level(logging.ERROR, logger="scheduled_events_agent"):
        agent.run_once()
        clock.advance(1)
        agent.run_once()
    assert [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()] == [
        "Scheduled Events endpoint unavailable: malformed document skipped, the last good view kept: "
        "DocumentIncarnation must be an integer, got 'three'; retrying with backoff (next in 1.0 s)"]
    imds.override = None
    clock.advance(2)
    event_id = imds.add_event("Reboot")
    settle(agent)
    assert event_id in agent.state.events


def test_a_bad_request_logs_the_body(
    imds: ScheduledEventsServer, make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent()
    imds.override = (400, b'{"error":"Bad request. api-version is invalid"}')
    with caplog.at_level(logging.ERROR, logger="scheduled_events_agent"):
        agent.run_once()
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "HTTP 400" in line.getMessage() and "api-version is invalid" in line.getMessage()


def test_forwarding_target_down_loses_nothing_and_keeps_order(
    imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory, clock: FakeMonotonic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = make_agent()
    topic.down()
    with caplog.at_level(logging.INFO, logger="scheduled_events_agent"):
        freeze = imds.add_event("Freeze")
        settle(agent)
        clock.advance(1)
        imds.start(freeze)
        settle(agent)
        clock.advance(2)
        reboot = imds.add_event("Reboot")
        imds.remove(freeze)
        settle(agent)
        assert topic.received == []
        assert [r["type"].rsplit(".", 1)[-1] for r in agent.forwarder.pending] == ["New", "Started", "New", "Vanished"]

        topic.up()
        clock.advance(8)
        settle(agent, lambda: not agent.forwarder.pending)

    assert topic.types() == [(freeze, "New"), (freeze, "Started"), (reboot, "New"), (freeze, "Vanished")]
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("Event Grid topic unavailable")]) == 1
    assert len([m for m in messages if m.startswith("Event Grid topic available again")]) == 1


def test_the_backlog_survives_a_restart(
    imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    topic.down()
    first = make_agent()
    event_id = imds.add_event("Terminate")
    settle(first)
    first.close()

    topic.up()
    second = make_agent()
    settle(second, lambda: not second.forwarder.pending)
    assert topic.types() == [(event_id, "New")]


def test_run_forever_stops_when_asked(imds: ScheduledEventsServer, make_agent: AgentFactory) -> None:
    import threading

    agent = make_agent()
    event_id = imds.add_event("Freeze")
    stop = threading.Event()
    runner = threading.Thread(target=agent.run_forever, args=(stop,))
    runner.start()
    try:
        deadline = 50
        while event_id not in agent.state.events and deadline:
            stop.wait(0.05)
            deadline -= 1
    finally:
        stop.set()
        runner.join(5)
    assert not runner.is_alive()
    saved = json.loads((agent.config.state_dir / STATE_FILE).read_text())
    assert event_id in saved["events"]
