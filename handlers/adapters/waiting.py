"""Waiting for many operations in one loop (see `handlers.adapters.operations`): each pending
operation's status URL is polled when due, honouring Retry-After; one whose outcome is uncertain
is read back (`Operation.check`) and, when it has not taken effect, sent again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from azure.core.exceptions import AzureError
from azure.core.pipeline import PipelineResponse
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
    about_operation,
    describe_error,
    done,
    result,
    uncertain,
)
from handlers.core import telemetry
from handlers.core.status import Outcome


class Sending(Protocol):
    """What the loop needs of the sender (`handlers.adapters.operations.Dispatch`)."""

    results: dict[str, OperationResult]
    pending: list[Pending]

    @property
    def busy(self) -> bool: ...
    def settle_done(self, *, wait: bool = False) -> None: ...
    def finish(self, operation: Operation, outcome: OperationResult) -> None: ...


def wait_for(
    clients: ClientFactory, sending: Sending, *, parallelism: int, deadline: datetime,
    log: logging.LoggerAdapter[Any], report: Callable[[], None], cancelled: Callable[[], bool],
) -> None:
    """Poll every pending operation until it ends or the deadline; what an ended operation's
    `then` sends joins the wait."""
    interval = clients.settings.poll_interval_seconds
    clock = clients.clock
    arm = clients.arm()
    pending, results = sending.pending, sending.results

    def advance(item: Pending) -> tuple[Pending, tuple[str, str]]:
        # The poll's span and log lines say which machine and action they are about.
        with telemetry.scope(resource_id=item.operation.resource_id, action=item.operation.action):
            return item, _advance(arm, item, interval, clock.now, log)

    # Threads start as polls need them (follow-ups may come later than the first requests).
    with telemetry.InvocationPool(max_workers=max(1, parallelism), thread_name_prefix="poll") as pool:
        while pending or sending.busy:
            if cancelled():
                return
            if clock.utcnow() >= deadline:
                sending.settle_done(wait=True)  # requests already on their way: their answers count
                for item in pending:
                    op = item.operation
                    last = f"; last error: {item.last_error}" if item.last_error else ""
                    detail = f"still running at the deadline {deadline.isoformat()}{last}"
                    log.warning("%s of %s still running at the deadline %s", op.action, op.resource_id,
                                deadline.isoformat(), extra=about_operation(op, Outcome.TIMED_OUT, detail))
                    results[op.key] = result(op, Outcome.TIMED_OUT, detail, item.sent_at, None)
                pending.clear()
                report()
                return
            sending.settle_done()
            now = clock.now()
            due = [item for item in pending if item.next_at <= now]
            if not due:
                soonest = min((item.next_at for item in pending), default=now + interval) - now
                # Follow-ups on their way out are settled at least every second.
                clock.sleep(min(soonest, interval, 1.0) if sending.busy else min(soonest, interval))
                continue
            ended: list[tuple[Pending, OperationResult]] = []
            for item, (state, detail) in pool.map(advance, due):
                op = item.operation
                if state == "succeeded":
                    ended.append((item, done(op, item.sent_at, clock.utcnow(), log)))
                elif state == "failed":
                    log.warning("%s failed for %s: %s", op.action, op.resource_id, detail,
                                extra=about_operation(op, Outcome.FAILED, detail))
                    ended.append((item, result(op, Outcome.FAILED, detail, item.sent_at, clock.utcnow())))
            gone = {id(item) for item, _ in ended}
            pending[:] = [item for item in pending if id(item) not in gone]
            for item, outcome in ended:
                sending.finish(item.operation, outcome)
            report()


def _advance(
    arm: Any, item: Pending, interval: float, now: Callable[[], float], log: logging.LoggerAdapter[Any]
) -> tuple[str, str]:
    """Poll one pending operation once: ("succeeded" | "failed" | "wait", detail). Schedules its
    next poll (item.next_at) when it waits."""
    op = item.operation
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


def follow(response: PipelineResponse[Any, Any]) -> tuple[str, str] | None:
    """Where to learn how an accepted request ends; None when it has ended already."""
    http = response.http_response
    headers = http.headers
    if headers.get("Azure-AsyncOperation"):
        return headers["Azure-AsyncOperation"], "async"
    if headers.get("Location") and http.status_code == 202:
        return headers["Location"], "location"
    if http.status_code in (200, 201):
        state = str((_json(http).get("properties") or {}).get("provisioningState") or "").lower()
        if state and state not in _TERMINAL_OK | _TERMINAL_FAILED:
            return str(http.request.url), "resource"
    return None


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json() if hasattr(response, "json") else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_text(body: dict[str, Any], status: int) -> str:
    error = body.get("error") or {}
    if isinstance(error, dict) and (error.get("code") or error.get("message")):
        prefix = f"{status} " if status >= 400 else ""
        return f"{prefix}{error.get('code') or 'Error'}: {error.get('message') or ''}".strip()
    return f"HTTP {status}"


def _header_seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def retry_after(response: PipelineResponse[Any, Any], default: float) -> float:
    return _header_seconds(response.http_response.headers.get("Retry-After")) or default


