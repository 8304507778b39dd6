"""What every span and log line of a run carries, and how that crosses into the worker's threads.

The attributes (customDimensions in Application Insights), named once here:

- `maintenance.correlation_id`: the run (its correlation id, the applyUpdates ARM id)
- `maintenance.phase`: `pre` or `post`
- `maintenance.step`: the phase's step (`handlers.phases.pre.STEPS`, `handlers.phases.post.STEPS`)
- `maintenance.resource_id`: what an action is about (a machine, a disk's snapshot)
- `maintenance.action`: what was done to it (`start`, `deallocate`, `snapshot`, `cancel`...)
- `maintenance.outcome`: what became of it (`succeeded`, `failed`, `timed-out`, `cancelled`...)
- `maintenance.reason`: why (a failure's error, a cancel's reasons)
- `maintenance.alert`: which alert a `MAINTENANCE ALERT` line raises (`<kind>:<run or digest>`), one
  value per alert: the `toolkit-alert` log alert fires once per value

The run, phase and step are set where they become known (`scope`, `step_span`) and ride in the
OpenTelemetry context: every span started under them gets them (the span processor in
`handlers.adapters.monitor`, the Azure SDKs' HTTP spans included), and so does every line of a
`RunLogger`. A thread does not inherit its starter's context: `carried` (and `InvocationPool`,
which applies it to every task) runs a callable in the caller's context and in the caller's
Functions invocation (`context.thread_local_storage.invocation_id`, which the Python worker reads
to tell the host whose log line it is).

Without an OpenTelemetry SDK configured (no `APPLICATIONINSIGHTS_CONNECTION_STRING`) the spans
are the API's no-op ones: a few context look-ups per step and per task.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from opentelemetry import context as otel
from opentelemetry import trace

if TYPE_CHECKING:
    import azure.functions as func

CORRELATION_ID = "maintenance.correlation_id"
PHASE = "maintenance.phase"
STEP = "maintenance.step"
RESOURCE_ID = "maintenance.resource_id"
ACTION = "maintenance.action"
OUTCOME = "maintenance.outcome"
REASON = "maintenance.reason"
ALERT = "maintenance.alert"
THREAD_NAME = "thread.name"  # OpenTelemetry's semantic convention: which pool thread logged it
_NAMES = {"correlation_id": CORRELATION_ID, "phase": PHASE, "step": STEP, "resource_id": RESOURCE_ID,
          "action": ACTION, "outcome": OUTCOME, "reason": REASON, "alert": ALERT}

_ATTRIBUTES = otel.create_key("maintenance.attributes")
_INVOCATION = otel.create_key("maintenance.invocation")
TRACER_NAME = "maintenance"

P = ParamSpec("P")
T = TypeVar("T")


def about(**values: object) -> dict[str, str]:
    """The attributes for these values (`about(resource_id=..., outcome=...)`): `extra=` of a log call."""
    unknown = set(values) - set(_NAMES)
    if unknown:
        raise TypeError(f"no telemetry attribute for {sorted(unknown)}; known: {sorted(_NAMES)}")
    return {_NAMES[name]: str(value) for name, value in values.items() if value is not None and value != ""}


def current(context: otel.Context | None = None) -> dict[str, str]:
    """The run's attributes in this (or the current) context."""
    found = otel.get_value(_ATTRIBUTES, context)
    return dict(found) if isinstance(found, Mapping) else {}


@contextmanager
def scope(**values: object) -> Iterator[None]:
    """Everything in this block (spans, log lines, the threads it hands work to) is about these."""
    token = otel.attach(otel.set_value(_ATTRIBUTES, {**current(), **about(**values)}))
    try:
        yield
    finally:
        otel.detach(token)


@contextmanager
def step_span(name: str, **values: object) -> Iterator[trace.Span]:
    """A span for one step of a phase (named after it), in a scope that says which step it is."""
    with scope(step=name, **values):
        span = trace.get_tracer(TRACER_NAME).start_span(name, attributes=current())
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            yield span


def failed(span: trace.Span, error: BaseException) -> None:
    """Mark `span` as failed by `error` (what a step's failure looks like in a trace)."""
    span.record_exception(error)
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


@contextmanager
def invocation(context: func.Context | None) -> Iterator[None]:
    """One function invocation: the threads it hands work to log under it, and its spans are
    children of the host's span for it (when the worker has not made them so already)."""
    if context is None:
        yield
        return
    ctx = otel.set_value(_INVOCATION, (context.thread_local_storage, context.invocation_id))
    parent = getattr(context.trace_context, "trace_parent", "") or ""
    if parent and not trace.get_current_span().get_span_context().is_valid:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier = {"traceparent": parent, "tracestate": getattr(context.trace_context, "trace_state", "") or ""}
        ctx = TraceContextTextMapPropagator().extract(carrier, context=ctx)
    token = otel.attach(ctx)
    try:
        yield
    finally:
        otel.detach(token)


def carried(fn: Callable[P, T]) -> Callable[P, T]:
    """`fn`, to be called in another thread as if in this one: the same context (span, run,
    step) and the same Functions invocation."""
    ctx = otel.get_current()
    invocation_of = otel.get_value(_INVOCATION, ctx)

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        token = otel.attach(ctx)
        local, before = None, None
        if isinstance(invocation_of, tuple):
            local, invocation_id = invocation_of
            before = getattr(local, "invocation_id", None)
            local.invocation_id = invocation_id
        try:
            return fn(*args, **kwargs)
        finally:
            if local is not None:
                local.invocation_id = before
            otel.detach(token)

    return run


class InvocationPool(ThreadPoolExecutor):
    """A thread pool whose tasks run in the context of whoever submitted them (`carried`);
    `map` submits through it too. The one kind of pool under `handlers`."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(carried(fn), *args, **kwargs)


def thread(target: Callable[[], None], *, name: str) -> threading.Thread:
    """A daemon thread running `target` in this context and invocation (`carried`)."""
    return threading.Thread(target=carried(target), name=name, daemon=True)
