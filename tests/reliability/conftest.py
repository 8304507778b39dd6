"""Helpers shared by the reliability suite (the fixtures are tests/conftest.py's)."""

from __future__ import annotations

import base64
from typing import Any

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.core.events import parse_event
from handlers.core.work import WorkMessage
from handlers.runtime import get_runtime

WRITE_METHODS = ("PUT", "POST", "DELETE", "PATCH")


def run_of(event: dict[str, Any]) -> str:
    return str(event["data"]["correlationId"])


def arm_writes(emulator: AzureEmulator) -> list[str]:
    """Requests that would change something in Azure (Resource Graph queries are POSTs that read)."""
    return [f"{r.method} {r.path}" for r in emulator.requests
            if r.method in WRITE_METHODS and "microsoft.resourcegraph" not in r.path.lower()]


def queue_work(host: FunctionsHost, raw_event: dict[str, Any]) -> None:
    """Put an event's work message straight on the work queue, as an earlier, accepted delivery
    left it (the worker was down, or the message waited in a backlog)."""
    body = WorkMessage(parse_event(raw_event)).to_json()
    host.queue(get_runtime().settings.work_queue).send_message(base64.b64encode(body.encode()).decode())

