"""Starting VMs and putting them back, many at once, against a deadline.

Every request goes out (bounded parallelism) before any is waited on, so a fleet's start time
is the slowest VM's, not the sum. Each VM's failure is caught and returned as its result; one
VM can never stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.polling import LROPoller

from handlers.clients import ClientFactory
from handlers.inventory import RunMachine, power_state_name
from handlers.ledger import utcnow

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


@dataclass(frozen=True)
class PowerResult:
    resource_id: str
    outcome: str  # "succeeded" | "failed" | "timed-out"
    detail: str
    sent_at: datetime | None
    finished_at: datetime | None


def run_power_actions(
    clients: ClientFactory,
    actions: Sequence[tuple[RunMachine, str]],
    *,
    parallelism: int,
    deadline: datetime,
    log: logging.LoggerAdapter[Any],
) -> dict[str, PowerResult]:
    """Send each (machine, action), then wait for all of them until `deadline`.

    Returns one result per machine keyed by lower-cased resource id. A VM still busy at the
    deadline is "timed-out": its operation continues in Azure, we just stop waiting.
    """
    results: dict[str, PowerResult] = {}
    pollers: list[tuple[RunMachine, str, LROPoller[Any], datetime]] = []

    def send(item: tuple[RunMachine, str]) -> tuple[RunMachine, str, LROPoller[Any] | None, datetime, str]:
        machine, action = item
        sent_at = utcnow()
        try:
            vms = clients.compute(machine.subscription_id).virtual_machines
            poller = getattr(vms, _OPERATIONS[action])(machine.resource_group, machine.name)
            log.info("%s requested for %s", action, machine.resource_id)
            return machine, action, poller, sent_at, ""
        except AzureError as exc:
            return machine, action, None, sent_at, _describe(exc)

    if actions:
        with ThreadPoolExecutor(max_workers=min(parallelism, len(actions)), thread_name_prefix="power") as pool:
            for machine, action, poller, sent_at, error in pool.map(send, actions):
                if poller is None:
                    log.warning("%s failed for %s: %s", action, machine.resource_id, error)
                    results[machine.resource_id.lower()] = PowerResult(
                        machine.resource_id, "failed", error, sent_at, utcnow()
                    )
                else:
                    pollers.append((machine, action, poller, sent_at))

    for machine, action, poller, sent_at in pollers:
        results[machine.resource_id.lower()] = _await(poller, machine, action, sent_at, deadline, log)
    return results


def _await(
    poller: LROPoller[Any],
    machine: RunMachine,
    action: str,
    sent_at: datetime,
    deadline: datetime,
    log: logging.LoggerAdapter[Any],
) -> PowerResult:
    remaining = (deadline - utcnow()).total_seconds()
    try:
        poller.wait(timeout=max(remaining, 0.0))
        if not poller.done():
            log.warning("%s of %s still running at the deadline %s", action, machine.resource_id,
                        deadline.isoformat())
            detail = f"not finished by {deadline.isoformat()}"
            return PowerResult(machine.resource_id, "timed-out", detail, sent_at, None)
        poller.result()
    except AzureError as exc:
        detail = _describe(exc)
        log.warning("%s failed for %s: %s", action, machine.resource_id, detail)
        return PowerResult(machine.resource_id, "failed", detail, sent_at, utcnow())
    log.info("%s succeeded for %s", action, machine.resource_id)
    return PowerResult(machine.resource_id, "succeeded", "", sent_at, utcnow())


def read_power_states(
    clients: ClientFactory, machines: Sequence[RunMachine], *, parallelism: int
) -> dict[str, str]:
    """Current power state from each VM's instance view, keyed by lower-cased id.

    Only for the few VMs Resource Graph cannot answer for, or to confirm what an earlier
    attempt did: Resource Graph lags, the instance view does not. "" when unknown.
    """

    def read(machine: RunMachine) -> tuple[str, str]:
        try:
            view = clients.compute(machine.subscription_id).virtual_machines.instance_view(
                machine.resource_group, machine.name
            )
        except HttpResponseError as exc:
            if exc.status_code == 404:
                return machine.resource_id.lower(), "not-found"
            return machine.resource_id.lower(), ""
        codes = [s.code for s in view.statuses or [] if s.code and s.code.lower().startswith("powerstate/")]
        return machine.resource_id.lower(), power_state_name(codes[0] if codes else None)

    if not machines:
        return {}
    with ThreadPoolExecutor(max_workers=min(parallelism, len(machines)), thread_name_prefix="view") as pool:
        return dict(pool.map(read, machines))


def _describe(exc: AzureError) -> str:
    if isinstance(exc, HttpResponseError):
        code = exc.error.code if exc.error is not None else None
        status = exc.status_code
        message = exc.error.message if exc.error is not None else exc.message
        return f"{status or ''} {code or type(exc).__name__}: {message}".strip()
    return f"{type(exc).__name__}: {exc.message}"
