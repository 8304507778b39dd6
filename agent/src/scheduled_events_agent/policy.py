"""Whether to approve an event early (POST StartRequests), or why not.

Approving releases the event for *every* VM in its `Resources`, so it happens only when this
VM's hooks all succeeded, the event type's policy says so and, optionally, this VM is the one
named first (so one VM of a group decides for all).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import AgentConfig
from .document import ScheduledEvent
from .state import (
    APPROVAL_HOOKS_FAILED,
    APPROVAL_NOT_FIRST,
    APPROVAL_NOT_NEEDED,
    APPROVAL_NOT_THIS_VM,
    APPROVAL_WAIT,
    HOOKS_FAILED,
    HOOKS_PENDING,
    HOOKS_RUNNING,
    EventRecord,
)

APPROVE = "approve"


@dataclass(frozen=True)
class Decision:
    outcome: str  # APPROVE, or the approval state to record (state.APPROVAL_*)
    reason: str


def affects(event: ScheduledEvent, vm_name: str) -> bool:
    """Whether the event is for this VM.

    Events reach every VM of an availability set or scale-set placement group; `Resources`
    names the VMs they are for. An empty list is taken to include this VM.
    """
    return not event.resources or any(name.lower() == vm_name.lower() for name in event.resources)


def decide(record: EventRecord, event: ScheduledEvent, config: AgentConfig, vm_name: str) -> Decision | None:
    """The decision for this event now; None while its hooks have not finished."""
    if not record.active:
        return Decision(APPROVAL_NOT_NEEDED, "the event is over")
    if event.started:
        return Decision(APPROVAL_NOT_NEEDED, "the event has started")
    if not affects(event, vm_name):
        # Its own VMs' agents decide; approving here would release it for them.
        return Decision(APPROVAL_NOT_THIS_VM, f"the event is for {', '.join(event.resources)}, not this VM "
                                              f"({vm_name}): no hooks, no approval, not forwarded")
    if record.hooks in (HOOKS_PENDING, HOOKS_RUNNING):
        return None
    if record.hooks == HOOKS_FAILED:
        failed = [r["name"] for r in record.hook_results if r.get("status") not in ("succeeded", "skipped")]
        return Decision(APPROVAL_HOOKS_FAILED, f"not approving: hook(s) failed: {', '.join(failed) or '?'}")
    type_config = config.for_type(event.event_type)
    if config.approval_for(event.event_type) == "wait":
        return Decision(APPROVAL_WAIT, f"policy for {event.event_type} is to wait for NotBefore "
                                       f"({event.not_before or 'not given'})")
    if type_config.approve_only_if_first_resource:
        first = event.resources[0] if event.resources else ""
        if first.lower() != vm_name.lower():
            return Decision(APPROVAL_NOT_FIRST, f"only the first resource ({first or 'none listed'}) approves")
    return Decision(APPROVE, f"policy for {event.event_type} is to approve once its hooks succeeded")
