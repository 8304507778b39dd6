"""Messages that failed on every attempt: the Functions host moves them to `<queue>-poison`.

None of them is left silent. Each is alerted and recorded on its run; then what can still be
saved is: a pre phase (or a group of it) that never finished still gets its verdict before the
cutoff (queued for the deadline, or, for a verdict that itself failed, a fail-closed cancel
now); a post phase names the VMs we started that may still be running; an event from the
events queue is accepted once more (the storage outage that failed it may be over).
"""

from __future__ import annotations

from dataclasses import replace

import azure.functions as func

from handlers.core import telemetry
from handlers.core.bounds import bounded_text
from handlers.core.events import EventKind
from handlers.core.logs import RunLogger, run_logger
from handlers.core.status import Outcome, PreAction
from handlers.core.work import Step, WorkMessage, send_work
from handlers.ledger import PhaseStatus
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.pre.cancel import cutoff_of, fail_closed
from handlers.phases.pre.fan_out import verdict_delay
from handlers.phases.run_end import PhaseEnd, phase_ended
from handlers.runtime import Runtime


def handle_work_poison(runtime: Runtime, message: func.QueueMessage | bytes | str) -> None:
    body = message.get_body() if isinstance(message, func.QueueMessage) else message
    once = _message_id(message)
    try:
        work = WorkMessage.parse(body)
    except Exception as exc:
        raise_alert(runtime.ledger, None, AlertKind.POISON_MESSAGE,
                    f"an unreadable work message failed on every attempt: {exc}", once=once,
                    raw=bounded_text(body, 2000))
        return
    event = work.event
    log = run_logger(event.correlation_id)
    with telemetry.scope(correlation_id=event.correlation_id, phase=event.kind.value):
        raise_alert(runtime.ledger, event.correlation_id, AlertKind.POISON_MESSAGE,
                    f"{work.describe()} failed on every attempt and is in the poison queue", once=once,
                    step=work.step.value, phase=work.ledger_phase)
        if event.kind is EventKind.PRE:
            _save_the_verdict(runtime, work, log)
        else:
            _name_what_is_left_running(runtime, work, log)


def handle_events_poison(runtime: Runtime, message: func.QueueMessage | bytes | str) -> None:
    from handlers.edge.intake import accept_queue_delivery

    body = message.get_body() if isinstance(message, func.QueueMessage) else message
    raise_alert(runtime.ledger, None, AlertKind.POISON_MESSAGE,
                "an event delivery failed on every attempt and is in the poison queue; accepting it once more",
                once=_message_id(message), raw=bounded_text(body, 2000))
    try:
        accept_queue_delivery(runtime, body)
    except Exception as exc:
        raise_alert(runtime.ledger, None, AlertKind.POISON_MESSAGE,
                    f"an event delivery from the poison queue failed again and is dropped: {type(exc).__name__}: "
                    f"{exc}", raw=bounded_text(body, 2000))


def _message_id(message: func.QueueMessage | bytes | str) -> str | None:
    """What makes the alert about this message once per message: the poison handler itself is
    retried when what it saves fails, and the alert must not come again with each attempt."""
    return message.id if isinstance(message, func.QueueMessage) and message.id else None


def _save_the_verdict(runtime: Runtime, work: WorkMessage, log: RunLogger) -> None:
    """A pre phase that did not finish must still be checked (and cancelled) before the cutoff."""
    event = work.event
    if runtime.settings.dry_run:
        return
    try:
        pre = runtime.ledger.get_phase(event.correlation_id, "pre")
    except Exception as exc:
        log.warning("the pre phase's state could not be read (%s): deciding as if it had not finished", exc)
        pre = None
    if pre is not None and pre.get("Status") == PhaseStatus.COMPLETED.value:
        return
    if runtime.clock.utcnow() >= cutoff_of(event):
        raise_alert(runtime.ledger, event.correlation_id, AlertKind.UNCHECKED_RUN,
                    "the pre phase failed on every attempt and the cutoff has passed: the run goes ahead unchecked")
        phase_ended(runtime, event, "pre", PhaseEnd.FAILED, {"unchecked": True})
        return
    delay = verdict_delay(runtime, event)
    if work.step is Step.VERDICT or delay <= 0:
        fail_closed(runtime, event, f"{work.describe()} failed on every attempt", log)
        return
    send_work(runtime.work_queue(), replace(work, step=Step.VERDICT, lanes=(), takeovers=0, deferrals=0),
              delay_seconds=delay)
    log.warning("the verdict is queued for the deadline (in %.0f s): it checks the run and cancels it if needed",
                delay)


def _name_what_is_left_running(runtime: Runtime, work: WorkMessage, log: RunLogger) -> None:
    event = work.event
    try:
        records = runtime.ledger.list_machines(event.correlation_id)
    except Exception as exc:
        log.warning("the run's machines could not be read from the ledger: %s", exc)
        phase_ended(runtime, event, "post", PhaseEnd.FAILED, {"left_running": "unknown"})
        return
    left = [r.resource_id for r in records if r.pre_action == PreAction.START
            and r.pre_outcome not in (Outcome.PLANNED, Outcome.PENDING)
            and r.restore_outcome not in (Outcome.SUCCEEDED, Outcome.SKIPPED)]
    phase_ended(runtime, event, "post", PhaseEnd.FAILED, {"left_running": len(left)})
    if left:
        raise_alert(runtime.ledger, event.correlation_id, AlertKind.LEFT_RUNNING,
                    f"the post phase failed on every attempt: {len(left)} VM(s) this toolkit started may still be "
                    f"running: {', '.join(left[:20])}{' ...' if len(left) > 20 else ''}", machines=left)
