"""The telemetry context: what crosses into pool threads, and what a run without telemetry pays.
(The whole pipeline, through the registered functions: tests/functional/test_telemetry.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.invocations import INVOCATION_LOCAL, HostContext
from handlers.core import telemetry

ROOT = Path(__file__).resolve().parents[2]


def test_a_pool_task_runs_in_its_submitter_s_invocation_and_scope_and_leaves_the_thread_as_it_was() -> None:
    context = HostContext.new("maintenance_worker")

    def seen() -> tuple[object, dict[str, str]]:
        return getattr(INVOCATION_LOCAL, "invocation_id", None), telemetry.current()

    with telemetry.InvocationPool(max_workers=1) as pool:
        with telemetry.invocation(context), telemetry.scope(correlation_id="run-1", phase="pre", step="send"):
            inside = pool.submit(seen).result()
            mapped = list(pool.map(lambda _: seen(), range(3)))
        outside = pool.submit(seen).result()

    expected = (context.invocation_id, {telemetry.CORRELATION_ID: "run-1", telemetry.PHASE: "pre",
                                        telemetry.STEP: "send"})
    assert inside == expected and mapped == [expected] * 3
    assert outside == (None, {})


def test_an_invocation_s_spans_are_children_of_the_host_s_span() -> None:
    from opentelemetry import trace

    context = HostContext.new("maintenance_worker")
    with telemetry.invocation(context):
        parent = trace.get_current_span().get_span_context()
    assert parent.is_valid and parent.is_remote
    assert f"{parent.trace_id:032x}" == context.trace_context.trace_parent.split("-")[1]


def test_attributes_have_one_name_each() -> None:
    assert telemetry.about(resource_id="/x", outcome="failed", reason="") == {
        telemetry.RESOURCE_ID: "/x", telemetry.OUTCOME: "failed"}
    with pytest.raises(TypeError, match="known"):
        telemetry.about(machine="/x")


def test_without_a_connection_string_no_opentelemetry_sdk_is_imported() -> None:
    """A run without telemetry (tests, demo, a laptop) imports only the OpenTelemetry API."""
    code = (
        "import sys, function_app\n"
        "from handlers.runtime import get_runtime\n"
        "import handlers.edge.worker, handlers.edge.intake\n"
        "get_runtime()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'azure.monitor',"
        " 'azure.core.tracing.ext'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "MAINTENANCE_"))}
    env["AzureWebJobsStorage"] = "UseDevelopmentStorage=true"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout
