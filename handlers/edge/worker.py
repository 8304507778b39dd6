"""The queue worker: reads a work message and runs its phase's steps under a claim
(`handlers.phases.claims.run_claimed`, the one way a claimed step runs).

Messages: a run's pre or post phase (what the event functions queue, and what a phase that goes
on in another invocation queues), a group of subscriptions of a split pre phase, and the pre
phase's verdict (queued by the last group, and as a fallback for the deadline by the pre phase's
first attempt). A message we cannot read is recorded and dropped: retrying cannot fix it, and it
must not end in the poison queue unrecorded.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import azure.functions as func

from handlers.core import telemetry
from handlers.core.bounds import bounded_text
from handlers.core.errors import InvalidEventError, UnsupportedEventTypeError
from handlers.core.events import EventKind
from handlers.core.logs import RunLogger, run_logger
from handlers.core.work import Step, WorkMessage, send_work
from handlers.ledger import PhaseStatus, live_lease
from handlers.phases import post, pre
from handlers.phases.claims import Claimed, Heartbeat, run_claimed
from handlers.phases.post import run_post
from handlers.phases.pre import run_pre
from handlers.phases.pre.cancel import RETRY_LEFT, cutoff_of, fail_closed
from handlers.phases.pre.fan_out import lanes_finished
from handlers.phases.run_end import PhaseEnd
from handlers.phases.steps import Ended, PhaseRun
from handlers.runtime import Runtime

# How each early end of a phase counts as the phase's end (None: the phase goes on elsewhere).
_ENDS: dict[Ended | None, PhaseEnd | None] = {
    None: PhaseEnd.COMPLETED, Ended.LATE: PhaseEnd.LATE, Ended.EMPTY: PhaseEnd.COMPLETED,
    Ended.GAVE_UP: PhaseEnd.GAVE_UP, Ended.DISPATCHED: None,
}


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
    steps = pre.STEPS if work.event.kind is EventKind.PRE else post.STEPS
    known = {step.name for step in steps}
    unknown = [(field, name) for field, names in (("resume", (work.resume,)), ("done", work.done))
               for name in names if name and name not in known]
    if unknown:
        field, name = unknown[0]
        _drop_unreadable(runtime, body, f"message.{field}: the {work.event.kind.value} phase has no step {name!r}")
        return None
    with telemetry.scope(correlation_id=work.event.correlation_id, phase=work.event.kind.value):
        return _run(runtime, work, dequeue_count)


def _run(runtime: Runtime, work: WorkMessage, dequeue_count: int) -> dict[str, Any] | None:
    log = run_logger(work.event.correlation_id)
    if work.step is Step.VERDICT:
        return _verdict(runtime, work, dequeue_count, log)
    if work.step is Step.LANES:
        summary = run_claimed(runtime, work, dequeue_count=dequeue_count, log=log,
                              work=lambda beat: _outcome(run_pre(runtime, work, log, beat=beat), ends=False))
        # A retry of a group that finished (its verdict send failed) queues the verdict again;
        # a second verdict message finds the first's claim or result and leaves.
        if (summary is not None or dequeue_count > 1) and lanes_finished(runtime, work.event):
            send_work(runtime.work_queue(), replace(work, step=Step.VERDICT, lanes=(), takeovers=0))
        return summary
    phase = run_pre if work.event.kind is EventKind.PRE else run_post
    return run_claimed(runtime, work, dequeue_count=dequeue_count, log=log,
                       work=lambda beat: _outcome(phase(runtime, work, log, beat=beat)))


def _outcome(run: PhaseRun[Any], *, ends: bool = True) -> Claimed:
    """What a claimed run of steps returns: DISPATCHED when its own messages finish it."""
    status = PhaseStatus.DISPATCHED if run.ended is Ended.DISPATCHED else PhaseStatus.COMPLETED
    return Claimed(run.summary, status, _ENDS[run.ended] if ends else None)


def _verdict(runtime: Runtime, work: WorkMessage, dequeue_count: int, log: RunLogger) -> dict[str, Any] | None:
    """The verdict of a split pre phase (queued by the last group), or the fallback queued for
    the deadline: it leaves alone a pre phase that reached its verdict. When it fails (the ledger
    or Resource Graph down) so close to the cutoff that no retry would come in time, it fails
    closed at once: the cancel needs nothing but the event."""
    event = work.event

    def decide(beat: Heartbeat) -> Claimed:
        run = run_pre(runtime, work, log, beat=beat)
        runtime.ledger.complete_phase(event.correlation_id, "pre", summary=run.summary)
        return Claimed(run.summary, ends=PhaseEnd.VERDICT)

    try:
        pre = runtime.ledger.get_phase(event.correlation_id, "pre")
        if pre is not None and pre.get("Status") == PhaseStatus.COMPLETED.value:
            log.info("the pre phase has reached its verdict; this message is a duplicate")
            return None
        if (pre is not None and live_lease(pre, runtime.clock.utcnow()) is not None
                and runtime.clock.seconds_until(cutoff_of(event)) <= 0):
            # Past the cutoff no cancel can be made, and a verdict beside the live pre phase would
            # decide on rows it is still writing (and overwrite them): the phase records its own
            # verdict, and its message is retried if its worker dies.
            log.info("the cutoff has passed and the pre phase's worker is alive: it records its own verdict")
            return None
        return run_claimed(runtime, work, dequeue_count=dequeue_count, log=log, work=decide)
    except Exception as exc:
        if runtime.clock.seconds_until(cutoff_of(event)) > RETRY_LEFT.total_seconds():
            raise  # a retry still comes in time
        log.error("the verdict failed with no time left for a retry before the cutoff: %s", exc)
        return fail_closed(runtime, event, f"the verdict could not be reached: {type(exc).__name__}: {exc}", log)


def _drop_unreadable(runtime: Runtime, body: bytes | str, reason: str) -> None:
    run_logger(None).error("dropping unreadable work message: %s", reason)
    runtime.ledger.record_rejected(event_id=None, reason=f"work message: {reason}", raw=bounded_text(body))
