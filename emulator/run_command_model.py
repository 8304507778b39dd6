"""Managed Run Command resources, their executions and their async operations, in simulated time.

Like the power operations, everything derives from the clock: an execution is Pending until it
starts, Running until it ends, then Succeeded / Failed / TimedOut (or Canceled when its resource is
deleted, or re-PUT, meanwhile). What an execution does is decided by `ScriptRule`s
(AzureEmulator.script_behaviour). Deletes are applied lazily: readers call `settle_run_commands`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .clock import EmulatorClock, operation_status
from .ids import key
from .messages import ArmError

VM_RUN_COMMAND_TYPE = "Microsoft.Compute/virtualMachines/runCommands"
ARC_RUN_COMMAND_TYPE = "Microsoft.HybridCompute/machines/runCommands"
_MESSAGES = {
    "Pending": "Execution is pending",
    "Running": "Execution is in progress",
    "Succeeded": "Execution completed",
    "Failed": "Execution completed with a non-zero exit code",
    "TimedOut": "Execution timed out",
    "Canceled": "Execution was canceled",
}


@dataclass
class ScriptRule:
    """What the next matching execution does; see AzureEmulator.script_behaviour. `fired` counts uses."""

    machine_key: str | None
    duration: float
    exit_code: int
    output: str
    error: str
    contains: str | None
    times: int | None
    fired: int = 0

    def matches(self, machine_id: str, script: str) -> bool:
        if self.times == 0 or (self.machine_key is not None and key(machine_id) != self.machine_key):
            return False
        return self.contains is None or self.contains in script

    def fire(self) -> None:
        self.fired += 1
        if self.times is not None:
            self.times -= 1


@dataclass
class Execution:
    """One run of a run command's script. `starts` None: it never started (failed or canceled first)."""

    machine_id: str
    run_command: str
    script: str
    parameters: dict[str, str]
    timeout: int
    async_execution: bool
    treat_failure: bool
    put_at: float
    starts: float | None
    ends: float
    final_state: str  # Succeeded | Failed | TimedOut | Canceled
    exit_code: int | None
    output: str = ""
    error: str = ""
    message: str = ""  # executionMessage once ended (default: _MESSAGES)

    def state(self, now: float) -> str:
        if now >= self.ends:
            return self.final_state
        if self.starts is None or now < self.starts:
            return "Pending"
        return "Running"

    def cancel(self, now: float) -> None:
        """End an execution still pending or running as Canceled, now; one that ended is left alone."""
        if now >= self.ends:
            return
        if self.starts is not None and now < self.starts:
            self.starts = None
        self.ends, self.final_state, self.exit_code = now, "Canceled", None
        self.output = self.error = self.message = ""


def plan_execution(
    start: float, timeout: int, duration: float, exit_code: int
) -> tuple[float, str, int | None]:
    """(end, final state, exit code) of an execution starting at `start`."""
    if timeout > 0 and duration > timeout:
        return start + timeout, "TimedOut", None
    return start + duration, "Succeeded" if exit_code == 0 else "Failed", exit_code


@dataclass
class RunCommandOperation:
    """The async operation of a run command PUT (kind "runCommand") or DELETE ("deleteRunCommand").

    A PUT's operation with asyncExecution false follows its execution: it ends when the execution
    does, Failed only with treatFailureAsDeploymentFailure and an execution that did not succeed,
    Canceled when the execution was. Otherwise it ends at `fixed_end` (Failed with an injected error).
    """

    id: str
    kind: str
    machine_key: str
    resource_key: str
    subscription_id: str
    location: str
    arc: bool
    started: float
    fixed_end: float
    execution: Execution | None = None
    error: ArmError | None = None  # injected (mode="operation")

    def _follows_execution(self) -> bool:
        ex = self.execution
        return self.kind == "runCommand" and self.error is None and ex is not None and not ex.async_execution

    def ends(self) -> float:
        return self.execution.ends if self._follows_execution() and self.execution else self.fixed_end

    def failure(self) -> ArmError | None:
        """The error the operation ends with (None: it succeeds)."""
        ex = self.execution
        if not self._follows_execution() or ex is None:
            return self.error
        if ex.final_state == "Canceled":
            return ArmError("OperationCanceled", f"The execution of run command '{ex.run_command}' was canceled.")
        if ex.treat_failure and ex.final_state != "Succeeded":
            detail = f"exit code {ex.exit_code}" if ex.exit_code is not None else ex.final_state
            return ArmError(
                "VMExtensionProvisioningError",
                f"Run command '{ex.run_command}' on '{ex.machine_id}' did not succeed ({detail}): "
                f"{ex.error or _MESSAGES[ex.final_state]}",
            )
        return None

    def status(self, now: float) -> str:
        failure = self.failure()
        if failure is not None and failure.code == "OperationCanceled" and now >= self.ends():
            return "Canceled"
        return operation_status(now, self.ends(), failed=failure is not None)


@dataclass
class RunCommand:
    """A run command resource; `execution`/`operation` are those of its newest accepted PUT."""

    id: str
    name: str
    machine_id: str
    arc: bool
    location: str
    tags: dict[str, str]
    properties: dict[str, Any]  # as given in the PUT (source, parameters, ...), echoed back
    created: float
    execution: Execution
    operation: RunCommandOperation
    updated: bool = False  # accepted by a PUT on an existing name: "Updating", not "Creating"
    puts: int = 1  # PUTs accepted (each started an execution)
    deleting: RunCommandOperation | None = None

    def provisioning_state(self, now: float) -> str:
        deleting = self.deleting
        if deleting is not None and now < deleting.ends():
            return "Deleting"
        status = self.operation.status(now)
        if status == "InProgress":
            return "Updating" if self.updated else "Creating"
        return "Succeeded" if status == "Succeeded" else "Failed"


@dataclass(frozen=True)
class RunCommandExecution:
    """One execution as AzureEmulator.run_command_executions reports it. Times are simulated seconds
    (`clock.now()` scale); `started_at`/`ended_at` are None until it started/ended (`started_at` stays
    None for one canceled or failed before it started); `state`: Pending, Running, Succeeded, Failed,
    TimedOut, Canceled, as of the call; `exit_code` None until it ended (and for TimedOut/Canceled)."""

    machine_id: str
    run_command: str
    script: str
    parameters: Mapping[str, str]
    timeout_in_seconds: int
    async_execution: bool
    treat_failure_as_deployment_failure: bool
    put_at: float
    started_at: float | None
    ended_at: float | None
    state: str
    exit_code: int | None
    output: str
    error: str


@dataclass(frozen=True)
class RunCommandInfo:
    """A run command resource that exists now, as AzureEmulator.run_commands reports it.

    `provisioning_state`: Creating, Updating, Succeeded, Failed or Deleting (`deleting` True while a
    DELETE is under way); `executions`: how many PUTs it accepted; `execution_state`: of the newest."""

    id: str
    name: str
    machine_id: str
    provisioning_state: str
    execution_state: str
    executions: int
    deleting: bool
    created_at: float


@dataclass
class RunCommandStore:
    """Every run command resource (by id key), every execution ever started, and the operations."""

    resources: dict[str, RunCommand] = field(default_factory=dict)
    executions: list[Execution] = field(default_factory=list)
    operations: dict[str, RunCommandOperation] = field(default_factory=dict)
    rules: list[ScriptRule] = field(default_factory=list)

    def settle(self, now: float) -> None:
        """Remove the run commands whose delete has ended (successfully)."""
        for resource_key, rc in list(self.resources.items()):
            op = rc.deleting
            if op is None or now < op.ends():
                continue
            rc.deleting = None
            if op.error is None:
                del self.resources[resource_key]

    def behaviour(self, machine_id: str, script: str) -> ScriptRule | None:
        """The first armed rule for this script, consumed; None: the default behaviour."""
        for rule in self.rules:
            if rule.matches(machine_id, script):
                rule.fire()
                return rule
        return None


def record(ex: Execution, now: float) -> RunCommandExecution:
    started = ex.starts if ex.starts is not None and now >= ex.starts else None
    ended = now >= ex.ends
    return RunCommandExecution(
        ex.machine_id, ex.run_command, ex.script, dict(ex.parameters), ex.timeout, ex.async_execution,
        ex.treat_failure, ex.put_at, started, ex.ends if ended else None, ex.state(now),
        ex.exit_code if ended else None, ex.output if ended else "", ex.error if ended else "",
    )  # fmt: skip


def info(rc: RunCommand, now: float) -> RunCommandInfo:
    return RunCommandInfo(rc.id, rc.name, rc.machine_id, rc.provisioning_state(now), rc.execution.state(now), rc.puts,
                          rc.deleting is not None and now < rc.deleting.ends(), rc.created)  # fmt: skip


def instance_view(clock: EmulatorClock, ex: Execution, now: float) -> dict[str, Any]:
    """`properties.instanceView` of a run command: its newest execution as of `now`."""
    state = ex.state(now)
    ended = now >= ex.ends
    view: dict[str, Any] = {
        "executionState": state,
        "executionMessage": (ex.message if ended and ex.message else _MESSAGES[state]),
        "output": ex.output if ended else "",
        "error": ex.error if ended else "",
    }
    if ended and ex.exit_code is not None:
        view["exitCode"] = ex.exit_code
    if ex.starts is not None and now >= ex.starts:
        view["startTime"] = clock.isoformat(ex.starts)
    if ended:
        view["endTime"] = clock.isoformat(ex.ends)
    view["statuses"] = []
    return view


def run_command_body(clock: EmulatorClock, rc: RunCommand, now: float, *, expand: bool) -> dict[str, Any]:
    """A run command resource as the RP answers a GET or PUT (`expand`: with its instanceView)."""
    properties = dict(rc.properties)
    properties["provisioningState"] = rc.provisioning_state(now)
    if expand:
        properties["instanceView"] = instance_view(clock, rc.execution, now)
    return {
        "id": rc.id,
        "name": rc.name,
        "type": ARC_RUN_COMMAND_TYPE if rc.arc else VM_RUN_COMMAND_TYPE,
        "location": rc.location,
        "tags": dict(rc.tags),
        "properties": properties,
    }
