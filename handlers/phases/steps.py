"""Steps: what a phase is made of, and the one loop that runs them.

A phase is a list of named steps (`handlers.phases.pre.STEPS`, `handlers.phases.post.STEPS`).
Each step says what it needs and what it does, so that the loop here decides, once for every
step, what the steps themselves never branch on:

- **dry run**: a step that `changes` anything in Azure (or queues work that would) runs its
  `preview` instead (what it would do, logged and recorded), or nothing;
- **where it runs**: `scopes` says for which kind of work message a step runs (the whole phase in
  one worker, a group of subscriptions of a split pre phase, the verdict of a split pre phase);
- **failure**: an `essential` step's failure fails the invocation (the message is retried); any
  other step's failure is recorded on the run (`StepErrors`) and the steps after it still run;
- **queue steps**: a step that begins `in_new_message` runs in an invocation of its own: the loop
  hands the rest of the phase to a work message that resumes there, so no invocation has to hold
  one step's long wait and the next one's too. A step that runs out of its invocation's time
  raises `ContinueLater` to be resumed the same way;
- **steps beside**: a step marked `beside` runs in a thread of its own while the steps after it
  go on: they start once it calls `run.go_on()` (say, when its requests are out and only its
  waiting is left) or ends. A later step that names it in `waits_for` starts once it has ended,
  and every one has ended before the invocation does. A step beside shares the run's summary and
  state, so it writes only what is its own (its ledger columns, its summary keys) and cannot end
  the phase. When steps hand over (`ContinueLater`), the phase resumes at the earliest of them,
  and the message lists the steps after it that finished here (`done`), which are not run again;
- **telemetry**: each step runs in a span named after it, whose attributes say the run, phase,
  step and how it ended (`StepOutcome`); the step's log lines and the spans of its Azure calls
  carry the same (`handlers.core.telemetry`).

Adding a step is one new module with its function(s) and one `Step(...)` line in the phase's list.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from azure.core.exceptions import AzureError

from handlers.adapters.operations import describe_error
from handlers.core import telemetry
from handlers.core.events import MaintenanceEvent
from handlers.core.logs import RunLogger
from handlers.core.work import WorkMessage
from handlers.ledger import LeaseLostError
from handlers.phases.signals import ContinueLater, DeferredError
from handlers.runtime import Runtime

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from handlers.phases.claims import Heartbeat

S = TypeVar("S")


class Scope(StrEnum):
    """The kinds of work a step runs in."""

    WHOLE = "whole"  # the phase in one worker (a post phase; a pre phase that is not split)
    GROUP = "group"  # one group of subscriptions of a split pre phase
    VERDICT = "verdict"  # the verdict of a split pre phase, or the fallback for the deadline


EVERYWHERE = frozenset(Scope)


class StepOutcome(StrEnum):
    """How a step ended (its span's `maintenance.outcome`)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # a dry run, and the step changes resources
    PREVIEWED = "previewed"  # a dry run ran its preview
    ENDED_PHASE = "ended the phase"  # and why (`Ended`)
    HANDED_OVER = "handed over"  # to another invocation (or another worker took the phase over)


class Ended(StrEnum):
    """Why a step ended its phase before the steps after it."""

    LATE = "late"  # the pre event came too late to act on
    EMPTY = "empty"  # the run has no machines
    DISPATCHED = "dispatched"  # split into messages of its own; their verdict ends it
    GAVE_UP = "gave-up"  # the post phase stopped waiting for the pre phase


@dataclass(frozen=True)
class Step(Generic[S]):
    name: str
    phase: str  # "pre" | "post"
    run: Callable[[PhaseRun[S]], None]
    summary: str  # one line for the README and the logs: what it does
    preview: Callable[[PhaseRun[S]], None] | None = None  # what a dry run does instead
    changes: bool = False  # changes Azure resources (or queues work that does)
    settings: tuple[str, ...] = ()  # app settings it reads
    permissions: tuple[str, ...] = ()  # Azure operations it calls
    records: tuple[str, ...] = ()  # what it writes in the ledger
    essential: bool = True
    scopes: frozenset[Scope] = EVERYWHERE
    in_new_message: bool = False
    beside: bool = False  # runs in a thread beside the steps after it (the module docstring)
    waits_for: tuple[str, ...] = ()  # steps beside that must have ended before this one starts


def _nothing() -> None:
    return None


@dataclass
class PhaseRun(Generic[S]):
    """One invocation's run of a phase's steps: what every step reads, and `state`, what the
    phase's steps hand each other."""

    runtime: Runtime
    work: WorkMessage
    log: RunLogger
    scope: Scope
    state: S
    invocation_end: datetime  # no step waits past this (functionTimeout, less a margin)
    beat: Heartbeat | None = None  # the claim's heartbeat (None outside a claim: a rehearsal)
    summary: dict[str, Any] = field(default_factory=dict)
    ended: Ended | None = None  # set by a step that ends the phase here
    failures: dict[str, str] = field(default_factory=dict)  # step -> error, for the non-essential ones
    # Held while a failure is recorded: steps beside fail at the same moment, and the last write wins.
    failures_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # A step beside calls this when the steps after it may start (a no-op for the others).
    go_on: Callable[[], None] = field(default=_nothing, repr=False)

    @property
    def event(self) -> MaintenanceEvent:
        return self.work.event

    @property
    def dry_run(self) -> bool:
        return self.runtime.settings.dry_run

    def stopped(self) -> bool:
        """True once another worker has taken this phase over: send nothing more."""
        return self.beat is not None and self.beat.lost

    def end(self, reason: Ended, **summary: Any) -> None:
        """End the phase after this step (the steps after it do not run)."""
        self.ended = reason
        self.summary.update(summary)


def run_steps(steps: Sequence[Step[S]], run: PhaseRun[S], *, resume: str = "", done: Sequence[str] = ()) -> None:
    """Run the steps for `run.scope`, in order, from `resume` (a step's name) when given, leaving
    out those in `done` (they finished in an earlier invocation)."""
    chosen = [step for step in steps if run.scope in step.scopes]
    names = [step.name for step in chosen]
    for what, name in (("resumes at", resume), *(("lists as done", n) for n in done)):
        if name and name not in names:
            raise ValueError(f"work message {what} step {name!r}, which the {chosen[0].phase} phase does not have")
    start = names.index(resume) if resume else 0
    beside = _Beside(run)
    handed: list[ContinueLater] = []
    try:
        for index, step in enumerate(chosen[start:], start):
            if run.ended:
                break
            if step.name in done:
                continue
            if step.in_new_message and index > start:
                raise ContinueLater(step.name, f"{step.name} runs in an invocation of its own")
            _raise_first(beside.join(step.waits_for), names)
            if step.beside:
                beside.start(step)
                continue
            with telemetry.step_span(step.name, phase=step.phase) as span:
                span.set_attribute(telemetry.OUTCOME, _run_step(step, run, span))
            beside.finished.append(step.name)
    except ContinueLater as later:
        handed.append(later)
    finally:
        # Nothing beside outlives the loop (on a failure too: it uses this invocation's clients).
        errors = beside.join(names)
    _raise_first([*errors, *handed], names, finished=[*done, *beside.finished])


def _raise_first(errors: Sequence[BaseException], names: list[str], *, finished: Sequence[str] = ()) -> None:
    """Raise a failure among `errors` if there is one; else hand the phase over at the earliest of
    the steps that handed over, with the steps after it that `finished` here."""
    for error in errors:
        if not isinstance(error, ContinueLater):
            raise error
    handed = [error for error in errors if isinstance(error, ContinueLater)]
    if handed:
        first = min(handed, key=lambda later: names.index(later.step))
        after = names.index(first.step)
        raise ContinueLater(first.step, str(first), done=tuple(
            name for name in names[after + 1:] if name in finished or name in first.done))


class _Beside:
    """The steps running beside the others in this invocation."""

    def __init__(self, run: PhaseRun[Any]) -> None:
        self.run = run
        self.running: dict[str, Future[None]] = {}
        self.finished: list[str] = []  # the steps that ended here (not handed over), in order
        self._pool: telemetry.InvocationPool | None = None

    def start(self, step: Step[Any]) -> None:
        """Run `step` in a thread; return once it says the steps after it may start, or ends."""
        may_go_on = threading.Event()
        view = replace(self.run, go_on=may_go_on.set)

        def body() -> None:
            try:
                with telemetry.step_span(step.name, phase=step.phase) as span:
                    span.set_attribute(telemetry.OUTCOME, _run_step(step, view, span))
                self.finished.append(step.name)
            finally:
                may_go_on.set()

        if self._pool is None:
            self._pool = telemetry.InvocationPool(max_workers=4, thread_name_prefix="beside")
        self.running[step.name] = self._pool.submit(body)
        may_go_on.wait()

    def join(self, names: Sequence[str]) -> list[BaseException]:
        """Wait for those of `names` running beside; what they raised (handing over included)."""
        futures = [self.running.pop(name) for name in names if name in self.running]
        errors = [error for error in (future.exception() for future in futures) if error is not None]
        if not self.running and self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return errors


def _run_step(step: Step[S], run: PhaseRun[S], span: Span) -> str:
    """Run one step (or its preview, in a dry run); how it ended, for its span."""
    action = step.run
    if run.dry_run and step.changes:
        if step.preview is None:
            run.log.info("dry run: step %s skipped (it changes resources)", step.name)
            return StepOutcome.SKIPPED.value
        action = step.preview
    try:
        action(run)
    except (LeaseLostError, ContinueLater, DeferredError) as exc:
        # Not failures: the phase goes on in another invocation (or another worker has it).
        span.set_attribute(telemetry.OUTCOME, StepOutcome.HANDED_OVER.value)
        span.set_attribute(telemetry.REASON, f"{type(exc).__name__}: {exc}")
        raise
    except Exception as exc:
        telemetry.failed(span, exc)
        span.set_attribute(telemetry.OUTCOME, StepOutcome.FAILED.value)
        if step.essential:
            raise
        _record_failure(run, step, exc)
        return StepOutcome.FAILED.value
    if run.ended:
        return f"{StepOutcome.ENDED_PHASE.value}: {run.ended.value}"
    return (StepOutcome.PREVIEWED if action is step.preview else StepOutcome.SUCCEEDED).value


NO_INVOCATION_END = datetime.max.replace(tzinfo=UTC)


def invocation_end(runtime: Runtime) -> datetime:
    """When this invocation's steps stop waiting: its functionTimeout less a margin from now."""
    return runtime.clock.utcnow() + timedelta(seconds=runtime.settings.invocation_budget_seconds)


def _record_failure(run: PhaseRun[Any], step: Step[Any], exc: Exception) -> None:
    detail = describe_error(exc) if isinstance(exc, AzureError) else f"{type(exc).__name__}: {exc}"
    run.log.warning("step %s failed (recorded; the steps after it still run): %s", step.name, detail)
    with run.failures_lock:  # the write under the lock too: the row holds every failure, in order
        run.failures[step.name] = detail
        run.summary.setdefault("failed_steps", {})[step.name] = detail
        failures = json.dumps(run.failures, sort_keys=True)
        run.runtime.ledger.update_run(run.event.correlation_id, {"StepErrors": failures})

