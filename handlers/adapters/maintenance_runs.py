"""The maintenance runs Update Manager started, as Resource Graph lists them.

Each run has one `maintenanceresources` row per machine (type `microsoft.maintenance/applyupdates`,
`properties.correlationId` the run, `properties.startDateTime` when it started). The rows of one
run are folded into one `StartedRun`. Resource Graph answers only for the subscriptions the
identity can read (the target subscriptions: Reader); rows whose run id is not of the shape an
event carries are left out, so nothing unchecked reaches the ledger or a log line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from handlers.adapters.clients import ClientFactory
from handlers.adapters.inventory import kql_literal, query_all
from handlers.core.ids import RUN_ID_RE
from handlers.core.reading import format_time, parse_time_or_none

STARTED_RUNS_QUERY = """maintenanceresources
| where type =~ 'microsoft.maintenance/applyupdates'
| where properties.maintenanceConfigurationId in~ ({configurations})
| where todatetime(properties.startDateTime) between (datetime({oldest}) .. datetime({newest}))
| project id, correlationId = tostring(properties.correlationId),
    maintenanceConfigurationId = tostring(properties.maintenanceConfigurationId),
    startDateTime = tostring(properties.startDateTime), status = tostring(properties.status)"""


@dataclass(frozen=True)
class StartedRun:
    correlation_id: str
    configuration_id: str
    started: datetime
    machines: int
    statuses: tuple[str, ...]  # the machines' statuses (InProgress, Completed, Cancelled...), sorted


def list_started_runs(
    clients: ClientFactory, configuration_ids: Iterable[str], *, oldest: datetime, newest: datetime
) -> list[StartedRun]:
    """The runs of these configurations that started between `oldest` and `newest`, oldest first."""
    configurations = ", ".join(f"'{kql_literal(c)}'" for c in sorted(configuration_ids))
    if not configurations:
        return []
    query = STARTED_RUNS_QUERY.format(configurations=configurations, oldest=format_time(oldest),
                                      newest=format_time(newest))
    found: dict[str, dict[str, Any]] = {}
    for row in query_all(clients.resource_graph(), None, query):
        correlation_id = str(row.get("correlationId") or "").rstrip("/")
        started = parse_time_or_none(row.get("startDateTime"), "applyUpdates startDateTime")
        if RUN_ID_RE.fullmatch(correlation_id) is None or started is None or not oldest <= started <= newest:
            continue  # the query's own time filter aside: an index row we cannot place
        run = found.setdefault(correlation_id.lower(), {
            "correlation_id": correlation_id, "configuration_id": str(row.get("maintenanceConfigurationId") or ""),
            "started": started, "machines": 0, "statuses": set()})
        run["started"] = min(run["started"], started)
        run["machines"] += 1
        run["statuses"].add(str(row.get("status") or "unknown"))
    runs = [StartedRun(**{**run, "statuses": tuple(sorted(run["statuses"]))}) for run in found.values()]
    return sorted(runs, key=lambda r: (r.started, r.correlation_id))
