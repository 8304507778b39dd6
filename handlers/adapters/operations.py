"""Running many Azure long-running operations at once, against a deadline.

Every request goes out (bounded parallelism) before any is waited on, so a fleet's time is the
slowest operation's, not the sum. Requests come as tasks: the operations of one task are sent
in order by one worker; tasks are taken in the order given, many at a time. Each subscription
has a lane of its own (its own workers): ARM throttles per subscription, and a subscription
whose requests wait (throttled by another caller, slow to answer) must not take the workers of
the others.

Waiting is one loop for all operations, not the SDK's poller per operation: a poller is a thread
that polls every interval, and a fleet of thousands would be thousands of threads and a stream of
reads that ARM throttles. The loop polls each operation's status URL (Azure-AsyncOperation, else
Location, else the resource itself) when it is due, honouring Retry-After, through the same ARM
pipeline (credential, retries, pacing). Each operation's failure is caught and returned as its
result; one can never stop the others.

An operation that can read its resource back (`check`: a VM's power state) is not failed when
its request's outcome is uncertain (a dropped connection, a 5xx or 409 after the retries, a
status that cannot be read): the resource's state decides. Reached: succeeded; on its way:
waited on; not started: the request is sent again (a few times; until the deadline for a
`persistent` operation, which also tries again after a definite failure: a restore keeps trying).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineResponse
from azure.core.rest import HttpRequest

from handlers.adapters.clients import ClientFactory
from handlers.ledger import subscription_of, utcnow

Progress = Callable[[str, int, int], None]  # (stage "sent" | "done", count so far, total)
_TERMINAL_OK = {"succeeded"}
_TERMINAL_FAILED = {"failed", "canceled", "cancelled"}
_MAX_POLL_ERRORS = 5
_MAX_RESENDS = 3  # a non-persistent operation whose request did not take effect is sent this often again
# What an operation's `check` says of its resource.
DONE, ON_ITS_WAY, NOT_STARTED, GONE, UNREADABLE = "done", "in-progress", "not-started", "gone", ""
# Send workers of all lanes together stay under this (a run over 50 subscriptions must not start
# 50 x MAINTENANCE_PARALLELISM threads); a lane keeps a few whatever the count. A subscription's
# writes are paced at 10/s after the burst: a few workers keep that pace.
MAX_SEND_WORKERS = 256
MIN_LANE_WORKERS = 4


def raw_response(pipeline_response: Any, deserialized: Any, headers: Any) -> PipelineResponse[Any, Any]:
    """`cls=` for SDK calls made with `polling=False`: hand back the initial response itself."""
    return pipeline_response


@dataclass(frozen=True)
class Operation:
    key: str  # unique among the operations of one call; results are keyed by it
    resource_id: str  # what the operation acts on, for logs and records
    action: str  # "start", "snapshot", "delete-snapshot", ...
    send: Callable[[], PipelineResponse[Any, Any]]  # sends the initial request, returns its response
    # Reads the resource back when the request's outcome is uncertain: DONE, ON_ITS_WAY, NOT_STARTED,
    # GONE (the resource no longer exists) or UNREADABLE; (state, detail). None: no way to tell, an
    # uncertain outcome is a failure.
    check: Callable[[], tuple[str, str]] | None = None
    persistent: bool = False  # after any failure, read back and send again until the deadline
    follow_only: bool = False  # sent by an earlier attempt and on its way: only read back until done


@dataclass(frozen=True)
class OperationResult:
    key: str
    resource_id: str
    action: str
    outcome: str  # "succeeded" | "failed" | "timed-out"
    detail: str
    sent_at: datetime | None
    finished_at: datetime | None


# operation, where to follow it (None: it has ended), when to poll it first (clock), when it was sent,
# an error ("": accepted)
_Sent = tuple[Operation, tuple[str, str] | None, float, datetime, str]


@dataclass
class _Pending:
    operation: Operation
    url: str
    kind: str  # "async" | "location" | "resource" | "check" (no URL: read the resource back)
    sent_at: datetime
    next_at: float
    errors: int = 0
    resends: int = 0
    last_error: str = ""


def run_operations(
    clients: ClientFactory,
    tasks: Iterable[Sequence[Operation]],
    *,
    parallelism: int,
    deadline: datetime,
    log: logging.LoggerAdapter[Any],
    progress: Progress | None = None,
    total: int | None = None,
    subscriptions: int | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, OperationResult]:
    """Send every task, then wait for all operations until `deadline`.

    `tasks` may be a generator that hands out tasks as they become ready to send (their ledger
    rows stored): each is sent as soon as it is given. Then `total` (the number of operations,
    for progress reports) and `subscriptions` (how many lanes, to size them) say what is coming.
    Each subscription's lane has `parallelism` workers, fewer when many subscriptions would
    take the process past MAX_SEND_WORKERS threads.

    An operation still running at the deadline is "timed-out": it continues in Azure, we just
    stop waiting for it. `progress`, when given, hears of every request sent and every result.
    `cancelled`, when it turns true, ends the waiting early (what is pending is left out).
    """
    if total is None or subscriptions is None:
        tasks = list(tasks)
        total = sum(len(task) for task in tasks)
        subscriptions = len({subscription_of(task[0].resource_id) for task in tasks if task})
    count = total
    lane_workers = max(1, min(parallelism, total, max(MIN_LANE_WORKERS, MAX_SEND_WORKERS // max(1, subscriptions))))
    report = progress or (lambda stage, done, of: None)
    interval = clients.settings.poll_interval_seconds
    results: dict[str, OperationResult] = {}
    pending: list[_Pending] = []

    def send(operation: Operation) -> _Sent:
        """Send one request; keep only what waiting needs (a fleet's responses would be megabytes)."""
        sent_at = utcnow()
        if operation.follow_only and operation.check is not None:
            return operation, ("", "check"), clients.clock.now(), sent_at, ""
        try:
            response = operation.send()
        except AzureError as exc:
            if operation.check is not None and (operation.persistent or uncertain(exc)):
                log.warning("%s of %s: outcome uncertain (%s); reading its state back", operation.action,
                            operation.resource_id, describe_error(exc))
                return operation, ("", "check"), clients.clock.now() + 1.0, sent_at, ""
            return operation, None, 0.0, sent_at, describe_error(exc)
        log.info("%s requested for %s", operation.action, operation.resource_id)
        return operation, _follow(response), clients.clock.now() + _retry_after(response, interval), sent_at, ""

    def send_task(task: Sequence[Operation]) -> list[_Sent]:
        return [send(operation) for operation in task]

    def settle(sent: list[_Sent]) -> None:
        for operation, follow, first_poll, sent_at, error in sent:
            if error:
                log.warning("%s failed for %s: %s", operation.action, operation.resource_id, error)
                results[operation.key] = _result(operation, "failed", error, sent_at, utcnow())
            elif follow is None:
                results[operation.key] = _done(operation, sent_at, log)
            else:
                url, kind = follow
                pending.append(_Pending(operation, url, kind, sent_at, first_poll))
        report("sent", len(pending) + len(results), count)

    in_flight: deque[Future[list[_Sent]]] = deque()
    with ExitStack() as lanes_open:
        lanes: dict[str, ThreadPoolExecutor] = {}
        for task in tasks:
            if not task:
                continue
            scope = subscription_of(task[0].resource_id)
            if scope not in lanes:
                lanes[scope] = lanes_open.enter_context(
                    ThreadPoolExecutor(max_workers=lane_workers, thread_name_prefix="send"))
            in_flight.append(lanes[scope].submit(send_task, task))
            while in_flight and in_flight[0].done():
                settle(in_flight.popleft().result())
        while in_flight:
            settle(in_flight.popleft().result())
    report("done", len(results), count)
    _wait(clients, pending, results, parallelism=parallelism, deadline=deadline, log=log,
          report=lambda: report("done", len(results), count), cancelled=cancelled or (lambda: False))
    return results


def _wait(
    clients: ClientFactory, pending: list[_Pending], results: dict[str, OperationResult], *, parallelism: int,
    deadline: datetime, log: logging.LoggerAdapter[Any], report: Callable[[], None], cancelled: Callable[[], bool],
) -> None:
    interval = clients.settings.poll_interval_seconds
    clock = clients.clock
    arm = clients.arm()
    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(pending))), thread_name_prefix="poll") as pool:
        while pending:
            if cancelled():
                return
            if utcnow() >= deadline:
                for item in pending:
                    op = item.operation
                    log.warning("%s of %s still running at the deadline %s", op.action, op.resource_id,
                                deadline.isoformat())
                    last = f"; last error: {item.last_error}" if item.last_error else ""
                    results[op.key] = _result(op, "timed-out",
                                              f"still running at the deadline {deadline.isoformat()}{last}",
                                              item.sent_at, None)
                report()
                return
            now = clock.now()
            due = [item for item in pending if item.next_at <= now]
            if not due:
                clock.sleep(min(min(item.next_at for item in pending) - now, interval))
                continue
            for item, (state, detail) in pool.map(lambda i: (i, _advance(arm, i, interval, clock.now, log)), due):
                op = item.operation
                if state == "succeeded":
                    results[op.key] = _done(op, item.sent_at, log)
                elif state == "failed":
                    log.warning("%s failed for %s: %s", op.action, op.resource_id, detail)
                    results[op.key] = _result(op, "failed", detail, item.sent_at, utcnow())
            pending[:] = [item for item in pending if item.operation.key not in results]
            report()


def _advance(
    arm: Any, item: _Pending, interval: float, now: Callable[[], float], log: logging.LoggerAdapter[Any]
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


def _check(item: _Pending, interval: float, now: Callable[[], float],
           log: logging.LoggerAdapter[Any]) -> tuple[str, str]:
    """Read the resource back and decide: reached, on its way, or send the request again."""
    op = item.operation
    assert op.check is not None
    state, detail = op.check()
    if state == DONE:
        return "succeeded", ""
    if state == GONE:
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
        follow = _follow(response)
        if follow is None:
            return "succeeded", ""
        item.url, item.kind = follow
        item.next_at = now() + _retry_after(response, interval)
        return "wait", ""
    item.errors += 1
    item.last_error = detail or item.last_error
    if not op.persistent and item.errors >= _MAX_POLL_ERRORS:
        return "failed", f"outcome unknown: {item.last_error or 'the state could not be read'}"
    item.next_at = now() + interval
    return "wait", ""


def uncertain(exc: AzureError) -> bool:
    """Whether a failed request may still have taken effect, or may succeed when sent again: a
    connection that dropped or never opened, a timeout, a server error, a conflict with an
    operation in flight. A definite refusal (400, 403, 404...) is not."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return True
    if isinstance(exc, HttpResponseError):
        return exc.status_code is None or exc.status_code >= 500 or exc.status_code in (408, 409, 429)
    return True


def _poll(arm: Any, item: _Pending) -> tuple[str, float | None, str]:
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


def _follow(response: PipelineResponse[Any, Any]) -> tuple[str, str] | None:
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


def _done(operation: Operation, sent_at: datetime, log: logging.LoggerAdapter[Any]) -> OperationResult:
    log.info("%s succeeded for %s", operation.action, operation.resource_id)
    return _result(operation, "succeeded", "", sent_at, utcnow())


def _result(
    operation: Operation, outcome: str, detail: str, sent_at: datetime | None, finished_at: datetime | None
) -> OperationResult:
    return OperationResult(operation.key, operation.resource_id, operation.action, outcome, detail, sent_at,
                           finished_at)


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


def _retry_after(response: PipelineResponse[Any, Any], default: float) -> float:
    return _header_seconds(response.http_response.headers.get("Retry-After")) or default


def describe_error(exc: AzureError) -> str:
    """'409 OperationNotAllowed: message' — the parts an operator needs, nothing secret."""
    if isinstance(exc, HttpResponseError):
        code = exc.error.code if exc.error is not None else None
        message = exc.error.message if exc.error is not None else exc.message
        # A failed long-running operation arrives on a 200 poll: only an HTTP error status says more.
        status = f"{exc.status_code} " if exc.status_code and exc.status_code >= 400 else ""
        return f"{status}{code or type(exc).__name__}: {message}"
    return f"{type(exc).__name__}: {exc.message}"
