"""Whether to approve an event early (POST StartRequests), or why not.

Approving releases the event for *every* VM in its `Resources`, so this VM approves only events
it is named in, never one naming a `must_go_alone` VM together with others, optionally only as
the first VM named, and never once NotBefore (less the margin) has come.

Which approval applies: the first matching `approval_rules` entry, else the event type's
`approval`, else `default_approval`; the event type's `approve_only_if_first_resource` holds
either way. `approve` waits for this VM's hooks to succeed, `approve-immediately` does not wait
for them (but never approves after one failed), `wait` lets NotBefore come.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .config import APPROVE, APPROVE_IMMEDIATELY, WAIT, AgentConfig, ApprovalRule
from .document import ScheduledEvent
from .state import (
    APPROVAL_HOOKS_FAILED,
    APPROVAL_MUST_GO_ALONE,
    APPROVAL_NOT_FIRST,
    APPROVAL_NOT_NEEDED,
    APPROVAL_NOT_THIS_VM,
    APPROVAL_TOO_LATE,
    APPROVAL_WAIT,
    HOOKS_FAILED,
    HOOKS_PENDING,
    HOOKS_RUNNING,
    EventRecord,
)

__all__ = ["APPROVE", "Decision", "Policy", "affects", "decide", "policy_for", "rule_matches"]


@dataclass(frozen=True)
class Decision:
    outcome: str  # APPROVE, or the approval state to record (state.APPROVAL_*)
    reason: str


@dataclass(frozen=True)
class Policy:
    """The approval that applies to one event, and which setting said so (for the log)."""

    approval: str
    only_if_first_resource: bool
    origin: str


def affects(event: ScheduledEvent, vm_name: str, *, missing_means_this_vm: bool = False) -> bool:
    """Whether the event is for this VM.

    Events reach every VM of an availability set or scale-set placement group; `Resources`
    names the VMs they are for. One naming no VM (null, missing or empty) is not taken to be for
    this VM unless `missing_means_this_vm`: an approval would release it for the whole group.
    """
    if not event.resources:
        return missing_means_this_vm
    return any(name.lower() == vm_name.lower() for name in event.resources)


def not_this_vm_reason(event: ScheduledEvent, vm_name: str) -> str:
    if not event.resources:
        what = "null or missing" if not event.resources_listed else "empty"
        return (f"Resources is {what}, so the event names no VM; taken as not for this VM ({vm_name}): no hooks, "
                f"no approval, not forwarded (missing_resources_mean_this_vm changes that)")
    return (f"the event is for {', '.join(event.resources)}, not this VM ({vm_name}): no hooks, no approval, "
            f"not forwarded")


def rule_matches(rule: ApprovalRule, event: ScheduledEvent) -> bool:
    if rule.event_types and event.event_type.lower() not in {name.lower() for name in rule.event_types}:
        return False
    if rule.sources and event.source.lower() not in {name.lower() for name in rule.sources}:
        return False
    if rule.duration_under_seconds is not None:
        # -1 means unknown: a rule about short interruptions must not match it.
        return 0 <= event.duration_seconds < rule.duration_under_seconds
    return True


def policy_for(event: ScheduledEvent, config: AgentConfig) -> Policy:
    type_config = config.for_type(event.event_type)
    for index, rule in enumerate(config.approval_rules):
        if rule_matches(rule, event):
            name = f" ({rule.name})" if rule.name != f"approval_rules[{index}]" else ""
            # The event type's group setting holds whichever setting chose the approval.
            first = rule.only_if_first_resource or type_config.approve_only_if_first_resource
            return Policy(rule.approval, first, f"approval_rules[{index}]{name}")
    if type_config.approval is not None:
        return Policy(type_config.approval, type_config.approve_only_if_first_resource,
                      f"events.{event.event_type}.approval")
    return Policy(config.default_approval, type_config.approve_only_if_first_resource, "default_approval")


def decide(record: EventRecord, event: ScheduledEvent, config: AgentConfig, vm_name: str,
           now: datetime) -> Decision | None:
    """The decision for this event now; None while its hooks have not finished (and must)."""
    if not record.active:
        return Decision(APPROVAL_NOT_NEEDED, "the event is over")
    if event.started:
        return Decision(APPROVAL_NOT_NEEDED, "the event has started")
    if not affects(event, vm_name, missing_means_this_vm=config.missing_resources_mean_this_vm):
        # Its own VMs' agents decide; approving here would release it for them.
        return Decision(APPROVAL_NOT_THIS_VM, not_this_vm_reason(event, vm_name))
    policy = policy_for(event, config)
    if policy.approval == WAIT:
        return Decision(APPROVAL_WAIT, f"{policy.origin} says wait: NotBefore ({event.not_before or 'not given'}) "
                                       f"decides")
    if policy.approval == APPROVE and record.hooks in (HOOKS_PENDING, HOOKS_RUNNING):
        return None
    if record.hooks == HOOKS_FAILED:
        failed = [r["name"] for r in record.hook_results if r.get("status") not in ("succeeded", "skipped")]
        return Decision(APPROVAL_HOOKS_FAILED, f"not approving: hook(s) failed: {', '.join(failed) or '?'}")
    alone = {name.lower() for name in config.must_go_alone}
    named_alone = [name for name in event.resources if name.lower() in alone]
    if named_alone and len(event.resources) > 1:
        return Decision(APPROVAL_MUST_GO_ALONE, f"not approving: the event names {', '.join(named_alone)} (must go "
                                                f"alone) together with other VMs: {', '.join(event.resources)}")
    if policy.only_if_first_resource:
        first = event.resources[0] if event.resources else ""
        if first.lower() != vm_name.lower():
            return Decision(APPROVAL_NOT_FIRST, f"only the first resource ({first or 'none listed'}) approves")
    not_before = event.not_before_time
    if not_before is not None and now >= not_before - timedelta(seconds=config.notice_margin_seconds):
        return Decision(APPROVAL_TOO_LATE, f"not approving late: NotBefore {event.not_before} (less "
                                           f"{config.notice_margin_seconds:g} s) has come")
    when = "at once" if policy.approval == APPROVE_IMMEDIATELY else "once its hooks succeeded"
    return Decision(APPROVE, f"{policy.origin} says approve {when}")
