"""Steps `starts` and `snapshots`: the requests due, built (the `send` step sends them).

A VM an earlier attempt recorded may have been started already: its current state is read
first. Running: done; starting: followed, not sent again."""

from __future__ import annotations

from dataclasses import replace

from handlers.adapters.power import power_operation, read_power_states
from handlers.adapters.snapshots import snapshot_operation
from handlers.core.status import Outcome, PreAction
from handlers.phases.pre.state import FINAL, PreWork
from handlers.phases.steps import PhaseRun


def plan_starts(run: PhaseRun[PreWork]) -> None:
    runtime, work = run.runtime, run.state
    due = [m for m in work.machines if work.records[m.resource_id.lower()].pre_action == PreAction.START
           and work.records[m.resource_id.lower()].pre_outcome not in FINAL]
    retried = [m for m in due if m.resource_id.lower() not in work.fresh]
    current = read_power_states(runtime.clients, retried, parallelism=runtime.settings.parallelism) if retried else {}
    confirmed = []
    for machine in retried:
        key = machine.resource_id.lower()
        if current.get(key) == "running":
            run.log.info("%s already running after an earlier attempt", machine.resource_id)
            work.records[key] = replace(work.records[key], pre_outcome=Outcome.SUCCEEDED.value,
                                        ready_at=runtime.clock.utcnow())
            confirmed.append(work.records[key])
    runtime.ledger.save_rows(run.event.correlation_id, confirmed)
    work.start_ops = {
        m.resource_id.lower(): replace(power_operation(runtime.clients, m, "start"),
                                       follow_only=current.get(m.resource_id.lower()) == "starting")
        for m in due if work.records[m.resource_id.lower()].pre_outcome not in FINAL}


def plan_snapshot_requests(run: PhaseRun[PreWork]) -> None:
    runtime, work = run.runtime, run.state
    now = runtime.clock.utcnow()
    work.snapshot_ops = {s.row_key(): snapshot_operation(runtime.clients, runtime.settings, s,
                                                         correlation_id=run.event.correlation_id, now=now)
                         for s in work.snapshots.values() if s.outcome not in FINAL}
