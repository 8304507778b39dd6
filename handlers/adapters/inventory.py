"""Which machines a run covers, and their power state, from Azure Resource Graph in bulk.

Resource Graph is an index that can lag the resources by minutes: it is used here to find
machines and their state *before* acting, never to confirm an action's result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions, ResultFormat

from handlers.core.ids import is_top_level_resource_id, parse_arm_id, resource_group_of

PAGE_SIZE = 1000
IDS_PER_QUERY = 200  # keeps each query well under Resource Graph's request size limit

RUN_MACHINES_QUERY = """maintenanceresources
| where type =~ 'microsoft.maintenance/applyupdates'
| where properties.correlationId =~ '{correlation_id}'
| project id, resourceId = tostring(properties.resourceId), correlationId = tostring(properties.correlationId)"""

ASSIGNED_MACHINES_QUERY = """maintenanceresources
| where type =~ 'microsoft.maintenance/configurationassignments'
| where properties.maintenanceConfigurationId =~ '{configuration_id}'
| project id, resourceId = tostring(properties.resourceId)"""

SUBSCRIPTIONS_QUERY = """resourcecontainers
| where type =~ 'microsoft.resources/subscriptions'
| project subscriptionId"""

MACHINE_QUERY = """resources
| where type in~ ('microsoft.compute/virtualmachines', 'microsoft.hybridcompute/machines')
| where {field} in~ ({values})
| project id, name, type, location, resourceGroup, subscriptionId, tags,
    powerState = tostring(properties.extended.instanceView.powerState.code),
    storageProfile = properties.storageProfile,
    osType = tostring(properties.storageProfile.osDisk.osType),
    arcOsType = tostring(properties.osType),
    arcStatus = tostring(properties.status)"""


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
class DiskRef:
    """A disk as the VM's storage profile names it."""

    role: str  # "os" | "data"
    name: str
    managed_disk_id: str  # "" for an unmanaged (VHD) disk
    ephemeral: bool = False
    vhd: bool = False
    lun: int | None = None


@dataclass(frozen=True)
class VmView:
    """What Resource Graph last saw of a machine (a VM, or an Arc server's tags)."""

    resource_id: str
    power_state: str  # "running", "deallocated", ... ("" when Resource Graph has none)
    location: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    disks: tuple[DiskRef, ...] = ()
    has_storage_profile: bool = False
    os_type: str = ""  # "linux" | "windows" | "" (unknown)
    arc_status: str = ""  # an Arc server's agent: "connected", "disconnected", "expired"; "" for a VM


def power_state_name(code: str | None) -> str:
    """'PowerState/deallocated' -> 'deallocated' (lower case; '' for nothing)."""
    if not code:
        return ""
    return code.rsplit("/", 1)[-1].strip().lower()


def describe_machine(resource_id: str) -> RunMachine | None:
    """Classify an ARM id; None when it is not a well-formed machine id."""
    if not is_top_level_resource_id(resource_id):
        return None
    parsed = parse_arm_id(resource_id)
    kind = {
        "microsoft.compute/virtualmachines": MachineKind.VM,
        "microsoft.hybridcompute/machines": MachineKind.ARC,
    }.get(parsed.type, MachineKind.OTHER)
    return RunMachine(resource_id, kind, parsed.subscription, parsed.resource_group, parsed.name)




def find_run_machines(
    graph: ResourceGraphClient, subscription_ids: Sequence[str], correlation_id: str, *,
    log: logging.LoggerAdapter[Any], options: Mapping[str, Any] | None = None,
) -> list[RunMachine]:
    """Every machine whose applyUpdates record carries this run's correlation id."""
    query = RUN_MACHINES_QUERY.format(correlation_id=kql_literal(correlation_id))
    rows = (row for row in query_all(graph, subscription_ids, query, options=options)
            if _first(row, "correlationId", ("properties", "correlationId")).lower() in ("", correlation_id.lower()))
    return _machines_of(rows, log, "applyUpdates record %s names no machine id we recognise: %r")


def find_unreadable_subscriptions(
    graph: ResourceGraphClient, subscription_ids: Sequence[str], *, options: Mapping[str, Any] | None = None
) -> list[str]:
    """The subscriptions (lower-case) Resource Graph does not show us: without read access it
    returns nothing for them rather than an error, so their machines would silently be missing."""
    seen = {str(row.get("subscriptionId") or "").lower()
            for row in query_all(graph, subscription_ids, SUBSCRIPTIONS_QUERY, options=options)}
    return [sub.lower() for sub in subscription_ids if sub.lower() not in seen]


def find_assigned_machines(
    graph: ResourceGraphClient, subscription_ids: Sequence[str], configuration_id: str,
    *, log: logging.LoggerAdapter[Any],
) -> list[RunMachine]:
    """Machines statically assigned to a maintenance configuration (for a run that has not happened yet).

    Dynamic scopes are assigned at subscription level and name no machine: they are reported and
    left out, since only a real run says which machines they matched.
    """
    query = ASSIGNED_MACHINES_QUERY.format(configuration_id=kql_literal(configuration_id))
    return _machines_of(query_all(graph, subscription_ids, query), log,
                        "assignment %s is not of a machine (a dynamic scope?): %s")


def _machines_of(rows: Iterable[dict[str, Any]], log: logging.LoggerAdapter[Any], problem: str) -> list[RunMachine]:
    """The machines the rows' `resourceId`s name, once each, in order; `problem` is logged (with the
    row's id and the value) for a row that names none."""
    machines: dict[str, RunMachine] = {}
    for row in rows:
        resource_id = _first(row, "resourceId", ("properties", "resourceId")).rstrip("/")
        machine = describe_machine(resource_id) if resource_id else None
        if machine is None:
            log.warning(problem, row.get("id"), resource_id)
            continue
        machines.setdefault(machine.resource_id.lower(), machine)
    return list(machines.values())


def get_vm_views(
    graph: ResourceGraphClient, subscription_ids: Sequence[str], resource_ids: Iterable[str], *,
    options: Mapping[str, Any] | None = None, keep: Callable[[VmView], bool] | None = None,
) -> dict[str, VmView]:
    """Power state, location, tags and disks of many machines, keyed by lower-cased id, in few
    queries; with `keep`, only the views it keeps (the others are not held)."""
    wanted = sorted({rid.lower() for rid in resource_ids})
    if len(wanted) <= IDS_PER_QUERY:
        queries = [("id", wanted)]
    else:
        # A big fleet: ask by resource group (pages of 1000 rows) instead of by id (200 per
        # query), and keep only the run's machines. Far fewer queries against the 15 per 5 s.
        groups = sorted({resource_group_of(rid) for rid in wanted})
        queries = [("resourceGroup", groups[i : i + IDS_PER_QUERY]) for i in range(0, len(groups), IDS_PER_QUERY)]
    wanted_set = set(wanted)
    views: dict[str, VmView] = {}
    for field_name, values in queries:
        literals = ", ".join(f"'{kql_literal(value)}'" for value in values)
        query = MACHINE_QUERY.format(field=field_name, values=literals)
        for row in query_all(graph, subscription_ids, query, options=options):
            resource_id = str(row.get("id") or "")
            if resource_id.lower() not in wanted_set:
                continue
            code = _first(row, "powerState", ("properties", "extended", "instanceView", "powerState", "code"))
            tags = row.get("tags") or {}
            profile = row.get("storageProfile") or (row.get("properties") or {}).get("storageProfile")
            view = VmView(
                resource_id=resource_id,
                power_state=power_state_name(code),
                location=str(row.get("location") or ""),
                tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
                disks=parse_storage_profile(profile) if isinstance(profile, Mapping) else (),
                has_storage_profile=isinstance(profile, Mapping),
                os_type=_first(row, "osType", "arcOsType", ("properties", "storageProfile", "osDisk", "osType"),
                               ("properties", "osType")).lower(),
                arc_status=_first(row, "arcStatus", ("properties", "status")).lower()
                if "hybridcompute" in str(row.get("type") or "").lower() else "",
            )
            if keep is None or keep(view):
                views[resource_id.lower()] = view
    return views


def parse_storage_profile(profile: Mapping[str, Any]) -> tuple[DiskRef, ...]:
    """The VM's disks, OS disk first, from `properties.storageProfile`."""
    disks: list[DiskRef] = []
    os_disk = profile.get("osDisk") or {}
    if isinstance(os_disk, Mapping) and os_disk:
        disks.append(_disk("os", os_disk))
    for data_disk in profile.get("dataDisks") or []:
        if isinstance(data_disk, Mapping):
            disks.append(_disk("data", data_disk))
    return tuple(disks)


def _disk(role: str, disk: Mapping[str, Any]) -> DiskRef:
    managed = disk.get("managedDisk") or {}
    diff = disk.get("diffDiskSettings") or {}
    lun = disk.get("lun")
    return DiskRef(
        role=role,
        name=str(disk.get("name") or ""),
        managed_disk_id=str(managed.get("id") or "") if isinstance(managed, Mapping) else "",
        ephemeral=bool(isinstance(diff, Mapping) and diff.get("option")),
        vhd=bool(disk.get("vhd")),
        lun=int(lun) if isinstance(lun, int) else None,
    )


def query_all(
    graph: ResourceGraphClient, subscription_ids: Sequence[str] | None, query: str, *,
    options: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Run a Resource Graph query over the subscriptions (None: every one the identity can read),
    following every page. `options` go to the pipeline (e.g. `timeout`, the seconds the retry
    policy may keep trying)."""
    skip_token: str | None = None
    while True:
        paging = QueryRequestOptions(top=PAGE_SIZE, skip_token=skip_token, result_format=ResultFormat.OBJECT_ARRAY)
        subscriptions = None if subscription_ids is None else list(subscription_ids)
        request = QueryRequest(subscriptions=subscriptions, query=query, options=paging)
        response = graph.resources(request, **dict(options or {}))
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


def kql_literal(value: str) -> str:
    """Values we put in queries are ARM ids; refuse anything that could break out of a literal."""
    if "'" in value or "\\" in value or "\n" in value:
        raise ValueError(f"refusing to put {value!r} in a Resource Graph query")
    return value
