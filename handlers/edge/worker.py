"""The queue worker: reads a work message and runs its step under a claim (`handlers.phases.claims`).

Steps: a run's pre or post phase (what the event functions queue), a group of subscriptions of
a split pre phase, and the pre phase's verdict (queued by the last group, and as a fallback for
the deadline by the pre phase's first attempt). A message we cannot read is recorded and
dropped: retrying cannot fix it, and it must not end in the poison queue unrecorded.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import azure.functions as func

from handlers.core.bounds import bounded_text
from handlers.core.errors import InvalidEventError, UnsupportedEventTypeError
from handlers.core.events import EventKind
from handlers.core.logs import RunLogger, run_logger
from handlers.core.work import Step, WorkMessage, send_work
from handlers.ledger import PhaseStatus, utcnow
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.claims import DeferredError, Heartbeat, Outcome, run_claimed
from handlers.phases.post.restore import PreStillRunningError, run_post_with_retention
from handlers.phases.pre.fan_out import lanes_finished, run_lanes, run_verdict, verdict_delay
from handlers.phases.pre.prepare import run_pre
from handlers.phases.pre.verdict import RETRY_LEFT, fail_closed
from handlers.runtime import Runtime

# A post event that arrives while the pre phase still runs (a cancelled run ends early) waits
# for it: the message is sent again with this delay, at most this many times.
DEFER_SECONDS = 60
MAX_DEFERRALS = 45


def run_work_message(runtime: Runtime, message: func.QueueMessage | bytes | str) -> dict[str, Any] | None:
    """Process one work message; returns the step's summary, or None when there was nothing to do."""
    if isinstance(message, func.QueueMessage):
        body: bytes | str = message.get_body()
        dequeue_count = int(message.dequeue_count or 1)
    else:
        body, dequeue_count = message, 1
    try:
        work = WorkMessage.parse(body)
    except (InvalidEventError, UnsupportedEventTypeError) as exc:
        _drop_unreadable(runtime, body, str(exc))
        return None
    except Exception as exc:  # anything else the parser trips on is still a message we cannot read
        _drop_unreadable(runtime, body, f"work message could not be read: {type(exc).__name__}")
        return None
    log = run_logger(work.event.correlation_id)
    if work.step is Step.VERDICT:
        return _verdict(runtime, work, dequeue_count, log)
    if work.step is Step.LANES:
        summary = run_claimed(runtime, work, dequeue_count=dequeue_count, log=log,
                              work=lambda beat: Outcome(run_lanes(runtime, work.event, list(work.lanes), log,
                                                                  stop=lambda: beat.lost)))
        # A retry of a group that finished (its verdict send failed) queues the verdict again;
        # a second verdict message finds the first's claim or result and leaves.
        if (summary is not None or dequeue_count > 1) and lanes_finished(runtime, work.event):
            send_work(runtime.work_queue(), replace(work, step=Step.VERDICT, lanes=(), takeovers=0))
        return summary
    if work.event.kind is EventKind.PRE:
        return run_claimed(runtime, work, dequeue_count=dequeue_count, log=log,
                           work=lambda beat: _pre(runtime, work, beat, log))
    return run_claimed(runtime, work, dequeue_count=dequeue_count, log=log,
                       work=lambda beat: _post(runtime, work, log))


def _pre(runtime: Runtime, work: WorkMessage, beat: Heartbeat, log: RunLogger) -> Outcome:
    if not runtime.settings.dry_run:
        _ensure_fallback_verdict(runtime, work, beat, log)
    summary = run_pre(runtime, work.event, log, fan_out=True, stop=lambda: beat.lost)
    log.info("pre phase %s: %s", "dispatched" if summary.get("dispatched") else "finished",
             json.dumps(summary, sort_keys=True))
    return Outcome(summary, PhaseStatus.DISPATCHED if summary.get("dispatched") else PhaseStatus.COMPLETED)


def _ensure_fallback_verdict(runtime: Runtime, work: WorkMessage, beat: Heartbeat, log: RunLogger) -> None:
    """Queue the verdict for the deadline once per run (the first attempt that can): it is what
    checks and cancels the run when every attempt of this phase fails. A queue that fails now
    does not stop the phase; the heartbeat tries again on each beat."""
    if beat.claim.row.get("FallbackQueuedAt"):
        return

    def queue() -> bool:
        verdict = replace(work, step=Step.VERDICT, lanes=(), takeovers=0, deferrals=0)
        send_work(runtime.work_queue(), verdict, delay_seconds=verdict_delay(runtime, work.event))
        beat.record({"FallbackQueuedAt": utcnow()})
        return True

    try:
        queue()
    except Exception as exc:
        log.warning("could not queue the fallback verdict yet (retried while this phase runs): %s", exc)
        beat.add_duty(queue)


def _post(runtime: Runtime, work: WorkMessage, log: RunLogger) -> Outcome:
    try:
        summary = run_post_with_retention(runtime, work.event, log)
    except PreStillRunningError:
        if work.deferrals >= MAX_DEFERRALS:
            minutes = work.deferrals * DEFER_SECONDS // 60
            runtime.ledger.update_run(work.event.correlation_id,
                                      {"RestoreOutcome": "gave up waiting for the pre phase"})
            raise_alert(runtime.ledger, work.event.correlation_id, AlertKind.LEFT_RUNNING,
                        f"the post phase gave up after waiting {minutes} minutes for the pre phase: VMs it "
                        "started were not turned off")
            return Outcome({"restore": "gave up waiting for the pre phase"})
        log.info("pre phase still running; post phase retries in %d s", DEFER_SECONDS)
        raise DeferredError("waiting for the pre phase to finish", replace(work, deferrals=work.deferrals + 1),
                            DEFER_SECONDS) from None
    log.info("post phase finished: %s", json.dumps(summary, sort_keys=True))
    return Outcome(summary)


def _verdict(runtime: Runtime, work: WorkMessage, dequeue_count: int, log: RunLogger) -> dict[str, Any] | None:
    """The verdict of a split pre phase (queued by the last group), or the fallback queued for
    the deadline: it leaves alone a pre phase that reached its verdict. When it fails (the ledger
    or Resource Graph down) so close to the cutoff that no retry would come in time, it fails
    closed at once: the cancel needs nothing but the event."""
    event = work.event
    if runtime.settings.dry_run:
        log.info("dry run: no verdict from a queued message (a dry run never cancels)")
        return None

    def decide(beat: Heartbeat) -> Outcome:
        summary = run_verdict(runtime, event, log)
        runtime.ledger.complete_phase(event.correlation_id, "pre", summary=summary)
        return Outcome(summary)

    try:
        pre = runtime.ledger.get_phase(event.correlation_id, "pre")
        if pre is not None and pre.get("Status") == PhaseStatus.COMPLETED.value:
            log.info("the pre phase has reached its verdict; this message is a duplicate")
            return None
        return run_claimed(runtime, work, dequeue_count=dequeue_count, log=log, work=decide)
    except Exception as exc:
        assert event.cancellation_cutoff is not None
        if event.cancellation_cutoff - utcnow() > RETRY_LEFT:  # a retry still comes in time
            raise
        log.error("the verdict failed with no time left for a retry before the cutoff: %s", exc)
        return fail_closed(runtime, event, f"the verdict could not be reached: {type(exc).__name__}: {exc}", log)


def _drop_unreadable(runtime: Runtime, body: bytes | str, reason: str) -> None:
    run_logger(None).error("dropping unreadable work message: %s", reason)
    runtime.ledger.record_rejected(event_id=None, reason=f"work message: {reason}", raw=bounded_text(body))
