"""Log lines that carry the run's correlation id (and, per machine, the resource id) in the
message and as attributes."""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from typing import Any

from handlers.core import telemetry

LOGGER_NAME = "maintenance"


class RunLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with the run's correlation id, and puts the run's attributes on the
    record: its correlation id, the phase and step it runs in (`telemetry.scope`), what the call
    says it is about (`extra=telemetry.about(resource_id=..., outcome=...)`) and the thread.

    The Python worker forwards only a record's level, message, logger and invocation to the host,
    hence the prefix; the OpenTelemetry log handler (telemetry on, `handlers.adapters.monitor`)
    exports the record's other fields as attributes, which Application Insights shows as
    customDimensions: `customDimensions["maintenance.correlation_id"]` finds a run's every line.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = {**telemetry.current(), **(self.extra or {}), **(kwargs.get("extra") or {})}
        extra[telemetry.THREAD_NAME] = threading.current_thread().name
        kwargs["extra"] = extra
        return f"[{extra.get(telemetry.CORRELATION_ID, '-')}] {msg}", kwargs


def run_logger(correlation_id: str | None) -> RunLogger:
    return RunLogger(logging.getLogger(LOGGER_NAME), telemetry.about(correlation_id=correlation_id))
