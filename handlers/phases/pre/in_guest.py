"""Step `guest-plan`, and the chains the `send` step sends: what runs in each guest before
patching, and in which order the machines go.

A machine tagged for the guest gets its run commands once it is running: chained after its
start (or at once when it was running), its snapshots after them, so the disks are taken with
the services stopped. Waves (`maintenance-wave`) order the machines: wave k+1's starts and
commands go out when every machine of wave k is running and its commands succeeded. Without
guest tags and waves every start goes out at once, as before.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from handlers.adapters.operations import Operation, OperationResult
from handlers.adapters.run_commands import delete_run_commands
from handlers.adapters.script_catalogue import ScriptNotFound
from handlers.core.status import Outcome, PreAction
from handlers.phases.chains import Chain, Tasks, Waves, waves_of
from handlers.phases.guest import (
    GUEST_FINAL,
    catalogue,
    commands,
    describe,
    guest_key,
    guest_operations,
    machine_of,
    ran,
    read_tags,
    settle,
    unreachable,
)
from handlers.phases.pre.state import PreWork
from handlers.phases.steps import PhaseRun

_RUNNING = frozenset({Outcome.NOT_NEEDED, Outcome.SUCCEEDED})


def plan_guest(run: PhaseRun[PreWork]) -> None:
    """Read the guest tags of the machines first seen now; build the commands still due."""
    runtime, work = run.runtime, run.state
    scripts = catalogue(runtime)
    rows = {row.row_key(): index for index, row in enumerate(work.new_rows)}
    for key, record in list(work.records.items()):
        fresh = key in work.fresh
        view = work.views.get(key)
        if fresh:
            record = read_tags(record, view) if runtime.settings.guest_actions else record
            if record.guest_pre_outcome != Outcome.FAILED and (record.stop_services or record.pre_script):
                record = _commands_of(run, record, view, scripts)
            work.records[key] = record
            work.new_rows[rows[record.row_key()]] = record
        elif record.guest_pre and record.guest_pre_outcome not in GUEST_FINAL:
            work.records[key] = _commands_of(run, record, view, scripts, follow_only=True)
            if work.records[key].guest_pre_outcome == Outcome.FAILED:  # no longer runnable: say why now
                runtime.ledger.save_rows(run.event.correlation_id, [work.records[key]])


def _commands_of(run: PhaseRun[PreWork], record: Any, view: Any, scripts: Any, *, follow_only: bool = False) -> Any:
    work, key = run.state, record.resource_id.lower()
    why = unreachable(record, view) or _not_running(record)
    try:
        found = commands(run.runtime, record, "pre", scripts, run.event.correlation_id)
    except (ScriptNotFound, ValueError) as exc:
        return replace(record, guest_pre="not runnable", guest_pre_outcome=Outcome.FAILED.value,
                       guest_pre_detail=str(exc))
    if why:
        return replace(record, guest_pre=describe(found), guest_pre_outcome=Outcome.SKIPPED.value,
                       guest_pre_detail=f"not run: {why}")
    work.guest_commands[key] = found
    work.guest_ops[key] = guest_operations(run.runtime, record, found, views=work.run_views, follow_only=follow_only)
    return replace(record, guest_pre=describe(found), guest_pre_outcome=record.guest_pre_outcome or "pending")


def _not_running(record: Any) -> str:
    if record.opted_out:
        return "opted out"
    if record.kind != "vm" or record.pre_action == PreAction.START or record.pre_outcome in _RUNNING:
        return ""
    return f"the VM is not running ({record.pre_detail or record.original_power_state or 'state unknown'})"


def chained(work: PreWork, halted: Any) -> tuple[Waves, Tasks, list[Operation]]:
    """The waves of chains; the snapshots sent at once; every operation that may be sent."""
    waiting = {key for key in work.guest_ops}
    after: dict[str, list[Operation]] = {}
    immediate: Tasks = []
    for key, op in work.snapshot_ops.items():
        vm = work.snapshots[key].vm_id.lower()
        (after.setdefault(vm, []).append(op) if vm in waiting else immediate.append([op]))
    chains = []
    for key, record in work.records.items():
        operations = ([work.start_ops[key]] if key in work.start_ops else []) + work.guest_ops.get(key, [])
        if operations:
            chains.append((record.wave, Chain(key, operations, after.get(key, []))))
    waves = Waves(waves_of(chains), strict=True, halted=halted,
                  label=lambda index: f"wave {_wave_names(work)[index]}")
    every = [op for _, chain in chains for op in chain.operations + chain.after] + [t[0] for t in immediate]
    return waves, immediate, every


def _wave_names(work: PreWork) -> list[str]:
    waves = sorted({-1 if r.wave is None else r.wave for r in work.records.values()
                    if r.resource_id.lower() in work.start_ops or r.resource_id.lower() in work.guest_ops})
    return ["(none)" if w < 0 else str(w) for w in waves]


def settle_guest(run: PhaseRun[PreWork], results: dict[str, OperationResult], waves: Waves, halted: str) -> list[Any]:
    """The rows of the machines whose commands were due, with their outcomes; deletes the
    commands that ran (one still running is left to the post phase)."""
    work = run.state
    rows, ended = [], []
    for key, found in work.guest_commands.items():
        not_sent = waves.not_sent.get(key) or halted or "not sent"
        work.records[key] = settle(work.records[key], "pre", found, results, work.run_views, not_sent)
        rows.append(work.records[key])
        ended += [(machine_of(work.records[key]), c.run.name) for c in found
                  if ran(results, guest_key(work.records[key], c.step))]
    delete_run_commands(run.runtime.clients, ended, parallelism=run.runtime.settings.parallelism, log=run.log)
    return rows


def preview_guest(run: PhaseRun[PreWork]) -> None:
    """A dry run: which commands would run where, in which wave (nothing is sent)."""
    work = run.state
    rows = {row.row_key(): index for index, row in enumerate(work.new_rows)}
    for key, found in work.guest_commands.items():
        record = work.records[key] = replace(work.records[key], guest_pre_outcome=Outcome.PLANNED.value)
        if record.row_key() in rows:
            work.new_rows[rows[record.row_key()]] = record
        wave = "first wave" if record.wave is None else f"wave {record.wave}"
        for command in found:
            run.log.info("dry run: would run %s on %s (%s, %s)", command.label, record.resource_id,
                         record.os_type, wave)
    for record in work.records.values():
        if record.wave is not None and record.resource_id.lower() not in work.guest_commands \
                and record.pre_action == PreAction.START:
            run.log.info("dry run: would start %s in wave %d", record.resource_id, record.wave)
