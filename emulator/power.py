"""Machines and their power: VM state transitions driven by async operations in simulated time."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from .clock import operation_status
from .ids import key
from .messages import ArmError

OS_TYPES = ("Linux", "Windows")
ARC_STATUSES = ("Connected", "Disconnected", "Expired")
POWER_STATES = ("running", "starting", "stopping", "stopped", "deallocating", "deallocated")

# action -> (transitional state, final state)
ACTIONS: dict[str, tuple[str, str]] = {
    "start": ("starting", "running"),
    "deallocate": ("deallocating", "deallocated"),
    "powerOff": ("stopping", "stopped"),
}
# States in which an action has nothing left to do: Azure answers success at once.
_ALREADY_DONE: dict[str, frozenset[str]] = {
    "start": frozenset({"running"}),
    "deallocate": frozenset({"deallocated"}),
    "powerOff": frozenset({"stopped", "deallocated"}),
}


def normalize_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """`value` in the canonical casing of `allowed` (matched case-insensitively), else a ValueError."""
    for choice in allowed:
        if choice.lower() == value.lower():
            return choice
    raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def normalize_power_state(value: str) -> str:
    """'PowerState/Running' or 'running' -> 'running'; anything unknown is a ValueError."""
    state = value.rsplit("/", 1)[-1].lower()
    if state not in POWER_STATES:
        raise ValueError(f"unknown power state {value!r}; expected one of {', '.join(POWER_STATES)}")
    return state


@dataclass
class Operation:
    """One async compute operation; its status is derived from simulated time."""

    id: str
    action: str
    vm_key: str
    subscription_id: str
    location: str
    started: float
    ends: float
    origin: str  # the state a failure falls back to
    target: str
    error: ArmError | None = None

    def status(self, now: float) -> str:
        return operation_status(now, self.ends, failed=self.error is not None)


@dataclass
class VirtualMachine:
    """An Azure VM and the history of its power state."""

    id: str
    subscription_id: str
    resource_group: str
    name: str
    location: str
    tags: dict[str, str]
    vm_id: str
    power_state: str
    created: float
    history: list[tuple[float, str]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    pending: Operation | None = None
    os_disk: str = "managed"  # managed | ephemeral | unmanaged (see disks.py)
    data_disks: int = 0
    agent_ready: bool = True  # False: a running VM's guest agent reports Not Ready
    os_type: str = "Linux"  # one of OS_TYPES

    def __post_init__(self) -> None:
        self.history.append((self.created, self.power_state))

    def _set(self, state: str, at: float) -> None:
        if state != self.power_state:
            self.power_state = state
            self.history.append((at, state))

    def settle(self, now: float) -> None:
        """Apply the end of a finished operation, stamped with the time it really ended.

        Lazy on purpose: nothing runs in the background, every reader settles first.
        """
        op = self.pending
        if op is not None and now >= op.ends:
            self._set(op.origin if op.error else op.target, op.ends)
            self.pending = None

    def set_power_state(self, state: str, now: float) -> None:
        """Change the state out of band (someone used the portal); drops any operation in flight."""
        self.settle(now)
        self.pending = None
        self._set(state, now)

    def state_at(self, t: float) -> str:
        """The power state at simulated time `t` (the first known state for earlier times)."""
        index = bisect.bisect_right([at for at, _ in self.history], t) - 1
        return self.history[max(index, 0)][1]

    def begin(self, action: str, op_id: str, now: float, duration: float, error: ArmError | None) -> Operation:
        """Accept `action` and return the operation that tracks it (`error`: it will end Failed)."""
        self.settle(now)
        transitional, target = ACTIONS[action]
        pending = self.pending
        origin = self.power_state
        self.actions.append(action)
        if pending is not None:
            if pending.action == action and error is None:
                # Repeating an action in flight joins it, as ARM does for idempotent POSTs.
                return pending
            # A later conflicting action preempts the one in flight, which then reports Failed.
            pending.ends = now
            pending.error = ArmError(
                "OperationPreempted", f"Operation '{pending.action}' was preempted by a later '{action}' operation."
            )
            origin = pending.origin
            self.pending = None
        done = pending is None and self.power_state in _ALREADY_DONE[action]
        op = Operation(
            op_id, action, key(self.id), self.subscription_id, self.location, started=now,
            ends=now if done else now + duration, origin=origin, target=self.power_state if done else target,
            error=error,
        )  # fmt: skip
        if not done:
            self._set(transitional, now)
            self.pending = op
        return op


@dataclass
class ArcMachine:
    """An Arc-enabled server: visible in Resource Graph, not powerable from Azure; Run Command needs it
    Connected."""

    id: str
    subscription_id: str
    resource_group: str
    name: str
    location: str
    tags: dict[str, str]
    os_type: str = "Linux"  # one of OS_TYPES; Resource Graph shows it in lower case
    status: str = "Connected"  # one of ARC_STATUSES
