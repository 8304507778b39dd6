"""Step `patch-results`: what Update Manager installed in each machine of the run, read from Resource
Graph into the machines' rows, and counted on the run row (`PatchSummary`).

Resource Graph lags the machines by minutes, and a post event can come before every result is there.
So the step reads again every minute until every machine of the run has a final result (Succeeded,
Failed, CompletedWithWarnings) or it has waited MAINTENANCE_PATCH_RESULTS_WAIT_SECONDS in all
(`PatchResultsWaited` on the run row), over as many invocations as that takes. Then a machine
without a result is recorded as `not-reported`, and one still in progress keeps that status. A run
that was cancelled installs nothing: it is read once, without waiting.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, replace

from handlers.adapters.patch_results import PatchResult, find_patch_results
from handlers.core.events import RunStatus
from handlers.ledger import PATCH_FIELDS, MachineRecord
from handlers.phases.post.state import PostWork
from handlers.phases.signals import ContinueLater
from handlers.phases.steps import PhaseRun

STEP = "patch-results"
NOT_REPORTED = "not-reported"
READ_EVERY_SECONDS = 60.0
_FINAL = frozenset({"succeeded", "failed", "completedwithwarnings", NOT_REPORTED})


def read_patch_results(run: PhaseRun[PostWork]) -> None:
    # Beside the steps after it from the start: Resource Graph reads and ledger writes, no ARM budget
    # they need. `tags` waits for it (it stamps the patch status); nothing else reads `state.records`.
    run.go_on()
    runtime, event, log = run.runtime, run.event, run.log
    run.state.records = run.state.machine_rows(lambda: runtime.ledger.list_machines(event.correlation_id))
    records = [r for r in run.state.records if r.kind in ("vm", "arc")]
    wanted = {r.resource_id.lower(): r for r in records if r.patch_status.lower() not in _FINAL}
    if not records or not wanted:
        _summarize(run, records)
        return
    cancelled = event.run_status == RunStatus.CANCELLED  # from the event: a resumed step has no state
    clock = runtime.clock
    # The wait is counted on the runtime's monotonic clock (the one its sleeps use) and kept on the
    # run row, so that a wait spread over invocations adds up; this invocation's end bounds it too.
    waited = float((runtime.ledger.get_run(event.correlation_id) or {}).get("PatchResultsWaited") or 0.0)
    allowed = 0.0 if cancelled else float(runtime.settings.patch_results_wait_seconds)
    budget = max(0.0, min(allowed - waited, clock.seconds_until(run.invocation_end)))
    began = clock.now()
    graph = runtime.clients.resource_graph()
    while True:
        found = find_patch_results(graph, event.subscription_ids, event.correlation_id, list(wanted))
        changed = [_with_result(wanted[key], result) for key, result in found.items()
                   if _changed(wanted[key], result)]
        _save(run, changed)
        for record in changed:
            wanted[record.resource_id.lower()] = record
        wanted = {k: r for k, r in wanted.items() if r.patch_status.lower() not in _FINAL}
        left = budget - (clock.now() - began)
        if not wanted or left <= 0:
            break
        log.info("%d machine(s) without a final patch result yet; reading again in %.0f s", len(wanted),
                 min(READ_EVERY_SECONDS, left))
        clock.sleep(min(READ_EVERY_SECONDS, left))
    waited += clock.now() - began
    runtime.ledger.update_run(event.correlation_id, {"PatchResultsWaited": waited})
    if wanted and waited < allowed:
        raise ContinueLater(STEP, f"{len(wanted)} machine(s) without a final patch result when this invocation's "
                                  f"time ran out; {allowed - waited:.0f} s of waiting left")
    _save(run, [replace(r, patch_status=NOT_REPORTED) for r in wanted.values() if not r.patch_status])
    if wanted:
        log.warning("%d machine(s) have no final patch result for this run in Resource Graph (%s)", len(wanted),
                    ", ".join(sorted(r.name for r in wanted.values())[:20]))
    _summarize(run, run.state.records)


def _save(run: PhaseRun[PostWork], rows: list[MachineRecord]) -> None:
    """Store the rows, and keep the phase's view of its machines (`run.state.records`) current."""
    run.runtime.ledger.save_rows(run.event.correlation_id, rows, only=PATCH_FIELDS)
    saved = {r.resource_id.lower(): r for r in rows}
    run.state.records = [saved.get(r.resource_id.lower(), r) for r in run.state.records]


def _changed(record: MachineRecord, result: PatchResult) -> bool:
    return (record.patch_status, record.patch_installed, record.patch_failed) != \
        (result.status, result.installed, result.failed)


def _with_result(record: MachineRecord, result: PatchResult) -> MachineRecord:
    updates = [asdict(u) for u in result.failed_updates]
    return replace(
        record, patch_status=result.status, patch_installed=result.installed, patch_failed=result.failed,
        patch_pending=result.pending, patch_reboot=result.reboot_status, patch_window_exceeded=result.window_exceeded,
        patch_error=result.error, patch_started_at=result.started_at,
        patch_finished_at=result.modified_at if result.final else None,
        patch_failed_updates=json.dumps(updates) if updates else "")


def _summarize(run: PhaseRun[PostWork], records: list[MachineRecord]) -> None:
    counts = Counter((r.patch_status or NOT_REPORTED).lower() for r in records if r.kind in ("vm", "arc"))
    summary = {
        "patched": counts["succeeded"], "warnings": counts["completedwithwarnings"], "failed": counts["failed"],
        "not_reported": counts[NOT_REPORTED] + counts["notstarted"] + counts["inprogress"],
        "needs_reboot": sum(1 for r in records if r.patch_reboot.lower() in ("required", "failed")),
    }
    run.summary["patches"] = summary
    run.runtime.ledger.update_run(run.event.correlation_id, {"PatchSummary": json.dumps(summary, sort_keys=True)})
