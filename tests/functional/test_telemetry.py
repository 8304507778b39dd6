"""Telemetry as it reaches Application Insights: a whole run through the registered functions, its
spans and log records exported in memory by the pipeline the Python worker sets up in Azure
(PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true: the worker calls configure_azure_monitor(),
which installs an SDK tracer provider, an SDK logger provider and the OpenTelemetry log handler on
the root logger). The app then finds APPLICATIONINSIGHTS_CONNECTION_STRING set and starts its
telemetry on that pipeline, as it does in Azure (`handlers.adapters.monitor`); only the exporters
differ."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.settings import settings as azure_settings
from opentelemetry import _logs, trace
from opentelemetry._logs import _internal as logs_globals
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from emulator.invocations import ForwardedLog, forwarded_logs
from handlers.core import telemetry
from handlers.core.status import CancelOutcome, Outcome
from handlers.phases import post, pre
from handlers.phases.steps import Scope, StepOutcome
from tests.conftest import ARM, SUB_A, SUB_B, make_event

# Each machine has a machine row and an OS-disk snapshot row: more than the 100 rows of one ledger
# transaction, so the rows are written by the ledger's pool too, not only by the worker's thread.
MACHINES = 60


@dataclass
class Exported:
    spans: InMemorySpanExporter
    logs: InMemoryLogRecordExporter

    def span_list(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def records(self) -> list[dict[str, Any]]:
        """The app's log records (the `maintenance` loggers'): body and attributes."""
        return [{"body": r.log_record.body, **dict(r.log_record.attributes or {})}
                for r in self.logs.get_finished_logs()
                if r.instrumentation_scope is not None and r.instrumentation_scope.name.startswith("maintenance")]


def _set_providers(tracer_provider: TracerProvider | None, logger_provider: LoggerProvider | None) -> None:
    """Install (or, with None, remove) the process-wide providers: the API sets each only once
    per process, so tests reset its globals the way OpenTelemetry's own test utilities do."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    logs_globals._LOGGER_PROVIDER_SET_ONCE = Once()
    logs_globals._LOGGER_PROVIDER = None
    if tracer_provider is not None and logger_provider is not None:
        trace.set_tracer_provider(tracer_provider)
        _logs.set_logger_provider(logger_provider)


@pytest.fixture
def exported(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Exported]:
    """What the worker's configure_azure_monitor() installs, exporting to memory."""
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    _set_providers(tracer_provider, logger_provider)
    root = logging.getLogger()
    handler, level = LoggingHandler(logger_provider=logger_provider), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # as the worker runs it
    # Nothing is sent there: the providers above are already set, so the app configures no exporter.
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING",
                       "InstrumentationKey=00000000-0000-0000-0000-000000000000")
    yield Exported(spans, logs)
    root.removeHandler(handler)
    root.setLevel(level)
    tracer_provider.shutdown()
    logger_provider.shutdown()
    _set_providers(None, None)
    azure_settings.tracing_implementation.unset_value()


@dataclass
class Run:
    correlation_id: str
    stopped: list[str]  # the machines the pre phase starts
    forwarded: list[ForwardedLog]  # the log lines as the worker forwards them to the host


@pytest.fixture
def run(exported: Exported, host: FunctionsHost, emulator: AzureEmulator) -> Run:
    """A pre and a post phase over MACHINES machines (all stopped) in two subscriptions."""
    machines = [emulator.add_vm(SUB_A if i % 2 else SUB_B, "rg-fleet", f"vm-{i:03d}", power_state="deallocated")
                for i in range(MACHINES)]
    pre_event = make_event("pre")
    correlation_id = str(pre_event["data"]["correlationId"])
    emulator.add_run(correlation_id, machines)
    with forwarded_logs() as forwarded:
        host.deliver_event("pre_maintenance", pre_event)
        host.run_queues()
        host.deliver_event("post_maintenance", make_event("post"))
        host.run_queues()
    assert host.invocations and all(i.succeeded for i in host.invocations)
    assert all(emulator.actions(vm) == ["start", "deallocate"] for vm in machines)
    return Run(correlation_id, machines, forwarded)


def _pooled(thread_name: str) -> bool:
    """A thread of the app's pools (send, poll, ledger...), not the one the host invoked it on."""
    return thread_name != "MainThread" and not thread_name.startswith("host")


def test_every_log_record_of_a_run_carries_its_correlation_id_from_every_thread(
    exported: Exported, run: Run
) -> None:
    records = exported.records()
    assert records and all(r.get(telemetry.CORRELATION_ID) == run.correlation_id for r in records), \
        [r["body"] for r in records if r.get(telemetry.CORRELATION_ID) != run.correlation_id][:5]
    assert all(r.get(telemetry.PHASE) in ("pre", "post") for r in records)

    # Lines from the pools' threads carry the step they work for, which only the context they
    # were handed says (the logger itself knows only the run).
    pooled = [r for r in records if _pooled(r[telemetry.THREAD_NAME])]
    assert Counter(r[telemetry.THREAD_NAME].split("_")[0] for r in pooled)["send"] >= MACHINES
    assert all(r.get(telemetry.STEP) for r in pooled), [r["body"] for r in pooled if not r.get(telemetry.STEP)][:5]

    # Each machine's start: which machine, what was done, how it ended.
    started = {r[telemetry.RESOURCE_ID] for r in records
               if r.get(telemetry.ACTION) == "start" and r.get(telemetry.OUTCOME) == "succeeded"}
    assert started == set(run.stopped)
    assert all(r[telemetry.STEP] == "send" for r in records if r.get(telemetry.ACTION) == "start")


def test_log_lines_from_the_pools_reach_the_host_with_their_invocation(host: FunctionsHost, run: Run) -> None:
    invocations = {i.invocation_id for i in host.invocations}
    lines = [line for line in run.forwarded if line.category.startswith("maintenance")]
    assert lines and {line.invocation_id for line in lines} <= invocations, \
        [(line.thread, line.message) for line in lines if line.invocation_id not in invocations][:5]
    assert any(_pooled(line.thread) for line in lines)


def _step_of(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> ReadableSpan | None:
    """The step span `span` runs under (itself, or its nearest step ancestor)."""
    current: ReadableSpan | None = span
    while current is not None:
        if current.instrumentation_scope is not None and current.instrumentation_scope.name == telemetry.TRACER_NAME:
            return current
        current = by_id.get(current.parent.span_id) if current.parent is not None else None
    return None


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _request(span: ReadableSpan) -> tuple[str, str]:
    """(method, URL) of an HTTP span, in the current semantic conventions or the older ones
    (azure-core-tracing-opentelemetry before 1.0.0b12)."""
    attributes = _attributes(span)
    method = attributes.get("http.request.method", attributes.get("http.method", ""))
    return str(method), str(attributes.get("url.full", attributes.get("http.url", "")))


def test_each_step_is_a_span_with_the_run_s_attributes_under_the_host_s_invocation(
    exported: Exported, run: Run
) -> None:
    steps = [s for s in exported.span_list()
             if s.instrumentation_scope is not None and s.instrumentation_scope.name == telemetry.TRACER_NAME]
    expected = {("pre", s.name) for s in pre.STEPS if Scope.WHOLE in s.scopes} | {("post", s.name) for s in post.STEPS}
    assert {(_attributes(s)[telemetry.PHASE], s.name) for s in steps} == expected
    outcomes = {str(o) for o in StepOutcome}
    for span in steps:
        attributes = _attributes(span)
        assert attributes[telemetry.CORRELATION_ID] == run.correlation_id
        assert attributes[telemetry.STEP] == span.name
        assert str(attributes[telemetry.OUTCOME]).split(":")[0] in outcomes
        # A child of the host's span for its invocation (the traceparent the host passed).
        assert span.parent is not None and span.parent.is_remote
    sent = next(s for s in steps if s.name == "send")
    assert _attributes(sent)[telemetry.OUTCOME] == StepOutcome.SUCCEEDED


def test_each_azure_request_is_a_dependency_span_under_the_step_that_sent_it(
    exported: Exported, run: Run
) -> None:
    spans = exported.span_list()
    by_id = {s.context.span_id: s for s in spans}

    def step(span: ReadableSpan) -> str:
        found = _step_of(span, by_id)
        return found.name if found is not None else ""

    arm = [s for s in spans if s.kind is SpanKind.CLIENT and _request(s)[1].startswith(ARM)]
    assert arm
    orphans = [s.name for s in arm if not step(s)]
    assert orphans == [], orphans[:5]
    assert all(_attributes(s).get(telemetry.CORRELATION_ID) == run.correlation_id for s in arm)

    # The starts, each sent from a send thread, know their machine; so do the status polls.
    starts = [s for s in arm if _request(s)[0] == "POST" and "/start?" in _request(s)[1]]
    assert {_attributes(s)[telemetry.RESOURCE_ID] for s in starts} == set(run.stopped)
    assert all(step(s) == "send" and _attributes(s)[telemetry.ACTION] == "start" for s in starts)
    polls = [s for s in arm if _attributes(s).get(telemetry.ACTION) == "start" and _request(s)[0] == "GET"]
    assert polls and all(step(s) == "send" for s in polls)

    # The ledger's transactions, the later ones written from its pool, are under their step too.
    transactions = [s for s in spans if s.name == "TableClient.submit_transaction"]
    assert len(transactions) >= 2 and all(step(s) for s in transactions)


def test_a_failed_start_and_the_cancel_it_causes_say_which_machine_and_why(
    exported: Exported, host: FunctionsHost, emulator: AzureEmulator
) -> None:
    """What README's "VMs whose start failed" and "runs cancelled this month" queries read."""
    fine = emulator.add_vm(SUB_A, "rg-web", "web-1", power_state="deallocated")
    broken = emulator.add_vm(SUB_B, "rg-db", "db-1", power_state="stopped")
    pre_event = make_event("pre")
    correlation_id = str(pre_event["data"]["correlationId"])
    emulator.add_run(correlation_id, [fine, broken])
    emulator.fail("start", broken, mode="operation", code="AllocationFailed", message="no capacity for this size")

    host.deliver_event("pre_maintenance", pre_event)
    host.run_queues()

    assert emulator.run_status(correlation_id) == "Cancelled"
    records = exported.records()
    [failed] = [r for r in records if r.get(telemetry.ACTION) == "start"
                and r.get(telemetry.OUTCOME) in (Outcome.FAILED, Outcome.TIMED_OUT)]
    assert failed[telemetry.RESOURCE_ID] == broken and "AllocationFailed" in failed[telemetry.REASON]
    assert failed[telemetry.CORRELATION_ID] == correlation_id
    [cancelled] = [r for r in records if r.get(telemetry.ACTION) == "cancel"
                   and r.get(telemetry.OUTCOME) == CancelOutcome.CANCELLED]
    assert cancelled[telemetry.CORRELATION_ID] == correlation_id
    assert broken in cancelled[telemetry.REASON], cancelled[telemetry.REASON]
