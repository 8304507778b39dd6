"""Waiting for many operations in one loop (see `handlers.adapters.operations`): each pending
operation's status URL is polled when due, honouring Retry-After; one whose outcome is uncertain
is read back (`Operation.check`) and, when it has not taken effect, sent again."""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as futures_wait
from datetime import datetime
from typing import Any, Protocol

from azure.core.exceptions import AzureError
from azure.core.rest import HttpRequest

from handlers.adapters.clients import ClientFactory
from handlers.adapters.operation import (
    _MAX_POLL_ERRORS,
    _MAX_RESENDS,
    _TERMINAL_FAILED,
    _TERMINAL_OK,
    DONE,
    ENDED_FAILED,
    GONE,
    NOT_STARTED,
    ON_ITS_WAY,
    Operation,
    OperationResult,
    Pending,
    _header_seconds,
    _json,
    about_operation,
    describe_error,
    done,
    follow,
    result,
    retry_after,
    uncertain,
)
from handlers.core import telemetry
from handlers.core.ids import subscription_of
from handlers.core.status import Outcome


class Sending(Protocol):
    """What the loop needs of the sender (`handlers.adapters.operations.Dispatch`)."""

    results: dict[str, OperationResult]
    pending: list[Pending]

    @property
    def busy(self) -> bool: ...
    def settle_done(self, *, wait: bool = False) -> None: ...
    def finish(self, operation: Operation, outcome: OperationResult) -> None: ...


class Poller:
    """Polls each pending operation when it is due, `parallelism` at a time, and takes each
    answer as it comes (not a whole round at once), so an operation is noticed soon after it ends
    however many others are being polled. `step()` does what is due without waiting, between the
    sends of a fleet; `wait()` is the loop once everything is sent. Used from the one thread that
    also sends (`handlers.adapters.operations.Dispatch`); only the polls leave it."""

    def __init__(self, clients: ClientFactory, sending: Sending, pool: telemetry.InvocationPool, *,
                 parallelism: int, log: logging.LoggerAdapter[Any], report: Callable[[], None]) -> None:
        self.clients, self.sending, self.pool, self.log, self.report = clients, sending, pool, log, report
        self.limit = max(1, parallelism)
        self.interval = clients.settings.poll_interval_seconds
        self.arm = clients.arm()
        self.polling: dict[Future[tuple[str, str]], Pending] = {}
        self._due: dict[str, deque[Pending]] = {}  # per subscription
        self._flying: Counter[str] = Counter()  # polls in flight per subscription
        self._next_scan = 0.0

    def step(self) -> None:
        """Take the answers in hand and send the polls that are due; never waits."""
        self._collect(block=False)
        self._launch()

    def wait(self, *, deadline: datetime, cancelled: Callable[[], bool],
             sent: Callable[[], None] | None = None) -> None:
        """Poll every pending operation until it ends or the deadline; what an ended operation's
        `then` sends joins the wait. `sent` is called once every request given so far has been
        answered (follow-ups sent later do not wait for it), or when the wait ends."""
        untold = [sent] if sent is not None else []

        def tell() -> None:  # once
            while untold:
                untold.pop()()
        try:
            self._wait(deadline, cancelled, tell)
        finally:
            tell()

    def _wait(self, deadline: datetime, cancelled: Callable[[], bool], sent: Callable[[], None]) -> None:
        clock, sending = self.clients.clock, self.sending
        while sending.pending or sending.busy:
            if cancelled():
                return
            if clock.utcnow() >= deadline:
                self._time_out(deadline)
                return
            sending.settle_done()
            if not sending.busy:
                sent()
            self._launch()
            if self.polling:
                self._collect(block=True)
                continue
            self._next_scan = 0.0  # nothing in flight: look at every pending operation now
            self._launch()
            if self.polling:
                continue
            now = clock.now()
            soonest = min((item.next_at for item in sending.pending), default=now + self.interval) - now
            # Follow-ups on their way out are settled at least every second.
            clock.sleep(min(soonest, self.interval, 1.0) if sending.busy else min(soonest, self.interval))

    def _launch(self) -> None:
        """Send the polls that are due, up to the limit in flight, the subscriptions in turn and
        each at most its share of the limit: a poll waits for its subscription's read bucket in
        the thread that sends it, so one subscription's polls must not hold every thread while the
        others' are due. Pending operations are scanned once per simulated second."""
        now, due, flying = self.clients.clock.now(), self._due, self._flying
        if now >= self._next_scan:  # every second: a subscription's due polls must not wait on another's
            self._next_scan = now + 1.0
            known = {id(item) for item in self.polling.values()} | {id(item) for q in due.values() for item in q}
            for item in self.sending.pending:
                if item.next_at <= now and id(item) not in known:
                    due.setdefault(subscription_of(item.operation.resource_id), deque()).append(item)
        share = max(1, self.limit // max(1, sum(1 for s, queue in due.items() if queue or flying[s])))
        while ready := [s for s, queue in due.items() if queue and flying[s] < share]:
            for scope in ready:
                if len(self.polling) >= self.limit:
                    return
                flying[scope] += 1
                item = due[scope].popleft()
                self.polling[self.pool.submit(self._advance, item)] = item

    def _advance(self, item: Pending) -> tuple[str, str]:
        # The poll's span and log lines say which machine and action they are about.
        with telemetry.scope(resource_id=item.operation.resource_id, action=item.operation.action):
            return _advance(self.arm, item, self.interval, self.clients.clock.now, self.log)

    def _collect(self, *, block: bool) -> None:
        if not self.polling:
            return
        answered, _ = futures_wait(list(self.polling), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        clock, log = self.clients.clock, self.log
        ended: list[tuple[Pending, OperationResult]] = []
        for future in answered:
            item = self.polling.pop(future)
            self._flying[subscription_of(item.operation.resource_id)] -= 1
            state, detail = future.result()
            op = item.operation
            if state == "succeeded":
                ended.append((item, done(op, item.sent_at, clock.utcnow(), log)))
            elif state == "failed":
                log.warning("%s failed for %s: %s", op.action, op.resource_id, detail,
                            extra=about_operation(op, Outcome.FAILED, detail))
                ended.append((item, result(op, Outcome.FAILED, detail, item.sent_at, clock.utcnow())))
        if not ended:
            return
        gone = {id(item) for item, _ in ended}
        self.sending.pending[:] = [item for item in self.sending.pending if id(item) not in gone]
        for item, outcome in ended:
            self.sending.finish(item.operation, outcome)
        self.report()

    def _time_out(self, deadline: datetime) -> None:
        self.sending.settle_done(wait=True)  # requests already on their way: their answers count
        self._due.clear()
        while self.polling:
            self._collect(block=True)  # so do the polls
        results = self.sending.results
        for item in self.sending.pending:
            op = item.operation
            last = f"; last error: {item.last_error}" if item.last_error else ""
            detail = f"still running at the deadline {deadline.isoformat()}{last}"
            self.log.warning("%s of %s still running at the deadline %s", op.action, op.resource_id,
                             deadline.isoformat(), extra=about_operation(op, Outcome.TIMED_OUT, detail))
            results[op.key] = result(op, Outcome.TIMED_OUT, detail, item.sent_at, None)
        self.sending.pending.clear()
        self.report()


def _advance(
    arm: Any, item: Pending, interval: float, now: Callable[[], float], log: logging.LoggerAdapter[Any]
) -> tuple[str, str]:
    """Poll one pending operation once: ("succeeded" | "failed" | "wait", detail). Schedules its
    next poll (item.next_at) when it waits: `interval` after, unless the operation says otherwise."""
    op, interval = item.operation, item.operation.poll_every or interval
    if item.kind == "check":
        return _check(item, interval, now, log)
    state, retry_after, detail = _poll(arm, item)
    if state == "succeeded":
        return "succeeded", ""
    if state == "failed":
        if op.persistent and op.check is not None:
            log.warning("%s of %s failed (%s); reading its state back to try again", op.action, op.resource_id,
                        detail)
            item.kind, item.last_error, item.next_at = "check", detail, now() + interval
            return "wait", ""
        return "failed", detail
    item.errors = item.errors + 1 if state == "error" else 0
    if item.errors >= _MAX_POLL_ERRORS:
        if op.check is None:
            return "failed", f"status unreadable: {detail}"
        item.kind, item.errors, item.last_error = "check", 0, detail
    item.next_at = now() + max(retry_after or 0.0, interval)
    return "wait", ""


def _check(item: Pending, interval: float, now: Callable[[], float],
           log: logging.LoggerAdapter[Any]) -> tuple[str, str]:
    """Read the resource back and decide: reached, on its way, or send the request again."""
    op = item.operation
    if op.check is None:  # an operation is only ever put into "check" when it has one
        raise RuntimeError(f"{op.action} of {op.resource_id} is waiting on a read-back it does not have")
    state, detail = op.check()
    if state == DONE:
        return "succeeded", ""
    if state in (GONE, ENDED_FAILED):
        return "failed", detail
    if state == ON_ITS_WAY:
        item.errors, item.next_at = 0, now() + interval
        return "wait", ""
    if state == NOT_STARTED:
        if not op.persistent and item.resends >= _MAX_RESENDS:
            return "failed", f"{op.action} did not take effect after {item.resends + 1} requests: {item.last_error}"
        item.resends += 1
        log.info("%s of %s has not taken effect (%s): sending it again", op.action, op.resource_id, detail)
        try:
            response = op.send()
        except AzureError as exc:
            item.last_error = describe_error(exc)
            if not op.persistent and not uncertain(exc):
                return "failed", item.last_error
            item.next_at = now() + min(interval * 2 ** item.resends, 120.0)
            return "wait", ""
        followed = follow(response)
        if followed is None:
            return "succeeded", ""
        item.url, item.kind = followed
        item.next_at = now() + retry_after(response, interval)
        return "wait", ""
    item.errors += 1
    item.last_error = detail or item.last_error
    if not op.persistent and item.errors >= _MAX_POLL_ERRORS:
        return "failed", f"outcome unknown: {item.last_error or 'the state could not be read'}"
    item.next_at = now() + interval
    return "wait", ""


def _poll(arm: Any, item: Pending) -> tuple[str, float | None, str]:
    """(state, retry-after, detail): state is succeeded | failed | running | error."""
    try:
        response = arm.send_request(HttpRequest("GET", item.url))
    except AzureError as exc:
        return "error", None, describe_error(exc)
    retry_after = _header_seconds(response.headers.get("Retry-After"))
    body = _json(response)
    if item.kind == "location":
        if response.status_code == 202:
            return "running", retry_after, ""
        if response.status_code in (200, 201, 204):
            return "succeeded", None, ""
        return "failed", None, _error_text(body, response.status_code)
    if response.status_code >= 400:
        return "error", retry_after, _error_text(body, response.status_code)
    if item.kind == "async":
        status = str(body.get("status") or "").lower()
    else:
        status = str((body.get("properties") or {}).get("provisioningState") or "").lower()
    if status in _TERMINAL_OK:
        return "succeeded", None, ""
    if status in _TERMINAL_FAILED:
        return "failed", None, _error_text(body, response.status_code)
    return "running", retry_after, ""


def _error_text(body: dict[str, Any], status: int) -> str:
    error = body.get("error") or {}
    if isinstance(error, dict) and (error.get("code") or error.get("message")):
        prefix = f"{status} " if status >= 400 else ""
        return f"{prefix}{error.get('code') or 'Error'}: {error.get('message') or ''}".strip()
    return f"HTTP {status}"
