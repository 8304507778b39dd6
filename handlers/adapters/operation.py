"""One Azure operation as the toolkit sends and follows it, and what became of it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineResponse

from handlers.core.status import Outcome
from handlers.core.telemetry import about

Progress = Callable[[str, int, int], None]  # (stage "sent" | "done", count so far, total)
_TERMINAL_OK = {"succeeded"}
_TERMINAL_FAILED = {"failed", "canceled", "cancelled"}
_MAX_POLL_ERRORS = 5
_MAX_RESENDS = 3  # a non-persistent operation whose request did not take effect is sent this often again
# What an operation's `check` says of its resource.
DONE, ON_ITS_WAY, NOT_STARTED, GONE, UNREADABLE = "done", "in-progress", "not-started", "gone", ""
ENDED_FAILED = "ended-failed"  # it ran and ended without success (a script's non-zero exit)
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
    # Its end is read from `check` (a run command's instance view), not from the request's status:
    # the request is accepted as soon as the work begins.
    ends_by_check: bool = False
    # What to send once it has ended (its result given): the next step of a machine's chain, or
    # the next wave. Called in the waiting loop's thread; the tasks returned are sent at once.
    then: Callable[[OperationResult], list[list[Operation]]] | None = None
    # Seconds between its status polls (0: MAINTENANCE_POLL_INTERVAL_SECONDS), for an operation
    # whose end nobody waits on closely: its polls leave ARM's read budget to the others.
    poll_every: float = 0.0


@dataclass(frozen=True)
class OperationResult:
    key: str
    resource_id: str
    action: str
    outcome: str  # "succeeded" | "failed" | "timed-out"
    detail: str
    sent_at: datetime | None
    finished_at: datetime | None


@dataclass
class Pending:
    operation: Operation
    url: str
    kind: str  # "async" | "location" | "resource" | "check" (no URL: read the resource back)
    sent_at: datetime
    next_at: float
    errors: int = 0
    resends: int = 0
    last_error: str = ""


def done(operation: Operation, sent_at: datetime, finished: datetime,
         log: logging.LoggerAdapter[Any]) -> OperationResult:
    log.info("%s succeeded for %s", operation.action, operation.resource_id,
             extra=about_operation(operation, Outcome.SUCCEEDED))
    return result(operation, Outcome.SUCCEEDED, "", sent_at, finished)


def about_operation(operation: Operation, outcome: str | None = None, reason: str = "") -> dict[str, str]:
    """The telemetry attributes of a log line about `operation` (and how it ended)."""
    return about(resource_id=operation.resource_id, action=operation.action, outcome=outcome, reason=reason)


def result(
    operation: Operation, outcome: str, detail: str, sent_at: datetime | None, finished_at: datetime | None
) -> OperationResult:
    return OperationResult(operation.key, operation.resource_id, operation.action, outcome, detail, sent_at,
                           finished_at)


def uncertain(exc: AzureError) -> bool:
    """Whether a failed request may still have taken effect, or may succeed when sent again: a
    connection that dropped or never opened, a timeout, a server error, a conflict with an
    operation in flight. A definite refusal (400, 403, 404...) is not."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return True
    if isinstance(exc, HttpResponseError):
        return exc.status_code is None or exc.status_code >= 500 or exc.status_code in (408, 409, 429)
    return True


def describe_error(exc: AzureError) -> str:
    """'409 OperationNotAllowed: message' — the parts an operator needs, nothing secret."""
    if isinstance(exc, HttpResponseError):
        code = exc.error.code if exc.error is not None else None
        message = exc.error.message if exc.error is not None else exc.message
        # A failed long-running operation arrives on a 200 poll: only an HTTP error status says more.
        status = f"{exc.status_code} " if exc.status_code and exc.status_code >= 400 else ""
        return f"{status}{code or type(exc).__name__}: {message}"
    return f"{type(exc).__name__}: {exc.message}"


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


def _header_seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def retry_after(response: PipelineResponse[Any, Any], default: float) -> float:
    return _header_seconds(response.http_response.headers.get("Retry-After")) or default
