"""What the Python worker gives a function besides its trigger's value, and what it does with the
function's log lines (azure-functions-python-worker's dispatcher, as of 4.x).

- `HostContext`: the `context` argument (`azure.functions.Context`) of a function that declares
  one: the invocation id and function name, the host's trace context (the W3C traceparent of the
  host's span for the invocation) and the thread-local storage the worker reads invocation ids from.
- `invoking`: the call's keyword arguments, with that thread-local invocation id set for the
  call (the worker's `_run_sync_func`) and cleared after it.
- `forwarded_logs`: the worker's log handler: what reaches the host of each record is its level,
  message, category (the logger's name) and the invocation id of the thread that logged it, read
  from that storage. A line from a thread that did not set it reaches the host with none.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import azure.functions as func

# The library exports only Context; the worker's own trace and retry contexts subclass these.
from azure.functions._abc import RetryContext, TraceContext

# The worker's one storage for every invocation (`_invocation_id_local`): each thread that logs
# for an invocation sets `invocation_id` on it.
INVOCATION_LOCAL = threading.local()


class HostTraceContext(TraceContext):
    def __init__(self, trace_parent: str, trace_state: str = "") -> None:
        self._parent, self._state = trace_parent, trace_state

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def trace_state(self) -> str:
        return self._state

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class HostRetryContext(RetryContext):
    """A first attempt (retry policies are not used: the queues retry by dequeue count)."""

    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class HostContext(func.Context):
    """The `context` of one invocation."""

    def __init__(self, invocation_id: str, function_name: str, trace_context: HostTraceContext) -> None:
        self._id, self._name, self._trace = invocation_id, function_name, trace_context

    @classmethod
    def new(cls, function_name: str) -> HostContext:
        """A fresh invocation, its trace a new one begun by the host (sampled)."""
        parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        return cls(str(uuid.uuid4()), function_name, HostTraceContext(parent))

    @property
    def invocation_id(self) -> str:
        return self._id

    @property
    def function_name(self) -> str:
        return self._name

    @property
    def function_directory(self) -> str:
        return "."

    @property
    def trace_context(self) -> HostTraceContext:
        return self._trace

    @property
    def retry_context(self) -> HostRetryContext:
        return HostRetryContext()

    @property
    def thread_local_storage(self) -> Any:
        return INVOCATION_LOCAL


@contextmanager
def invoking(function: Callable[..., Any], function_name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(invocation id, the keyword arguments for `function`) for one call, in which the calling
    thread's invocation id is set."""
    context = HostContext.new(function_name)
    kwargs: dict[str, Any] = {"context": context} if "context" in inspect.signature(function).parameters else {}
    INVOCATION_LOCAL.invocation_id = context.invocation_id
    try:
        yield context.invocation_id, kwargs
    finally:
        INVOCATION_LOCAL.invocation_id = None


@dataclass(frozen=True)
class ForwardedLog:
    """One log record as the host receives it from the worker."""

    invocation_id: str | None
    level: int
    category: str
    message: str
    thread: str  # not forwarded: the thread that logged it, to tell what went wrong


class _Forwarder(logging.Handler):
    def __init__(self, into: list[ForwardedLog], level: int) -> None:
        super().__init__(level)
        self._into, self._lock_into = into, threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = ForwardedLog(getattr(INVOCATION_LOCAL, "invocation_id", None), record.levelno, record.name,
                            record.getMessage(), threading.current_thread().name)
        with self._lock_into:
            self._into.append(line)


@contextmanager
def forwarded_logs(level: int = logging.INFO) -> Iterator[list[ForwardedLog]]:
    """The log records of this block (at `level` and above) as the worker forwards them."""
    records: list[ForwardedLog] = []
    handler = _Forwarder(records, level)
    root = logging.getLogger()
    before = root.level
    root.addHandler(handler)
    if before > level:  # the worker runs the root logger at INFO (NOTSET passes everything already)
        root.setLevel(level)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(before)
