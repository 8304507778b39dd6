"""The one place every way a phase ends goes through.

A pre phase ends with its verdict (reached in one worker, by the verdict of a split run, by the
fallback verdict at the deadline, or failed closed), when its event came too late, or when its
run has no machines; a post phase ends when its last step has run, when it gave up waiting for
the pre phase, or when it failed on every attempt. Each calls `phase_ended` once: it logs the
end, records it on the run row (`PreEnded` / `PostEnded`, and `PreEndedHow` / `PostEndedHow`)
and calls every listener in `LISTENERS`, where the report and the notifications plug in.
A listener that fails is logged and the others still run: the end is recorded either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from handlers.core.events import MaintenanceEvent
from handlers.core.logs import run_logger
from handlers.runtime import Runtime


class PhaseEnd(StrEnum):
    COMPLETED = "completed"  # every step ran (a pre phase: its verdict is in)
    VERDICT = "verdict"  # the verdict of a split pre phase, or the fallback at the deadline
    FAILED_CLOSED = "failed-closed"  # no verdict could be reached in time: cancelled unchecked
    LATE = "late"  # the pre event came after its window began or after the post event
    GAVE_UP = "gave-up"  # the post phase stopped waiting for the pre phase
    FAILED = "failed"  # every attempt failed (the poison queue)


@dataclass(frozen=True)
class PhaseEnding:
    runtime: Runtime
    event: MaintenanceEvent
    phase: str  # "pre" | "post"
    how: PhaseEnd
    summary: Mapping[str, Any] = field(default_factory=dict)


Listener = Callable[[PhaseEnding], None]


def _record(ending: PhaseEnding) -> None:
    prefix = ending.phase.title()
    ending.runtime.ledger.update_run(ending.event.correlation_id, {
        f"{prefix}Ended": ending.runtime.clock.utcnow(), f"{prefix}EndedHow": ending.how.value})


# Called in order for every phase that ends.
LISTENERS: list[Listener] = [_record]


def phase_ended(runtime: Runtime, event: MaintenanceEvent, phase: str, how: PhaseEnd,
                summary: Mapping[str, Any] | None = None) -> None:
    ending = PhaseEnding(runtime, event, phase, how, dict(summary or {}))
    log = run_logger(event.correlation_id)
    log.info("%s phase ended (%s): %s", phase, how.value, json.dumps(ending.summary, default=str, sort_keys=True))
    for listener in list(LISTENERS):
        try:
            listener(ending)
        except Exception as exc:  # one listener must not keep the others from hearing of the end
            log.warning("a run-end listener (%s) failed: %s: %s", getattr(listener, "__name__", listener),
                        type(exc).__name__, exc)
