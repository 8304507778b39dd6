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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from contextlib import ExitStack
from datetime import datetime
from queue import SimpleQueue
from typing import Any

from azure.core.exceptions import AzureError

from handlers.adapters.clients import ClientFactory
from handlers.adapters.operation import (
    DONE,
    GONE,
    MAX_SEND_WORKERS,
    MIN_LANE_WORKERS,
    NOT_STARTED,
    ON_ITS_WAY,
    UNREADABLE,
    Operation,
    OperationResult,
    Pending,
    Progress,
    about_operation,
    describe_error,
    done,
    follow,
    raw_response,
    result,
    retry_after,
    uncertain,
)
from handlers.adapters.waiting import Poller
from handlers.core import telemetry
from handlers.core.ids import subscription_of
from handlers.core.status import Outcome

__all__ = ["DONE", "GONE", "MAX_SEND_WORKERS", "MIN_LANE_WORKERS", "NOT_STARTED", "ON_ITS_WAY", "UNREADABLE",
           "Operation", "OperationResult", "Progress", "describe_error", "raw_response", "run_operations",
           "uncertain"]
# operation, where to follow it (None: it has ended), when to poll it first (clock), when it was sent,
# an error ("": accepted)
_Sent = tuple[Operation, tuple[str, str] | None, float, datetime, str]


class Dispatch:
    """Sends tasks, each subscription's in a lane of its own, and settles what their requests
    answer: an operation that ended at once has its result, one accepted is waited on (`pending`).
    An operation's follow-ups (`Operation.then`) are sent the same way when it ends, so a machine's
    chain (start, then its script, then its snapshot) and the waves of a fleet go through the one
    waiting loop. Used from one thread; only the requests leave it."""

    def __init__(self, clients: ClientFactory, lanes: ExitStack, *, lane_workers: int,
                 log: logging.LoggerAdapter[Any], total: int, report: Progress,
                 on_result: Callable[[OperationResult], None] | None = None) -> None:
        self.clients, self.log, self.total, self._report = clients, log, total, report
        self._on_result = on_result
        self.results: dict[str, OperationResult] = {}
        self.pending: list[Pending] = []
        self._lanes_open, self._lane_workers = lanes, lane_workers
        self._lanes: dict[str, telemetry.InvocationPool] = {}
        # Each send, once answered, is settled whichever lane it went through: one subscription's
        # slow sends must not hold back what the others' answered (their polls would wait).
        self._answered: SimpleQueue[Future[list[_Sent]]] = SimpleQueue()
        self._outstanding = 0

    @property
    def busy(self) -> bool:
        """Requests still on their way out."""
        return self._outstanding > 0

    def submit(self, task: Sequence[Operation]) -> None:
        if not task:
            return
        scope = subscription_of(task[0].resource_id)
        if scope not in self._lanes:
            self._lanes[scope] = self._lanes_open.enter_context(
                telemetry.InvocationPool(max_workers=self._lane_workers, thread_name_prefix="send"))
        self._outstanding += 1
        self._lanes[scope].submit(self._send_task, task).add_done_callback(self._answered.put)

    def settle_done(self, *, wait: bool = False) -> None:
        """Settle the sends that have answered, in the order they answered (with `wait`, every
        send, follow-ups included)."""
        while self._outstanding and (wait or not self._answered.empty()):
            self._outstanding -= 1
            self._settle(self._answered.get().result())

    def finish(self, operation: Operation, outcome: OperationResult) -> None:
        """Record an operation's result, tell `on_result`, and send what follows it."""
        self.results[operation.key] = outcome
        if self._on_result is not None:
            self._on_result(outcome)
        if operation.then is not None:
            for task in operation.then(outcome):
                self.total += len(task)
                self.submit(task)

    def _send_task(self, task: Sequence[Operation]) -> list[_Sent]:
        sent = []
        for operation in task:
            # The request's span and log lines say which machine and action they are about.
            with telemetry.scope(resource_id=operation.resource_id, action=operation.action):
                sent.append(self._send(operation))
        return sent

    def _send(self, operation: Operation) -> _Sent:
        """Send one request; keep only what waiting needs (a fleet's responses would be megabytes)."""
        clients, log = self.clients, self.log
        sent_at = clients.clock.utcnow()
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
        interval = operation.poll_every or clients.settings.poll_interval_seconds
        first_poll = clients.clock.now() + retry_after(response, interval)
        if operation.ends_by_check and operation.check is not None:
            return operation, ("", "check"), first_poll, sent_at, ""
        return operation, follow(response), first_poll, sent_at, ""

    def _settle(self, sent: list[_Sent]) -> None:
        clock = self.clients.clock
        for operation, followed, first_poll, sent_at, error in sent:
            if error:
                self.log.warning("%s failed for %s: %s", operation.action, operation.resource_id, error,
                                 extra=about_operation(operation, Outcome.FAILED, error))
                self.finish(operation, result(operation, Outcome.FAILED, error, sent_at, clock.utcnow()))
            elif followed is None:
                self.finish(operation, done(operation, sent_at, clock.utcnow(), self.log))
            else:
                url, kind = followed
                self.pending.append(Pending(operation, url, kind, sent_at, first_poll))
        self._report("sent", len(self.pending) + len(self.results), self.total)


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
    on_result: Callable[[OperationResult], None] | None = None,
    sent: Callable[[], None] | None = None,
) -> dict[str, OperationResult]:
    """Send every task, then wait for all operations until `deadline`.

    `tasks` may be a generator that hands out tasks as they become ready to send (their ledger
    rows stored): each is sent as soon as it is given. Then `total` (the number of operations,
    for progress reports) and `subscriptions` (how many lanes, to size them) say what is coming.
    Each subscription's lane has `parallelism` workers, fewer when many subscriptions would
    take the process past MAX_SEND_WORKERS threads. An operation's `then` sends what follows it.

    An operation still running at the deadline is "timed-out": it continues in Azure, we just
    stop waiting for it. `progress`, when given, hears of every request sent and every result.
    `cancelled`, when it turns true, ends the waiting early (what is pending is left out).
    `on_result` hears of each operation that ends, as it ends, on the calling thread (not of those
    still running at the deadline: they are in the returned results only). `sent` is called once,
    when every task's requests have been answered (only the waiting is left), or at the end.
    """
    if total is None or subscriptions is None:
        tasks = list(tasks)
        total = sum(len(task) for task in tasks)
        subscriptions = len({subscription_of(task[0].resource_id) for task in tasks if task})
    lane_workers = max(1, min(parallelism, total, max(MIN_LANE_WORKERS, MAX_SEND_WORKERS // max(1, subscriptions))))
    report = progress or (lambda stage, done, of: None)
    with ExitStack() as lanes_open:
        dispatch = Dispatch(clients, lanes_open, lane_workers=lane_workers, log=log, total=total, report=report,
                            on_result=on_result)
        # Threads start as polls need them (follow-ups may come later than the first requests).
        polls = lanes_open.enter_context(telemetry.InvocationPool(max_workers=max(1, parallelism),
                                                                  thread_name_prefix="poll"))
        poller = Poller(clients, dispatch, polls, parallelism=parallelism, log=log,
                        report=lambda: report("done", len(dispatch.results), dispatch.total))
        # What was sent first is polled while the rest goes out (the lanes send at ARM's pace).
        for task in tasks:
            dispatch.submit(task)
            dispatch.settle_done()
            poller.step()
        poller.wait(deadline=deadline, cancelled=cancelled or (lambda: False), sent=sent)
    return dispatch.results
