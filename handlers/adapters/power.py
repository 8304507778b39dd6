"""VM power: which states we start from, how each is put back, and the operations that do it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import PipelineResponse

from handlers.adapters.clients import ClientFactory
from handlers.adapters.inventory import RunMachine, power_state_name
from handlers.adapters.operations import (
    DONE,
    GONE,
    NOT_STARTED,
    ON_ITS_WAY,
    UNREADABLE,
    Operation,
    describe_error,
    raw_response,
)
from handlers.core.telemetry import InvocationPool

# Our action names -> the SDK's long-running operations. Nothing else in the toolkit changes a VM.
_OPERATIONS = {"start": "begin_start", "deallocate": "begin_deallocate", "power-off": "begin_power_off"}

# Original power state -> how to put the VM back after the run.
RESTORE_ACTIONS = {
    "deallocated": "deallocate",
    "deallocating": "deallocate",
    "stopped": "power-off",
    "stopping": "power-off",
}
# Power states the pre event starts from.
STARTABLE_STATES = frozenset(RESTORE_ACTIONS)
# action -> (states that mean it is done, states that mean it is on its way)
_REACHED = {
    "start": (frozenset({"running"}), frozenset({"starting"})),
    "deallocate": (frozenset({"deallocated"}), frozenset({"deallocating"})),
    "power-off": (frozenset({"stopped", "deallocated"}), frozenset({"stopping", "deallocating"})),
}
# A read-back is one of many polls: a few quick retries, not the patient budget of a send.
_CHECK_OPTIONS = {"retry_total": 3, "retry_backoff_max": 5}


def power_operation(clients: ClientFactory, machine: RunMachine, action: str, *, persistent: bool = False) -> Operation:
    """An operation that sends `action` ("start", "deallocate", "power-off") to one VM.

    The actions are idempotent, so when a request's outcome is uncertain the VM's power state
    (its instance view, not Resource Graph, which lags) decides whether it took effect.
    `persistent`: send it again after any failure until the deadline (restores)."""
    method = _OPERATIONS[action]
    done, on_its_way = _REACHED[action]

    def send() -> PipelineResponse[Any, Any]:
        vms = clients.compute(machine.subscription_id).virtual_machines
        poller = getattr(vms, method)(machine.resource_group, machine.name, polling=False, cls=raw_response)
        return poller.result()

    def check() -> tuple[str, str]:
        try:
            view = clients.compute(machine.subscription_id).virtual_machines.instance_view(
                machine.resource_group, machine.name, **_CHECK_OPTIONS)
        except AzureError as exc:
            if isinstance(exc, HttpResponseError) and exc.status_code == 404:
                # Nothing left to start; nothing left running to turn off either.
                return (GONE if action == "start" else DONE), "the VM no longer exists"
            return UNREADABLE, f"instance view: {describe_error(exc)}"
        codes = [s.code for s in view.statuses or [] if s.code and s.code.lower().startswith("powerstate/")]
        state = power_state_name(codes[0] if codes else None)
        if state in done:
            return DONE, state
        if state in on_its_way:
            return ON_ITS_WAY, state
        return (NOT_STARTED, f"power state {state}") if state else (UNREADABLE, "no power state in the instance view")

    return Operation(key=machine.resource_id.lower(), resource_id=machine.resource_id, action=action, send=send,
                     check=check, persistent=persistent)


@dataclass(frozen=True)
class VmStatus:
    power_state: str  # "running", ...; "not-found"; "" when unknown
    agent_ready: bool | None  # None when the instance view has no VM agent status


def read_vm_statuses(
    clients: ClientFactory, machines: Sequence[RunMachine], *, parallelism: int
) -> dict[str, VmStatus]:
    """Current power state and VM agent status from each VM's instance view, keyed by lower id.

    Resource Graph lags; the instance view does not. Used where Resource Graph cannot answer,
    to confirm what an earlier attempt did, and for the VM agent check.
    """

    def read(machine: RunMachine) -> tuple[str, VmStatus]:
        key = machine.resource_id.lower()
        try:
            view = clients.compute(machine.subscription_id).virtual_machines.instance_view(
                machine.resource_group, machine.name
            )
        except HttpResponseError as exc:
            return key, VmStatus("not-found" if exc.status_code == 404 else "", None)
        codes = [s.code for s in view.statuses or [] if s.code and s.code.lower().startswith("powerstate/")]
        agent = view.vm_agent
        statuses = agent.statuses if agent is not None and agent.statuses else []
        ready = None if not statuses else any((s.display_status or "").lower() == "ready" for s in statuses)
        return key, VmStatus(power_state_name(codes[0] if codes else None), ready)

    if not machines:
        return {}
    with InvocationPool(max_workers=min(parallelism, len(machines)), thread_name_prefix="view") as pool:
        return dict(pool.map(read, machines))


def read_power_states(clients: ClientFactory, machines: Sequence[RunMachine], *, parallelism: int) -> dict[str, str]:
    """Just the power states of `read_vm_statuses`."""
    return {k: v.power_state for k, v in read_vm_statuses(clients, machines, parallelism=parallelism).items()}
