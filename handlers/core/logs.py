"""Log lines that carry the run's correlation id (and, per machine, the resource id)."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

LOGGER_NAME = "maintenance"


class RunLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with the run's correlation id and adds it as a custom dimension.

    Application Insights turns `extra` fields into customDimensions, so a query can filter on
    correlation_id without parsing messages.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return f"[{extra.get('correlation_id', '-')}] {msg}", kwargs


def run_logger(correlation_id: str | None) -> RunLogger:
    return RunLogger(logging.getLogger(LOGGER_NAME), {"correlation_id": correlation_id or "-"})
