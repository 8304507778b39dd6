"""Where the telemetry goes: Application Insights, through the Azure Monitor OpenTelemetry distro.

Started once per worker process by `handlers.runtime.get_runtime`, and only when
APPLICATIONINSIGHTS_CONNECTION_STRING is set (nothing imports this module otherwise). The distro
is configured in one of two ways:

- by the Python worker, when PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY is `true` (the Bicep sets
  it, as Microsoft's "Use OpenTelemetry with Azure Functions" asks): the worker calls
  `configure_azure_monitor()` before it loads function_app.py, tells the host it exports its own
  logs (so the host does not send them a second time), and makes the host's span of each
  invocation the parent of the spans the function makes;
- here, when the worker has not (a local `func start` with a connection string).

Either way the distro's exporters read the connection string, and the Entra ID authentication
(APPLICATIONINSIGHTS_AUTHENTICATION_STRING `Authorization=AAD;ClientId=<identity>`), from the
environment, and its log handler on the root logger exports each record's attributes
(`handlers.core.logs.RunLogger`). On top of whichever tracer provider is set: the run's attributes
on every span (`RunAttributes`), and the Azure SDKs traced through OpenTelemetry
(azure-core-tracing-opentelemetry), so that each ARM, Resource Graph and storage request is a
dependency span, a child of the step that sent it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping

from opentelemetry import context as otel
from opentelemetry import trace
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider

from handlers.core import telemetry

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
_lock = threading.Lock()
_instrumented: weakref.WeakSet[TracerProvider] = weakref.WeakSet()


class RunAttributes(SpanProcessor):
    """Puts the run's attributes (run, phase, step, machine: `telemetry.scope`) on every span
    started in their scope, the Azure SDKs' included; a span's own values win."""

    def on_start(self, span: Span, parent_context: otel.Context | None = None) -> None:
        own = span.attributes or {}
        for name, value in telemetry.current(parent_context).items():
            if name not in own:
                span.set_attribute(name, value)


def start_telemetry(environ: Mapping[str, str]) -> bool:
    """Export this process's spans and log records to Application Insights (once per process and
    tracer provider); False when no connection string is set."""
    connection_string = environ.get(CONNECTION_STRING)
    if not connection_string:
        return False
    with _lock:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            from azure.monitor.opentelemetry import configure_azure_monitor

            configure_azure_monitor(connection_string=connection_string)
            provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider) and provider not in _instrumented:
            provider.add_span_processor(RunAttributes())
            _instrumented.add(provider)
        _trace_azure_sdks()
    return True


def _trace_azure_sdks() -> None:
    """Every Azure SDK request as an OpenTelemetry span (what the distro's `azure_sdk`
    instrumentation sets; set here too, whoever configured the distro and how)."""
    from azure.core.settings import settings

    if settings.tracing_implementation() is None:
        from azure.core.tracing.ext.opentelemetry_span import OpenTelemetrySpan

        settings.tracing_implementation = OpenTelemetrySpan
