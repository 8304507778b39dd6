"""Step `await-pre`: the run's status from the post event, and the pre phase's end.

A post event that arrives while the pre phase still runs (a cancelled run ends early) waits for
it: the message is sent again in DEFER_SECONDS, at most MAX_DEFERRALS times; then the phase
gives up and alerts. With no ledger record of the pre event, nothing is restored: only VMs this
toolkit started are ever turned off (the steps after the restore still run: retention).
"""

from __future__ import annotations

from dataclasses import replace

from handlers.ledger import PhaseStatus
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.post.state import PostWork
from handlers.phases.signals import DeferredError
from handlers.phases.steps import Ended, PhaseRun

DEFER_SECONDS = 60
MAX_DEFERRALS = 45
NO_LEDGER_HINT = (
    "no ledger record of the pre event for this run, so no VM is stopped: only VMs this toolkit "
    "started are ever turned off. (Was the pre event delivered to this app, to the same ledger table?)"
)


def await_pre(run: PhaseRun[PostWork]) -> None:
    ledger, event, log, work = run.runtime.ledger, run.event, run.log, run.work
    run_status = event.run_status.value if event.run_status else "unknown"
    run.state.run_status = run_status
    run.summary["run_status"] = run_status
    log.info("maintenance run ended with status %s (%s)", event.status or "(none)", run_status)
    ledger.update_run(event.correlation_id, {"PostStatus": event.status or "", "RunStatus": run_status})
    pre_phase = ledger.get_phase(event.correlation_id, "pre")
    if pre_phase is None:
        log.warning(NO_LEDGER_HINT)
        run.state.nothing_to_restore = True
        run.summary.update(restore="no-ledger-record", machines=0)
        return
    if pre_phase.get("Status") == PhaseStatus.COMPLETED.value:
        return
    if work.deferrals >= MAX_DEFERRALS:
        minutes = work.deferrals * DEFER_SECONDS // 60
        ledger.update_run(event.correlation_id, {"RestoreOutcome": "gave up waiting for the pre phase"})
        raise_alert(ledger, event.correlation_id, AlertKind.LEFT_RUNNING,
                    f"the post phase gave up after waiting {minutes} minutes for the pre phase: VMs it "
                    "started were not turned off")
        run.end(Ended.GAVE_UP, restore="gave up waiting for the pre phase")
        return
    log.info("pre phase still running; post phase retries in %d s", DEFER_SECONDS)
    raise DeferredError("waiting for the pre phase to finish", replace(work, deferrals=work.deferrals + 1),
                        DEFER_SECONDS)
