"""Step `start-services`: after patching, start in each guest what the pre phase stopped (in
reverse order), then run the post script, on the machines that stay on.

A machine the toolkit started and turns off again gets no command (its services come back when it
next boots as they always do). Waves go in order (dependencies first, as they came up before
patching); a machine's failure is recorded and reported and stops nothing: every machine's
commands run, and the restores after this step run whatever happened here. Commands still
running when this invocation's time is spent are followed by the next (nothing runs twice). The
run commands of both phases are deleted once they have ended.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from handlers.adapters.operations import run_operations
from handlers.adapters.run_commands import RunView, delete_run_commands
from handlers.adapters.script_catalogue import ScriptNotFound
from handlers.core.status import Outcome
from handlers.ledger import MachineRecord
from handlers.phases.chains import Chain, Waves, waves_of
from handlers.phases.guest import (
    GUEST_FINAL,
    GuestCommand,
    catalogue,
    command_name,
    commands,
    describe,
    guest_key,
    guest_operations,
    machine_of,
    ran,
    settle,
)
from handlers.phases.post.restore import power_after, started_by_toolkit
from handlers.phases.post.state import PostWork
from handlers.phases.signals import ContinueLater
from handlers.phases.steps import PhaseRun

STEP = "start-services"
_PICK_UP_SECONDS = 300


def start_services(run: PhaseRun[PostWork]) -> None:
    runtime, event, log = run.runtime, run.event, run.log
    due = _due(run)
    # A command of the pre phase still running at its deadline was left to finish: delete it now.
    ended = [(machine_of(r), command_name(event.correlation_id, step)) for r in run.state.records
             if r.guest_pre_outcome == Outcome.TIMED_OUT for step in ("pre-script", "stop-services")]
    if not due:
        delete_run_commands(runtime.clients, ended, parallelism=runtime.settings.parallelism, log=log)
        return
    views: dict[str, RunView] = {}
    chains = [(record.wave, Chain(record.resource_id.lower(), guest_operations(
        runtime, record, found, views=views, follow_only=record.guest_post_outcome == Outcome.PENDING)))
        for record, found in due]
    pending = [replace(r, guest_post=describe(found), guest_post_outcome=Outcome.PENDING.value) for r, found in due]
    runtime.ledger.save_rows(event.correlation_id, pending)
    grouped = waves_of(chains)
    waves = Waves(grouped, strict=False, halted=lambda: "")
    waves.open()
    deadline = _deadline(run, len(grouped))
    until = min(deadline, run.invocation_end)
    results = run_operations(runtime.clients, waves.first(), parallelism=runtime.settings.parallelism,
                             deadline=until, log=log, progress=runtime.progress)
    unfinished = any(r.outcome == Outcome.TIMED_OUT for r in results.values()) or any(not c.ended for _, c in chains)
    if unfinished and until < deadline:
        raise ContinueLater(STEP, "commands still running in the guests when this invocation's time ran out; "
                                  f"they are waited on until {deadline.isoformat()}")
    late = f"not begun by the step's deadline {deadline.isoformat()}"
    rows = [settle(record, "post", found, results, views, waves.not_sent.get(record.resource_id.lower(), late))
            for record, (_, found) in zip(pending, due, strict=True)]
    runtime.ledger.save_rows(event.correlation_id, rows)
    failed = [r for r in rows if r.guest_post_outcome != Outcome.SUCCEEDED]
    for record in failed:
        log.warning("%s: after patching, %s: %s", record.resource_id, record.guest_post, record.guest_post_detail)
    ended += [(machine_of(r), c.run.name) for r, found in due for c in found if ran(results, guest_key(r, c.step))]
    delete_run_commands(runtime.clients, ended, parallelism=runtime.settings.parallelism, log=log)
    run.summary["guest"] = {"machines": len(rows), "failed": len(failed)}


def preview_start_services(run: PhaseRun[PostWork]) -> None:
    """A dry run: which commands would run where (nothing is sent)."""
    for record, found in _due(run):
        wave = "first wave" if record.wave is None else f"wave {record.wave}"
        for command in found:
            run.log.info("dry run: would run %s on %s (%s, %s)", command.label, record.resource_id, record.os_type,
                         wave)


def _due(run: PhaseRun[PostWork]) -> list[tuple[MachineRecord, list[GuestCommand]]]:
    """The machines whose post commands are still to run, with them; the others' rows say why not."""
    runtime, event = run.runtime, run.event
    if run.state.nothing_to_restore or not runtime.settings.guest_actions:
        return []
    run.state.records = runtime.ledger.list_machines(event.correlation_id)
    scripts = catalogue(runtime)
    due, refused = [], []
    for record in run.state.records:
        if not (record.stop_services or record.post_script) or record.guest_post_outcome in GUEST_FINAL:
            continue
        why = _stays_off(run, record)
        try:
            found = commands(runtime, record, "post", scripts, event.correlation_id) if not why else []
        except (ScriptNotFound, ValueError) as exc:
            refused.append(replace(record, guest_post="not runnable", guest_post_outcome=Outcome.FAILED.value,
                                   guest_post_detail=str(exc)))
            continue
        if why:
            refused.append(replace(record, guest_post_outcome=Outcome.SKIPPED.value, guest_post_detail=why))
        else:
            due.append((record, found))
    if refused and not run.dry_run:
        runtime.ledger.save_rows(event.correlation_id, refused)
    return due


def _stays_off(run: PhaseRun[PostWork], record: MachineRecord) -> str:
    """Why the machine gets no command after patching ("" when it gets them)."""
    if record.opted_out:
        return "opted out"
    if record.guest_pre_outcome in (Outcome.PLANNED, Outcome.SKIPPED):
        return f"its commands before patching did not run ({record.guest_pre_detail or record.guest_pre_outcome})"
    started = started_by_toolkit(record)
    action, _ = power_after(record)
    if action and run.runtime.settings.restore_vms:
        return f"turned off again after the window ({action}): no command"
    if record.kind == "vm" and not started and record.original_power_state not in ("running", "starting"):
        return f"not running ({record.original_power_state or 'state unknown'})"
    return ""


def _deadline(run: PhaseRun[PostWork], waves: int) -> datetime:
    """When this step stops waiting, whichever invocation it is in: every wave's commands may take
    their timeout (and a few minutes for the guest agent to pick them up). Recorded on the run."""
    ledger, event = run.runtime.ledger, run.event
    recorded = (ledger.get_run(event.correlation_id) or {}).get("GuestPostDeadline")
    if isinstance(recorded, datetime):
        return recorded
    per_wave = 2 * run.runtime.settings.script_timeout_seconds + _PICK_UP_SECONDS
    deadline = run.runtime.clock.utcnow() + timedelta(seconds=per_wave * max(1, waves))
    ledger.update_run(event.correlation_id, {"GuestPostDeadline": deadline})
    return deadline
