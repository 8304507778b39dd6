"""Which events are this VM's: an event naming no VM (issue 14, defect 2), and the VM-name
lookup failing then recovering (defect 3)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.agent.conftest import AgentFactory, FakeMonotonic, hook_calls, recording_hook, settle
from tests.agent.fakes import EventGridServer, ScheduledEventsServer


def name_no_vm(imds: ScheduledEventsServer, event_id: str, how: str) -> None:
    if how == "null":
        imds.update(event_id, Resources=None)
    elif how == "missing":
        imds.update(event_id, drop=("Resources",))
    else:
        imds.update(event_id, Resources=[])


@pytest.mark.parametrize("how", ["null", "missing", "empty"])
def test_an_event_naming_no_vm_is_not_for_this_vm(
    how: str, tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = tmp_path / "calls.jsonl"
    agent = make_agent(default_approval="approve",
                       events={"Reboot": {"hooks": [recording_hook(calls)], "approval": "approve"}})
    event_id = imds.add_event("Reboot")
    name_no_vm(imds, event_id, how)
    mine = imds.add_event("Freeze")
    with caplog.at_level(logging.WARNING, logger="scheduled_events_agent"):
        settle(agent, lambda: not agent.forwarder.pending)
        settle(agent)

    assert hook_calls(calls) == []
    assert imds.approvals == [{"StartRequests": [{"EventId": mine}]}], "approving it would release the whole set"
    assert {subject for subject, _ in topic.types()} == {mine}
    record = agent.state.events[event_id]
    assert (record.hooks, record.approval) == ("not-this-vm", "not-this-vm")
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING and event_id in r.getMessage()]
    assert "names no VM" in warning.getMessage() and "missing_resources_mean_this_vm" in warning.getMessage()


def test_an_event_naming_no_vm_is_this_vms_when_configured(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory
) -> None:
    calls = tmp_path / "calls.jsonl"
    agent = make_agent(missing_resources_mean_this_vm=True,
                       events={"Reboot": {"hooks": [recording_hook(calls)], "approval": "approve"}})
    event_id = imds.add_event("Reboot")
    name_no_vm(imds, event_id, "null")
    settle(agent, lambda: bool(imds.approvals) and not agent.forwarder.pending)

    assert len(hook_calls(calls)) == 1
    assert imds.approvals == [{"StartRequests": [{"EventId": event_id}]}]
    assert (event_id, "New") in topic.types()


def test_a_failing_name_lookup_keeps_polling_and_acts_once_the_name_is_known(
    tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer, make_agent: AgentFactory,
    clock: FakeMonotonic, caplog: pytest.LogCaptureFixture,
) -> None:
    calls = tmp_path / "calls.jsonl"
    imds.instance_status = 500
    agent = make_agent(vm_name=None, events={"Reboot": {"hooks": [recording_hook(calls)], "approval": "approve"}})
    event_id = imds.add_event("Reboot")
    with caplog.at_level(logging.DEBUG, logger="scheduled_events_agent"):
        for _ in range(20):  # 10 s of ticks
            agent.run_once()
            clock.advance(0.5)
        assert imds.gets() == 20, "polling goes on while the name is unknown"
        assert event_id in agent.state.events
        assert agent.vm_name is None
        assert hook_calls(calls) == [] and imds.approvals == [] and topic.received == []
        assert imds.instance_requests() == 4, "the lookup is retried with backoff (after 1, 2, 4 s)"

        imds.instance_status = 200
        clock.advance(8)
        settle(agent, lambda: len(topic.received) == 4 and not agent.forwarder.pending)

    assert agent.vm_name == "vm-a"
    assert len(hook_calls(calls)) == 1
    assert imds.approvals == [{"StartRequests": [{"EventId": event_id}]}]
    # What was seen before the name was known is forwarded once it is.
    assert topic.types() == [(event_id, "New"), (event_id, "HookSucceeded"), (event_id, "Approved"),
                             (event_id, "Started")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    [outage] = [m for m in warnings if "unavailable" in m]
    assert outage.startswith("instance metadata endpoint (VM name) unavailable: GET ")
    assert f"{imds.instance_url}/compute/name: HTTP 500" in outage and "nothing is approved" in outage
    assert not any("Scheduled Events endpoint" in m for m in warnings)
    assert any("instance metadata endpoint (VM name) available again" in r.getMessage() for r in caplog.records)
