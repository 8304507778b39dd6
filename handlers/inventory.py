"""Which machines a run covers, and their power state, from Azure Resource Graph in bulk.

Resource Graph is an index that can lag the resources by minutes: it is used here to find
machines and their state *before* acting, never to confirm an action's result.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions, ResultFormat

PAGE_SIZE = 1000
IDS_PER_QUERY = 200  # keeps each query well under Resource Graph's request size limit

_RESOURCE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[0-9a-fA-F-]{36})/resourceGroups/(?P<rg>[-\w.()]{1,90})"
    r"/providers/(?P<provider>[\w.]+)/(?P<type>[\w]+)/(?P<name>[-\w.]{1,80})$",
    re.IGNORECASE,
)

RUN_MACHINES_QUERY = """maintenanceresources
| where type =~ 'microsoft.maintenance/applyupdates'
| where properties.correlationId =~ '{correlation_id}'
| project id, resourceId = tostring(properties.resourceId), correlationId = tostring(properties.correlationId)"""

VM_STATE_QUERY = """resources
| where type =~ 'microsoft.compute/virtualmachines'
| where id in~ ({ids})
| project id, name, location, resourceGroup, subscriptionId, tags,
    powerState = tostring(properties.extended.instanceView.powerState.code)"""


class MachineKind(StrEnum):
    VM = "vm"
    ARC = "arc"
    OTHER = "other"


@dataclass(frozen=True)
class RunMachine:
    """A machine named by the run's applyUpdates records."""

    resource_id: str
    kind: MachineKind
    subscription_id: str
    resource_group: str
    name: str


@dataclass(frozen=True)
class VmView:
    """What Resource Graph last saw of a VM."""

    resource_id: str
    power_state: str  # "running", "deallocated", ... ("" when Resource Graph has none)
    location: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


def power_state_name(code: str | None) -> str:
    """'PowerState/deallocated' -> 'deallocated' (lower case; '' for nothing)."""
    if not code:
        return ""
    return code.rsplit("/", 1)[-1].strip().lower()


def describe_machine(resource_id: str) -> RunMachine | None:
    """Classify an ARM id; None when it is not a well-formed machine id."""
    match = _RESOURCE_ID.fullmatch(resource_id)
    if match is None:
        return None
    provider_type = f"{match['provider']}/{match['type']}".lower()
    kind = {
        "microsoft.compute/virtualmachines": MachineKind.VM,
        "microsoft.hybridcompute/machines": MachineKind.ARC,
    }.get(provider_type, MachineKind.OTHER)
    return RunMachine(resource_id, kind, match["sub"].lower(), match["rg"], match["name"])


def find_run_machines(
    graph: ResourceGraphClient, subscription_ids: Sequence[str], correlation_id: str, *, log: logging.LoggerAdapter[Any]
) -> list[RunMachine]:
    """Every machine whose applyUpdates record carries this run's correlation id."""
    query = RUN_MACHINES_QUERY.format(correlation_id=_kql_literal(correlation_id))
    machines: dict[str, RunMachine] = {}
    for row in query_all(graph, subscription_ids, query):
        row_correlation = _first(row, "correlationId", ("properties", "correlationId"))
        if row_correlation and row_correlation.lower() != correlation_id.lower():
            continue
        resource_id = _first(row, "resourceId", ("properties", "resourceId"))
        machine = describe_machine(resource_id.rstrip("/")) if resource_id else None
        if machine is None:
            log.warning("applyUpdates record %s names no machine id we recognise: %r", row.get("id"), resource_id)
            continue
        machines.setdefault(machine.resource_id.lower(), machine)
    return list(machines.values())


def get_vm_views(
    graph: ResourceGraphClient, subscription_ids: Sequence[str], resource_ids: Iterable[str]
) -> dict[str, VmView]:
    """Power state, location and tags of many VMs, keyed by lower-cased id, in few queries."""
    wanted = sorted({rid.lower() for rid in resource_ids})
    views: dict[str, VmView] = {}
    for start in range(0, len(wanted), IDS_PER_QUERY):
        chunk = wanted[start : start + IDS_PER_QUERY]
        ids = ", ".join(f"'{_kql_literal(rid)}'" for rid in chunk)
        chunk_set = set(chunk)
        for row in query_all(graph, subscription_ids, VM_STATE_QUERY.format(ids=ids)):
            resource_id = str(row.get("id") or "")
            if resource_id.lower() not in chunk_set:
                continue
            code = _first(row, "powerState", ("properties", "extended", "instanceView", "powerState", "code"))
            tags = row.get("tags") or {}
            views[resource_id.lower()] = VmView(
                resource_id=resource_id,
                power_state=power_state_name(code),
                location=str(row.get("location") or ""),
                tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
            )
    return views


def query_all(graph: ResourceGraphClient, subscription_ids: Sequence[str], query: str) -> Iterator[dict[str, Any]]:
    """Run a Resource Graph query over the subscriptions, following every page."""
    skip_token: str | None = None
    while True:
        options = QueryRequestOptions(top=PAGE_SIZE, skip_token=skip_token, result_format=ResultFormat.OBJECT_ARRAY)
        response = graph.resources(QueryRequest(subscriptions=list(subscription_ids), query=query, options=options))
        data: Any = response.data or []
        if isinstance(data, dict):  # table format: turn columns/rows into objects
            columns = [c["name"] for c in data.get("columns", [])]
            data = [dict(zip(columns, row, strict=False)) for row in data.get("rows", [])]
        yield from (row for row in data if isinstance(row, dict))
        skip_token = response.skip_token
        if not skip_token:
            return


def _first(row: Mapping[str, Any], *paths: str | tuple[str, ...]) -> str:
    """The first non-empty value among projected columns or nested property paths."""
    for path in paths:
        value: Any = row
        for key in (path,) if isinstance(path, str) else path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value:
            return str(value)
    return ""


def _kql_literal(value: str) -> str:
    """Values we put in queries are ARM ids; refuse anything that could break out of a literal."""
    if "'" in value or "\\" in value or "\n" in value:
        raise ValueError(f"refusing to put {value!r} in a Resource Graph query")
    return value
