"""Approval rules on EventType, EventSource and DurationInSeconds, and group coordination
(`must_go_alone`) (issue 14, gap 2)."""

from __future__ import annotations

from pathlib import Path

from tests.agent.conftest import AgentFactory, hook_calls, recording_hook, settle
from tests.agent.fakes import ScheduledEventsServer

# The documentation's sample, as rules: approve user-initiated events and Freezes under 9 s at
# once; Platform Reboot/Redeploy only after this VM's hooks succeeded; the rest waits.
RULES = [
    {"name": "user-initiated", "sources": ["User"], "approval": "approve-immediately"},
    {"name": "short-freeze", "event_types": ["Freeze"], "duration_under_seconds": 9,
     "approval": "approve-immediately"},
    {"name": "platform-reboot", "event_types": ["Reboot", "Redeploy"], "sources": ["Platform"],
     "approval": "approve"},
]


def approved(imds: ScheduledEventsServer) -> set[str]:
    return {item["EventId"] for body in imds.approvals for item in body["StartRequests"]}


def test_rules_from_the_documentation(tmp_path: Path, imds: ScheduledEventsServer, make_agent: AgentFactory) -> None:
    calls = tmp_path / "calls.jsonl"
    drain = [{"name": "drain", "command": "sleep 0.5", "timeout_seconds": 10}, recording_hook(calls)]
    agent = make_agent(default_approval="wait", approval_rules=RULES,
                       events={"Reboot": {"hooks": drain}, "Redeploy": {"hooks": drain}})
    user_reboot = imds.add_event("Reboot", source="User")
    short_freeze = imds.add_event("Freeze", duration=5)
    long_freeze = imds.add_event("Freeze", duration=9)
    unknown_freeze = imds.add_event("Freeze", duration=-1)
    platform_redeploy = imds.add_event("Redeploy")
    user_freeze = imds.add_event("Freeze", duration=30, source="User")

    agent.run_once()
    assert approved(imds) == {user_reboot, short_freeze, user_freeze}, "approved before any hook finished"
    assert agent.state.events[user_reboot].hooks == "running", "approve-immediately still runs the hooks"
    settle(agent)
    settle(agent)

    assert approved(imds) == {user_reboot, short_freeze, user_freeze, platform_redeploy}
    assert len(hook_calls(calls)) == 2
    records = agent.state.events
    assert records[long_freeze].approval == records[unknown_freeze].approval == "wait"
    assert "default_approval" in records[unknown_freeze].approval_detail, "-1 (unknown) is not under 9 s"
    assert records[platform_redeploy].approval_detail == \
        "approval_rules[2] (platform-reboot) says approve once its hooks succeeded"
    assert records[user_reboot].approval_detail == "approval_rules[0] (user-initiated) says approve at once"


def test_approve_waits_for_hooks_and_a_failed_hook_blocks_it(
    tmp_path: Path, imds: ScheduledEventsServer, make_agent: AgentFactory
) -> None:
    calls = tmp_path / "calls.jsonl"
    agent = make_agent(approval_rules=RULES, events={"Reboot": {"hooks": [recording_hook(calls, exit_code=2)]}})
    event_id = imds.add_event("Reboot")
    settle(agent)
    assert imds.approvals == []
    assert agent.state.events[event_id].approval == "hooks-failed"


def test_an_event_naming_a_vm_that_must_go_alone_is_not_approved_with_others(
    imds: ScheduledEventsServer, make_agent: AgentFactory
) -> None:
    agent = make_agent(default_approval="approve", must_go_alone=["vm-db"])
    with_db = imds.add_event("Freeze", resources=["vm-a", "VM-DB"])
    alone = imds.add_event("Freeze", resources=["vm-a"])
    with_web = imds.add_event("Freeze", resources=["vm-a", "vm-web"])
    settle(agent)

    assert approved(imds) == {alone, with_web}
    record = agent.state.events[with_db]
    assert record.approval == "must-go-alone"
    assert "VM-DB (must go alone) together with other VMs" in record.approval_detail


def test_the_vm_that_must_go_alone_approves_its_own_event(make_agent: AgentFactory,
                                                           imds: ScheduledEventsServer) -> None:
    agent = make_agent(vm_name="vm-db", default_approval="approve", must_go_alone=["vm-db"])
    own = imds.add_event("Reboot", resources=["vm-db"])
    shared = imds.add_event("Reboot", resources=["vm-db", "vm-a"])
    settle(agent)
    assert approved(imds) == {own}
    assert agent.state.events[shared].approval == "must-go-alone"


def test_a_rule_can_leave_the_group_to_its_first_resource(imds: ScheduledEventsServer,
                                                          make_agent: AgentFactory) -> None:
    agent = make_agent(approval_rules=[{"event_types": ["Reboot"], "approval": "approve",
                                        "only_if_first_resource": True}])
    not_first = imds.add_event("Reboot", resources=["vm-z", "vm-a"])
    first = imds.add_event("Reboot", resources=["vm-a", "vm-z"])
    settle(agent)
    assert approved(imds) == {first}
    assert agent.state.events[not_first].approval == "not-first-resource"


def test_old_per_type_settings_still_apply(imds: ScheduledEventsServer, make_agent: AgentFactory) -> None:
    agent = make_agent(approval_rules=[{"sources": ["User"], "approval": "approve-immediately"}],
                       events={"Reboot": {"approval": "approve", "approve_only_if_first_resource": True}})
    mine = imds.add_event("Reboot", resources=["vm-a", "vm-z"])
    not_mine = imds.add_event("Reboot", resources=["vm-z", "vm-a"])
    user_first = imds.add_event("Reboot", resources=["vm-a", "vm-z"], source="User")
    user_not_first = imds.add_event("Reboot", resources=["vm-z", "vm-a"], source="User")
    settle(agent)
    assert approved(imds) == {mine, user_first}
    records = agent.state.events
    assert records[not_mine].approval == "not-first-resource"
    # A rule chose the approval; the event type's group setting still holds.
    assert records[user_not_first].approval == "not-first-resource"
    assert records[user_first].approval_detail == "approval_rules[0] says approve at once"
