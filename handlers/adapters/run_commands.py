"""Managed Run Command: a script run in a machine's guest, on a VM (azure-mgmt-compute) or an
Arc-enabled server (azure-mgmt-hybridcompute), as one Operation of the waiting loop.

The command is created with `asyncExecution`, so its PUT is accepted as soon as the script is
handed to the guest agent; the loop then reads the command's instance view (`executionState`,
`exitCode`, `output`, `error`) until the script has ended. The PUT is sent without automatic
retries: sending it again runs the script again, so a request whose outcome is uncertain is
settled by reading the command back (it exists: followed; it does not: sent again). Names are
the caller's and deterministic, so a retried worker finds the command an earlier attempt made.
After the result is recorded the command is deleted (deleting what is gone succeeds).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import PipelineResponse

from handlers.adapters.clients import ClientFactory
from handlers.adapters.inventory import MachineKind, RunMachine
from handlers.adapters.operation import ENDED_FAILED
from handlers.adapters.operations import (
    DONE,
    NOT_STARTED,
    ON_ITS_WAY,
    UNREADABLE,
    Operation,
    describe_error,
    raw_response,
)
from handlers.core.bounds import truncate_utf16
from handlers.core.telemetry import InvocationPool

OUTPUT_KEEP_CHARS = 4096  # the last 4 KB of a script's output (and of its error stream) are kept
_NO_RETRIES = {"retry_total": 0}  # 429s still wait and retry (their own budget): nothing ran
_CHECK_OPTIONS = {"retry_total": 3, "retry_backoff_max": 5}
_RUNNING = {"pending", "running"}


@dataclass(frozen=True)
class ScriptRun:
    """What one run command does: `name` is its resource name."""

    name: str
    script: str
    timeout_seconds: int


@dataclass(frozen=True)
class RunView:
    """A run command's instance view, as far as it is known."""

    state: str  # pending | running | succeeded | failed | timedout | canceled | unknown | "" (none yet)
    exit_code: int | None = None
    output: str = ""
    error: str = ""
    message: str = ""
    started: datetime | None = None
    ended: datetime | None = None

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, (self.ended - self.started).total_seconds())

    def describe(self) -> str:
        """'exit 0 after 42 s', 'TimedOut after 600 s: <message>'..."""
        took = f" after {self.seconds:.0f} s" if self.seconds is not None else ""
        head = f"exit {self.exit_code}" if self.state in ("succeeded", "failed") and self.exit_code is not None \
            else self.state or "no result"
        tail = f": {self.message}" if self.message and self.state != "succeeded" else ""
        return f"{head}{took}{tail}"

    def kept_output(self) -> str:
        """The last few KB of output and error, as stored in the ledger."""
        parts = [part for part in (self.output[-OUTPUT_KEEP_CHARS:], self.error[-OUTPUT_KEEP_CHARS:]) if part]
        return truncate_utf16("\n--- stderr ---\n".join(parts), 2 * OUTPUT_KEEP_CHARS + 32)


def _operations(clients: ClientFactory, machine: RunMachine) -> Any:
    if machine.kind is MachineKind.ARC:
        return clients.hybrid_compute(machine.subscription_id).machine_run_commands
    return clients.compute(machine.subscription_id).virtual_machine_run_commands


def read_run(clients: ClientFactory, machine: RunMachine, name: str, **options: Any) -> RunView | None:
    """The command's instance view; None when there is no such command."""
    operations = _operations(clients, machine)
    try:
        if machine.kind is MachineKind.ARC:
            command = operations.get(machine.resource_group, machine.name, name, **options)
        else:
            command = operations.get_by_virtual_machine(machine.resource_group, machine.name, name,
                                                        expand="instanceView", **options)
    except HttpResponseError as exc:
        if exc.status_code == 404:
            return None
        raise
    view = command.properties.instance_view if command.properties is not None else None
    if view is None:
        return RunView("")
    state = getattr(view.execution_state, "value", view.execution_state)  # an SDK enum, or a str it does not know
    return RunView(
        state=str(state or "unknown").lower(), exit_code=view.exit_code,
        output=str(view.output or ""), error=str(view.error or ""), message=str(view.execution_message or ""),
        started=view.start_time, ended=view.end_time)


def run_command_operation(clients: ClientFactory, machine: RunMachine, *, key: str, action: str, location: str,
                          run: ScriptRun, views: dict[str, RunView], follow_only: bool = False) -> Operation:
    """An operation that runs `run` in the machine's guest; `views[key]` holds what the command's
    instance view said last (the step reads exit code and output from there)."""
    body = {"location": location, "properties": {
        "source": {"script": run.script}, "asyncExecution": True, "timeoutInSeconds": run.timeout_seconds,
        "treatFailureAsDeploymentFailure": False}}

    def send() -> PipelineResponse[Any, Any]:
        poller = _operations(clients, machine).begin_create_or_update(
            machine.resource_group, machine.name, run.name, body, polling=False, cls=raw_response, **_NO_RETRIES)
        return poller.result()

    def check() -> tuple[str, str]:
        try:
            view = read_run(clients, machine, run.name, **_CHECK_OPTIONS)
        except AzureError as exc:
            return UNREADABLE, f"run command: {describe_error(exc)}"
        if view is None:
            return NOT_STARTED, "no such run command"
        views[key] = view
        if view.state in _RUNNING or not view.state:
            return ON_ITS_WAY, view.state or "accepted"
        if view.state == "succeeded" and view.exit_code in (0, None):
            return DONE, view.describe()
        return ENDED_FAILED, view.describe()

    return Operation(key=key, resource_id=machine.resource_id, action=action, send=send, check=check,
                     ends_by_check=True, follow_only=follow_only)


def delete_run_commands(clients: ClientFactory, targets: Sequence[tuple[RunMachine, str]], *, parallelism: int,
                        log: logging.LoggerAdapter[Any]) -> int:
    """Delete these run commands (machine, name); returns how many deletes failed (each logged).
    Not waited on: the delete runs in Azure, and a command left behind is deleted by the next try."""

    def delete(target: tuple[RunMachine, str]) -> bool:
        machine, name = target
        try:
            _operations(clients, machine).begin_delete(machine.resource_group, machine.name, name,
                                                       polling=False, cls=raw_response).result()
        except HttpResponseError as exc:
            if exc.status_code == 404:
                return True
            log.warning("deleting run command %s of %s failed: %s", name, machine.resource_id, describe_error(exc))
            return False
        except AzureError as exc:
            log.warning("deleting run command %s of %s failed: %s", name, machine.resource_id, describe_error(exc))
            return False
        return True

    if not targets:
        return 0
    with InvocationPool(max_workers=max(1, min(parallelism, len(targets))), thread_name_prefix="delete") as pool:
        return sum(1 for ok in pool.map(delete, targets) if not ok)
