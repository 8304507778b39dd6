"""The queue worker: takes a work message, claims the run's phase, runs it, records the end.

A phase is claimed in the ledger with an ETag-conditional write, so a duplicate message (a
redelivered event, a retried message, a second worker) finds the phase taken or done and
leaves. When the worker fails, the phase is released and the exception propagates: the
Functions host retries the message, and after its last attempt moves it to the poison queue.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from handlers.errors import InvalidEventError, UnsupportedEventTypeError
from handlers.events import EventKind, MaintenanceEvent, parse_event
from handlers.intake import WORK_MESSAGE_VERSION, work_message
from handlers.lanes import (
    VERDICT_PHASE,
    lane_phase,
    lanes_finished,
    queue_fallback_verdict,
    run_lanes,
    run_verdict,
    step_message,
)
from handlers.ledger import PhaseStatus
from handlers.logs import RunLogger, run_logger
from handlers.prepare import run_pre
from handlers.restore import PreStillRunningError, run_post_with_retention
from handlers.runtime import Runtime

# A post event that arrives while the pre phase still runs (a cancelled run ends early) waits
# for it: the message is sent again with this delay, at most this many times.
DEFER_SECONDS = 60
MAX_DEFERRALS = 45


def run_work_message(runtime: Runtime, body: bytes | str) -> dict[str, Any] | None:
    """Process one work message; returns the phase summary, or None when there was nothing to do."""
    log = run_logger(None)
    try:
        message = json.loads(body)
        if not isinstance(message, dict) or message.get("version") != WORK_MESSAGE_VERSION:
            raise InvalidEventError("message.version", f"expected {WORK_MESSAGE_VERSION}")
        event = parse_event(message.get("event") or {})
        deferrals = int(message.get("deferrals") or 0)
        step = message.get("step")
        lanes = message.get("lanes")
        listed = isinstance(lanes, list) and bool(lanes) and all(isinstance(lane, str) for lane in lanes)
        if step is not None and (step not in ("lanes", "verdict") or event.kind is not EventKind.PRE
                                 or (step == "lanes" and not listed)):
            raise InvalidEventError("message.step", f"{step!r} is not a step of the pre phase (lanes with a list of "
                                    "subscriptions, or verdict)")
    except (ValueError, UnsupportedEventTypeError) as exc:
        # Retrying cannot fix a message we cannot read; say so loudly and drop it.
        log.error("dropping unreadable work message: %s", exc)
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        runtime.ledger.record_rejected(event_id=None, reason=f"work message: {exc}", raw=text)
        return None
    run_log = run_logger(event.correlation_id)
    if step == "lanes":
        return _run_lanes_message(runtime, event, [str(lane) for lane in lanes or ()], run_log)
    if step == "verdict":
        return _run_verdict_message(runtime, event, run_log)
    claim = runtime.ledger.claim_phase(event.correlation_id, event.kind.value)
    if claim is None:
        run_log.info("%s phase already running or done elsewhere; this message is a duplicate", event.kind.value)
        return None
    run_log.info("%s phase started (attempt %d)", event.kind.value, claim.attempt)
    if event.kind is EventKind.PRE and claim.attempt == 1 and not runtime.settings.dry_run:
        queue_fallback_verdict(runtime, event)
    try:
        summary = _run_phase(runtime, event, run_log)
    except PreStillRunningError:
        runtime.ledger.release_phase(claim, error="waiting for the pre phase to finish")
        _defer(runtime, event, deferrals, run_log)
        return None
    except Exception as exc:
        runtime.ledger.release_phase(claim, error=f"{type(exc).__name__}: {exc}")
        run_log.warning("%s phase failed on attempt %d; the message will be retried: %s",
                        event.kind.value, claim.attempt, exc)
        raise
    if summary.get("dispatched"):
        # The groups run from their own messages; the verdict step completes the phase.
        run_log.info("%s phase dispatched: %s", event.kind.value, json.dumps(summary, sort_keys=True))
        return summary
    runtime.ledger.finish_phase(claim, summary=summary)
    run_log.info("%s phase finished: %s", event.kind.value, json.dumps(summary, sort_keys=True))
    return summary


def _run_lanes_message(
    runtime: Runtime, event: MaintenanceEvent, lanes: list[str], log: RunLogger
) -> dict[str, Any] | None:
    """Some subscriptions of a split pre phase; the last group to finish queues the verdict."""
    claim = runtime.ledger.claim_phase(event.correlation_id, lane_phase(lanes))
    names = ", ".join(lanes)
    if claim is None:
        log.info("subscription(s) %s already running or done elsewhere; this message is a duplicate", names)
        return None
    try:
        summary = run_lanes(runtime, event, lanes, log)
    except Exception as exc:
        runtime.ledger.release_phase(claim, error=f"{type(exc).__name__}: {exc}")
        log.warning("subscription(s) %s failed on attempt %d; the message will be retried: %s", names,
                    claim.attempt, exc)
        raise
    runtime.ledger.finish_phase(claim, summary=summary)
    log.info("subscription(s) %s finished: %s", names, json.dumps(summary, sort_keys=True))
    if lanes_finished(runtime, event):
        runtime.work_queue().send_message(step_message(event, "verdict"))
    return summary


def _run_verdict_message(runtime: Runtime, event: MaintenanceEvent, log: RunLogger) -> dict[str, Any] | None:
    """The verdict of a split pre phase (queued by the last group), or the fallback queued for
    the deadline: it leaves alone a pre phase that reached its verdict."""
    pre = runtime.ledger.get_phase(event.correlation_id, event.kind.value)
    if pre is not None and pre.get("Status") == PhaseStatus.COMPLETED.value:
        log.info("the pre phase has reached its verdict; this message is a duplicate")
        return None
    if runtime.settings.dry_run:
        log.info("dry run: no verdict from a queued message (a dry run never cancels)")
        return None
    claim = runtime.ledger.claim_phase(event.correlation_id, VERDICT_PHASE)
    if claim is None:
        log.info("the verdict is already being reached or done; this message is a duplicate")
        return None
    try:
        summary = run_verdict(runtime, event, log)
    except Exception as exc:
        runtime.ledger.release_phase(claim, error=f"{type(exc).__name__}: {exc}")
        log.warning("the verdict failed on attempt %d; the message will be retried: %s", claim.attempt, exc)
        raise
    runtime.ledger.finish_phase(claim, summary=summary)
    runtime.ledger.finish_phase(replace(claim, phase=event.kind.value), summary=summary)
    log.info("%s phase finished: %s", event.kind.value, json.dumps(summary, sort_keys=True))
    return summary


def _run_phase(runtime: Runtime, event: MaintenanceEvent, log: RunLogger) -> dict[str, Any]:
    if event.kind is EventKind.PRE:
        return run_pre(runtime, event, log, fan_out=True)
    return run_post_with_retention(runtime, event, log)


def _defer(runtime: Runtime, event: MaintenanceEvent, deferrals: int, log: RunLogger) -> None:
    if deferrals >= MAX_DEFERRALS:
        log.error("post phase gave up after waiting %d minutes for the pre phase; VMs were not restored",
                  deferrals * DEFER_SECONDS // 60)
        runtime.ledger.update_run(event.correlation_id, {"RestoreOutcome": "gave up waiting for the pre phase"})
        return
    log.info("pre phase still running; post phase retries in %d s", DEFER_SECONDS)
    runtime.work_queue().send_message(work_message(event, deferrals=deferrals + 1), visibility_timeout=DEFER_SECONDS)
