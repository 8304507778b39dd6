"""Running many Azure long-running operations at once, against a deadline.

Every request goes out (bounded parallelism) before any is waited on, so a fleet's time is the
slowest operation's, not the sum. Requests go out in waves: each wave is fully sent before the
next starts (snapshots before starts, so a disk is copied as it was before its VM came up).
Each operation's failure is caught and returned as its result; one can never stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.polling import LROPoller

from handlers.ledger import utcnow


@dataclass(frozen=True)
class Operation:
    key: str  # unique among the operations of one call; results are keyed by it
    resource_id: str  # what the operation acts on, for logs and records
    action: str  # "start", "snapshot", "delete-snapshot", ...
    begin: Callable[[], LROPoller[Any]]


@dataclass(frozen=True)
class OperationResult:
    key: str
    resource_id: str
    action: str
    outcome: str  # "succeeded" | "failed" | "timed-out"
    detail: str
    sent_at: datetime | None
    finished_at: datetime | None


Progress = Callable[[str, int, int], None]  # (stage "sent" | "done", count so far, total)


def run_operations(
    waves: Sequence[Sequence[Operation]],
    *,
    parallelism: int,
    deadline: datetime,
    log: logging.LoggerAdapter[Any],
    progress: Progress | None = None,
) -> dict[str, OperationResult]:
    """Send every wave in order, then wait for all operations until `deadline`.

    An operation still running at the deadline is "timed-out": it continues in Azure, we just
    stop waiting for it. `progress`, when given, hears of every request sent and every result.
    """
    total = sum(len(wave) for wave in waves)
    report = progress or (lambda stage, count, of: None)
    results: dict[str, OperationResult] = {}
    pollers: list[tuple[Operation, LROPoller[Any], datetime]] = []

    def send(operation: Operation) -> tuple[Operation, LROPoller[Any] | None, datetime, str]:
        sent_at = utcnow()
        try:
            poller = operation.begin()
        except AzureError as exc:
            return operation, None, sent_at, describe_error(exc)
        log.info("%s requested for %s", operation.action, operation.resource_id)
        return operation, poller, sent_at, ""

    for wave in waves:
        if not wave:
            continue
        with ThreadPoolExecutor(max_workers=min(parallelism, len(wave)), thread_name_prefix="ops") as pool:
            for operation, poller, sent_at, error in pool.map(send, wave):
                if poller is None:
                    log.warning("%s failed for %s: %s", operation.action, operation.resource_id, error)
                    results[operation.key] = _result(operation, "failed", error, sent_at, utcnow())
                else:
                    pollers.append((operation, poller, sent_at))
                report("sent", len(pollers) + len(results), total)

    for operation, poller, sent_at in pollers:
        results[operation.key] = _await(operation, poller, sent_at, deadline, log)
        report("done", len(results), total)
    return results


def _await(
    operation: Operation, poller: LROPoller[Any], sent_at: datetime, deadline: datetime,
    log: logging.LoggerAdapter[Any],
) -> OperationResult:
    remaining = (deadline - utcnow()).total_seconds()
    try:
        poller.wait(timeout=max(remaining, 0.0))
        if not poller.done():
            log.warning("%s of %s still running at the deadline %s", operation.action, operation.resource_id,
                        deadline.isoformat())
            return _result(operation, "timed-out", f"still running at the deadline {deadline.isoformat()}",
                           sent_at, None)
        poller.result()
    except AzureError as exc:
        detail = describe_error(exc)
        log.warning("%s failed for %s: %s", operation.action, operation.resource_id, detail)
        return _result(operation, "failed", detail, sent_at, utcnow())
    log.info("%s succeeded for %s", operation.action, operation.resource_id)
    return _result(operation, "succeeded", "", sent_at, utcnow())


def _result(
    operation: Operation, outcome: str, detail: str, sent_at: datetime | None, finished_at: datetime | None
) -> OperationResult:
    return OperationResult(operation.key, operation.resource_id, operation.action, outcome, detail, sent_at,
                           finished_at)


def describe_error(exc: AzureError) -> str:
    """'409 OperationNotAllowed: message' — the parts an operator needs, nothing secret."""
    if isinstance(exc, HttpResponseError):
        code = exc.error.code if exc.error is not None else None
        message = exc.error.message if exc.error is not None else exc.message
        # A failed long-running operation arrives on a 200 poll: only an HTTP error status says more.
        status = f"{exc.status_code} " if exc.status_code and exc.status_code >= 400 else ""
        return f"{status}{code or type(exc).__name__}: {message}"
    return f"{type(exc).__name__}: {exc.message}"
