"""Steps `checks`, `verdict` and `cancel`: the pre phase's verdict, and the cancel while a cancel
is still honoured.

Rules: work still running at the deadline is a failure; so is any failing check. A failure
cancels the run when MAINTENANCE_CANCEL_ON_FAILURE is on, but never once the cutoff has passed:
then the miss is logged at ERROR, alerted and recorded, and the run goes ahead.

The verdict fails closed: when the run's machines cannot be established by the deadline
(Resource Graph failing, the verdict itself failing with no time left for a retry), the run is
cancelled (a cancel needs nothing but the correlation id) unless MAINTENANCE_UNCHECKED_RUN is
`report`; either way the reason is recorded and alerted.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from handlers.core.status import Outcome, Verdict
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.pre.cancel import send_cancel
from handlers.phases.pre.checks import CheckContext, CheckResult, Finding, run_checks
from handlers.phases.pre.hold import HELD_REASON, held_after_ready
from handlers.phases.pre.state import PreWork
from handlers.phases.steps import PhaseRun

NOT_REQUESTED_REPORT = "not-requested (MAINTENANCE_UNCHECKED_RUN is report)"
NOT_REQUESTED_OFF = "not-requested (cancel-on-failure off)"


def check(run: PhaseRun[PreWork]) -> None:
    work = run.state
    context = CheckContext(run.runtime, work.records, work.views, list(work.snapshots.values()),
                           unreadable_subscriptions=work.unreadable,
                           run_row=run.runtime.ledger.get_run(run.event.correlation_id) or {})
    work.check_results = run_checks(context, run.log.warning)
    _record_machine_findings(run, work.check_results)


def decide(run: PhaseRun[PreWork]) -> None:
    """The reasons against the run, and the verdict they make (recorded on the run)."""
    work = run.state
    results: list[CheckResult] = work.check_results
    reasons = [f"the run's machines could not be established: {work.unchecked}"] if work.unchecked else []
    reasons += [f"{m.resource_id}: still starting at the deadline" for m in work.records.values()
                if m.pre_outcome == Outcome.TIMED_OUT]
    reasons += [f"{s.disk_id}: snapshot still being created at the deadline" for s in work.snapshots.values()
                if s.outcome == Outcome.TIMED_OUT]
    reasons += [f"{r.name}: {f.resource_id + ': ' if f.resource_id else ''}{f.reason}"
                for r in results for f in r.findings]
    work.reasons = list(dict.fromkeys(reasons))
    _record_verdict(run, results)
    if not work.reasons and held_after_ready(run.runtime, run.event):
        # A hold written while the checks ran: the hold link read no verdict, so it is ours to honour.
        work.reasons = [f"no-hold-tag: {HELD_REASON}"]
        _record_verdict(run, [*results, CheckResult("no-hold-tag", False, (Finding(None, HELD_REASON),))])
    if work.reasons:
        run.log.warning("verdict: %d reason(s) against this run", len(work.reasons))
    else:
        run.log.info("verdict: ready (%s)", ", ".join(f"{r.name} passed" for r in results) or "no checks configured")


def _record_verdict(run: PhaseRun[PreWork], results: list[CheckResult]) -> None:
    work = run.state
    work.verdict = (Verdict.FAILED if work.reasons else Verdict.READY).value
    checks = {r.name: "passed" if r.passed else "failed" for r in results}
    run.runtime.ledger.update_run(run.event.correlation_id, {
        "Verdict": work.verdict,
        "VerdictAt": run.runtime.clock.utcnow(),
        "MachineCount": len(work.records),
        "Checks": json.dumps(checks),
        "FailingReasons": "\n".join(work.reasons),
        "Unchecked": work.unchecked,
    })


def cancel(run: PhaseRun[PreWork]) -> None:
    """Cancel a failed run while a cancel is still honoured; record and alert what happened."""
    runtime, work, event = run.runtime, run.state, run.event
    reasons = work.reasons
    if not reasons:
        work.cancel = "not-needed"
    elif work.unchecked and len(reasons) == 1 and runtime.settings.unchecked_run == "report":
        work.cancel = NOT_REQUESTED_REPORT
    elif not runtime.settings.cancel_on_failure:
        run.log.warning("the run goes ahead despite %d failure(s) (MAINTENANCE_CANCEL_ON_FAILURE is false): %s",
                        len(reasons), _joined(reasons))
        work.cancel = NOT_REQUESTED_OFF
    elif (runtime.ledger.get_run(event.correlation_id) or {}).get("CancelOutcome") == "accepted":
        work.cancel = "accepted"
    else:
        work.cancel = send_cancel(runtime, event, _joined(reasons), run.log, retry_later=True)
    runtime.ledger.update_run(event.correlation_id, {"CancelOutcome": work.cancel})
    if work.unchecked:
        raise_alert(runtime.ledger, event.correlation_id, AlertKind.UNCHECKED_RUN,
                    f"the run's machines could not be established by the deadline ({work.unchecked}); "
                    f"cancel: {work.cancel}")
    elif reasons and work.cancel not in ("accepted", NOT_REQUESTED_OFF):
        raise_alert(runtime.ledger, event.correlation_id, AlertKind.CANCEL_NOT_MADE,
                    f"the verdict failed ({len(reasons)} reason(s)) and the run was not cancelled: {work.cancel}")
    if reasons:
        run.log.warning("cancel: %s", work.cancel)


def preview_cancel(run: PhaseRun[PreWork]) -> None:
    """A dry run: what the verdict would do, and nothing cancelled."""
    work = run.state
    for reason in work.reasons:
        run.log.info("dry run: would cancel the run because %s", reason)
    work.verdict, work.cancel = Verdict.DRY_RUN.value, "not-requested (dry run)"
    run.runtime.ledger.update_run(run.event.correlation_id, {"Verdict": work.verdict, "CancelOutcome": work.cancel})


def _joined(reasons: list[str]) -> str:
    return "; ".join(reasons[:10]) + (" ..." if len(reasons) > 10 else "")


def _record_machine_findings(run: PhaseRun[PreWork], results: list[CheckResult]) -> None:
    work = run.state
    per_machine: dict[str, list[str]] = {}
    for result in results:
        for finding in result.findings:
            if finding.resource_id:
                per_machine.setdefault(finding.resource_id.lower(), []).append(f"{result.name}: {finding.reason}")
    changed: list[Any] = []
    for key, found in per_machine.items():
        record = work.records.get(key)
        if record is not None:
            work.records[key] = replace(record, check_failures="; ".join(found))
            changed.append(work.records[key])
    run.runtime.ledger.save_rows(run.event.correlation_id, changed)
