"""In the guest: which run commands a machine's tags ask for in each phase, and how their
results are written on its row.

Before patching: the operator's pre script (`maintenance-pre-script`), then the services of
`maintenance-stop-services` stopped in the listed order. After: the services started in reverse
order, then the post script. Each is one managed run command, named from the run and the step,
so every attempt of a run uses the same names. What the tags ask for is read once, before the
window, into the machine's row; the post phase starts exactly what the pre phase stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from handlers.adapters.guest_scripts import services_script
from handlers.adapters.inventory import MachineKind, RunMachine, VmView, describe_machine
from handlers.adapters.operations import Operation, OperationResult
from handlers.adapters.run_commands import RunView, ScriptRun, run_command_operation
from handlers.adapters.script_catalogue import ScriptCatalogue, ScriptNotFound
from handlers.core.guest_tags import GuestTagError, read_guest_tags, wave_of
from handlers.core.keys import digest
from handlers.core.status import Outcome
from handlers.ledger import MachineRecord
from handlers.runtime import Runtime

RUN_COMMANDS = tuple(f"Microsoft.{kind}/runCommands/{verb}" for verb in ("write", "read", "delete")
                     for kind in ("Compute/virtualMachines", "HybridCompute/machines"))
# Outcomes after which a retried worker leaves a machine's guest commands alone.
GUEST_FINAL = frozenset({Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT, Outcome.SKIPPED, Outcome.PLANNED})


@dataclass(frozen=True)
class GuestCommand:
    """One run command of a machine's phase."""

    step: str  # "pre-script" | "stop-services" | "start-services" | "post-script"
    label: str  # "script drain", "stop-services nginx,myapp.service"
    run: ScriptRun


def command_name(correlation_id: str, step: str) -> str:
    """The run command's resource name: the same for every attempt of the run's step."""
    return f"maintenance-{step}-{digest(correlation_id)[:16]}"


def catalogue(runtime: Runtime) -> ScriptCatalogue:
    settings = runtime.settings
    container = runtime.clients.blob_container(settings.script_container) if settings.script_container else None
    return ScriptCatalogue(settings.script_folder, container=container)


def read_tags(record: MachineRecord, view: VmView | None) -> MachineRecord:
    """The record with what its machine's tags ask of the guest; a refused tag value fails the
    machine's guest step, with the reason, before anything is sent."""
    tags: Mapping[str, str] = dict(view.tags) if view else {}
    os_type = (view.os_type if view else "") or record.os_type
    try:
        asked = read_guest_tags(tags)
    except GuestTagError as exc:
        return replace(record, os_type=os_type, wave=wave_of(tags), guest_pre="invalid tag",
                       guest_pre_outcome=Outcome.FAILED.value, guest_pre_detail=str(exc))
    return replace(record, os_type=os_type, wave=asked.wave, stop_services=",".join(asked.services),
                   pre_script=asked.pre_script, post_script=asked.post_script)


def commands(runtime: Runtime, record: MachineRecord, phase: str, scripts: ScriptCatalogue,
             correlation_id: str) -> list[GuestCommand]:
    """The run commands of `phase` ("pre" | "post") for the machine, in the order they run.
    Raises ScriptNotFound (or ValueError) naming what is missing."""
    services = tuple(s for s in record.stop_services.split(",") if s)
    wanted: list[tuple[str, str]] = []  # (step, what)
    if phase == "pre":
        wanted += [("pre-script", record.pre_script)] if record.pre_script else []
        wanted += [("stop-services", ",".join(services))] if services else []
    else:
        wanted += [("start-services", ",".join(reversed(services)))] if services else []
        wanted += [("post-script", record.post_script)] if record.post_script else []
    if wanted and record.os_type not in ("linux", "windows"):
        raise ScriptNotFound(f"the machine's OS type is {record.os_type or 'unknown'!r} in Resource Graph: "
                             "cannot choose between a shell and a PowerShell script")
    timeout = runtime.settings.script_timeout_seconds
    found = []
    for step, what in wanted:
        if step.endswith("-services"):
            verb = step.split("-", 1)[0]
            text = services_script(record.os_type, verb, what.split(","), wait_seconds=timeout)
            label = f"{step} {what}"
        else:
            text = scripts.get(what, record.os_type)
            label = f"script {what} ({scripts.file_name(what, record.os_type)})"
        found.append(GuestCommand(step, label, ScriptRun(command_name(correlation_id, step), text, timeout)))
    return found


def guest_operations(runtime: Runtime, record: MachineRecord, found: Sequence[GuestCommand], *,
                     views: dict[str, RunView], follow_only: bool) -> list[Operation]:
    """One operation per command; keys `<machine>|<step>`."""
    machine = machine_of(record)
    return [run_command_operation(runtime.clients, machine, key=guest_key(record, c.step), action=c.step,
                                  location=record.location, run=c.run, views=views, follow_only=follow_only)
            for c in found]


def guest_key(record: MachineRecord, step: str) -> str:
    return f"{record.resource_id.lower()}|{step}"


def machine_of(record: MachineRecord) -> RunMachine:
    """The machine a ledger row is about (rows are written from parsed ids, so one always is)."""
    machine = describe_machine(record.resource_id)
    if machine is None:
        raise ValueError(f"the ledger row names no machine id we recognise: {record.resource_id!r}")
    return machine


def unreachable(record: MachineRecord, view: VmView | None) -> str:
    """Why no command can run in this machine's guest, or ""."""
    if record.kind == MachineKind.ARC.value:
        status = view.arc_status if view else ""
        if status and status != "connected":
            return f"its Arc agent is {status}"
    elif record.kind != MachineKind.VM.value:
        return "not a machine run commands reach"
    return ""


def settle(record: MachineRecord, phase: str, found: Sequence[GuestCommand],
           results: Mapping[str, OperationResult], views: Mapping[str, RunView], not_sent: str) -> MachineRecord:
    """The record with its guest commands' outcome: succeeded when every command succeeded;
    per command its exit code and duration (or why it did not run), and the tail of its output."""
    details, outputs, outcomes = [], [], []
    for command in found:
        key = guest_key(record, command.step)
        outcome = results.get(key)
        view = views.get(key)
        if outcome is None:
            outcomes.append(Outcome.SKIPPED.value)
            details.append(f"{command.step}: not run: {not_sent}")
            continue
        outcomes.append(outcome.outcome)
        if outcome.outcome == Outcome.TIMED_OUT:
            seen = f" (the command was {view.state})" if view is not None and view.state else ""
            details.append(f"{command.step}: {outcome.detail}{seen}")
        else:
            details.append(f"{command.step}: {view.describe() if view else outcome.detail}")
        if view is not None and view.kept_output():
            outputs.append(f"[{command.step}]\n{view.kept_output()}")
    overall = next((o for o in outcomes if o != Outcome.SUCCEEDED), Outcome.SUCCEEDED.value)
    if overall == Outcome.SKIPPED and any(o == Outcome.FAILED for o in outcomes):
        overall = Outcome.FAILED.value
    values: dict[str, Any] = {"outcome": overall, "detail": "; ".join(details), "output": "\n".join(outputs)}
    return replace(record, **{f"guest_{phase}_{k}": v for k, v in values.items()})


def ran(results: Mapping[str, OperationResult], key: str) -> bool:
    """Whether the command's script has ended (so its run command can be deleted)."""
    outcome = results.get(key)
    return outcome is not None and outcome.outcome in (Outcome.SUCCEEDED, Outcome.FAILED)


def describe(found: Sequence[GuestCommand]) -> str:
    return "; ".join(c.label for c in found)
