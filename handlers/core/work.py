"""Work messages: what the event functions and the worker put on the work queue, in one format.

A message names a run's event and one step of its work: the whole phase (``phase``, what a pre or
post event queues), a group of subscriptions of a split pre phase (``lanes``), or the pre phase's
verdict (``verdict``, queued by the last group and, as a fallback, for the deadline). Each step
owns one ledger phase row that the worker claims. Counters travel with the message: how often a
post was deferred for its pre phase, and how often a retried message waited for a lease to end.
A phase that goes on in another invocation (`handlers.phases.steps`) says at which step it
resumes (``resume``), which steps after it finished already (``done``: steps that ran beside
others) and how many invocations it has had (``rounds``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from azure.storage.queue import QueueClient

from handlers.core.errors import InvalidEventError
from handlers.core.events import EventKind, MaintenanceEvent, parse_event
from handlers.core.reading import load_json

WORK_MESSAGE_VERSION = 1
LANE_PHASE_PREFIX = "pre-lane-"
VERDICT_PHASE = "pre-verdict"
# Storage queue messages stay invisible for at most 7 days.
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600 - 60
_MAX_BODY = 64 * 1024  # a Storage queue message
_STEP_NAME = re.compile(r"[a-z][a-z-]{0,39}")
_MAX_DONE = 32  # steps a message may list as done (a phase has fewer)


class Step(StrEnum):
    PHASE = "phase"
    LANES = "lanes"
    VERDICT = "verdict"


def lane_phase(lanes: list[str] | tuple[str, ...]) -> str:
    """The ledger phase of a group of lanes (subscriptions, lower-case)."""
    return LANE_PHASE_PREFIX + hashlib.sha256("|".join(sorted(lanes)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class WorkMessage:
    event: MaintenanceEvent
    step: Step = Step.PHASE
    lanes: tuple[str, ...] = field(default=())
    deferrals: int = 0  # times a post phase waited for its pre phase
    takeovers: int = 0  # times this work waited for another worker's lease to end
    resume: str = ""  # the step of the phase this message resumes at ("": the first)
    rounds: int = 0  # invocations the phase had before this one's (continued phases)
    done: tuple[str, ...] = ()  # steps after `resume` that finished in an earlier invocation

    @property
    def ledger_phase(self) -> str:
        """The phase row this message's worker claims."""
        if self.step is Step.LANES:
            return lane_phase(self.lanes)
        if self.step is Step.VERDICT:
            return VERDICT_PHASE
        return self.event.kind.value

    def describe(self) -> str:
        if self.step is Step.LANES:
            return f"subscription(s) {', '.join(self.lanes)}"
        if self.step is Step.VERDICT:
            return "the verdict"
        return f"{self.event.kind.value} phase"

    def to_json(self) -> str:
        body: dict[str, Any] = {"version": WORK_MESSAGE_VERSION, "phase": self.event.kind.value,
                                "event": self.event.to_dict()}
        if self.step is not Step.PHASE:
            body["step"] = self.step.value
        if self.lanes:
            body["lanes"] = list(self.lanes)
        if self.deferrals:
            body["deferrals"] = self.deferrals
        if self.takeovers:
            body["takeovers"] = self.takeovers
        if self.resume:
            body["resume"] = self.resume
            body["rounds"] = self.rounds
        if self.done:
            body["done"] = list(self.done)
        return json.dumps(body)

    @classmethod
    def parse(cls, body: bytes | str) -> WorkMessage:
        """Read a message; InvalidEventError (naming the field) for anything we cannot act on."""
        if isinstance(body, bytes | bytearray):
            try:
                body = bytes(body).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidEventError("message", "is not UTF-8 text") from None
        if len(body) > _MAX_BODY:
            raise InvalidEventError("message", f"is {len(body)} characters; a queue message holds 64 KiB")
        message = load_json(body, "message")
        if not isinstance(message, dict) or message.get("version") != WORK_MESSAGE_VERSION:
            raise InvalidEventError("message.version", f"expected {WORK_MESSAGE_VERSION}")
        event = parse_event(message.get("event") or {})
        try:
            step = Step(message.get("step") or Step.PHASE.value)
        except ValueError:
            raise InvalidEventError("message.step", f"{message.get('step')!r} is not phase, lanes or verdict") from None
        lanes = message.get("lanes") or []
        if not isinstance(lanes, list) or not all(isinstance(lane, str) for lane in lanes):
            raise InvalidEventError("message.lanes", "must be a list of subscription ids")
        if step is not Step.PHASE and event.kind is not EventKind.PRE:
            raise InvalidEventError("message.step", f"{step.value} is a step of the pre phase only")
        if step is Step.LANES and not lanes:
            raise InvalidEventError("message.lanes", "a lanes step needs its list of subscriptions")
        unknown = [lane for lane in lanes if lane.lower() not in event.subscription_ids]
        if unknown:
            raise InvalidEventError("message.lanes", f"{unknown[0]!r} is not a subscription of the event")
        resume = message.get("resume") or ""
        if not isinstance(resume, str) or (resume and not _STEP_NAME.fullmatch(resume)):
            raise InvalidEventError("message.resume", "must be a step name (lower-case letters and hyphens)")
        done = message.get("done") or []
        if not isinstance(done, list) or len(done) > _MAX_DONE or not all(
                isinstance(name, str) and _STEP_NAME.fullmatch(name) for name in done):
            raise InvalidEventError("message.done", f"must be a list of at most {_MAX_DONE} step names "
                                    "(lower-case letters and hyphens)")
        if done and not resume:
            raise InvalidEventError("message.done", "lists steps done after the step it resumes at: needs resume")
        return cls(event, step, tuple(lane.lower() for lane in lanes), _count(message, "deferrals"),
                   _count(message, "takeovers"), resume, _count(message, "rounds"), tuple(done))


def send_work(queue: QueueClient, message: WorkMessage, *, delay_seconds: float = 0) -> None:
    """Queue `message`, invisible for `delay_seconds` (capped at the queue's 7 days)."""
    delay = int(min(max(0.0, delay_seconds), MAX_VISIBILITY_SECONDS))
    queue.send_message(message.to_json(), visibility_timeout=delay or None)


def _count(message: dict[str, Any], key: str) -> int:
    value = message.get(key) or 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10_000:
        raise InvalidEventError(f"message.{key}", "must be a whole number 0..10000")
    return value
