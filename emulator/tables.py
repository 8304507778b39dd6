"""Resource Graph table rows: VMs, Arc machines, managed disks, snapshots, applyUpdates runs, the
subscriptions (`resourcecontainers`) and patch installation results (patch_model.py).

The index lags by `graph_lag` simulated seconds: a VM shows its power state of that long ago, a
snapshot created through the API appears (and a deleted one disappears) only that much later, with
the provisioningState it had then. Seeded snapshots (`add_snapshot`) are indexed from the start.
Tags changed through the Tags API show that much later too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from typing import Any

from .clock import arm_time
from .disks import disk_properties, disk_state, sku_body, storage_profile
from .ids import TENANT_ID, parse_resource_id
from .kql import ParsedQuery
from .patch_model import patch_table_rows
from .power import ArcMachine, VirtualMachine
from .snapshot_model import Snapshot, snapshot_properties
from .state import EmulatorModel, MaintenanceRun

VM_TYPE = "microsoft.compute/virtualmachines"
ARC_TYPE = "microsoft.hybridcompute/machines"
DISK_TYPE = "microsoft.compute/disks"
SNAPSHOT_TYPE = "microsoft.compute/snapshots"
SUBSCRIPTION_TYPE = "microsoft.resources/subscriptions"
TYPE_ORDER = {VM_TYPE: 0, ARC_TYPE: 1, DISK_TYPE: 2, SNAPSHOT_TYPE: 3, SUBSCRIPTION_TYPE: 4}
_SUBSCRIPTION_OF = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)


def base_row(resource_id: str, type_: str, location: str, tags: dict[str, str] | None) -> dict[str, Any]:
    parts = parse_resource_id(resource_id)
    return {
        "id": resource_id,
        "name": parts["name"],
        "type": type_,
        "tenantId": TENANT_ID,
        "kind": "",
        "location": location,
        "resourceGroup": parts["rg"],
        "subscriptionId": parts["sub"],
        "managedBy": "",
        "sku": None,
        "plan": None,
        "tags": dict(tags) if tags is not None else None,
        "identity": None,
        "zones": None,
        "extendedLocation": None,
    }


def vm_row(vm: VirtualMachine, state: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """A `resources` row for a VM reporting power `state` and `tags` (default: its own), possibly stale:
    the index lags."""
    row = base_row(vm.id, VM_TYPE, vm.location, vm.tags if tags is None else tags)
    code = f"PowerState/{state}"
    row["properties"] = {
        "vmId": vm.vm_id,
        "hardwareProfile": {"vmSize": "Standard_B2s"},
        "storageProfile": storage_profile(vm),
        "provisioningState": "Succeeded",
        "extended": {"instanceView": {"powerState": {"code": code, "level": "Info", "displayStatus": f"VM {state}"}}},
    }
    row["powerState"] = code
    return row


def arc_row(machine: ArcMachine, tags: dict[str, str] | None = None) -> dict[str, Any]:
    row = base_row(machine.id, ARC_TYPE, machine.location, machine.tags if tags is None else tags)
    os_type = machine.os_type.lower()
    row["properties"] = {"status": machine.status, "osType": os_type, "osName": os_type,
                         "provisioningState": "Succeeded"}  # fmt: skip
    return row


def snapshot_row(model: EmulatorModel, snapshot: Snapshot, t: float) -> dict[str, Any]:
    """A `resources` row for a snapshot as the index saw it at simulated time `t`."""
    row = base_row(snapshot.id, SNAPSHOT_TYPE, snapshot.location, snapshot.tags)
    row["sku"] = sku_body(snapshot.sku)
    properties = snapshot_properties(model.clock, snapshot, t)
    row["properties"] = properties
    # Convenience columns, as if projected with tostring(properties.…).
    row.update(
        provisioningState=properties["provisioningState"],
        sourceResourceId=snapshot.source_id,
        timeCreated=properties["timeCreated"],
    )
    return row


def _vm_rows(model: EmulatorModel, now: float, t: float) -> Iterator[dict[str, Any]]:
    for vm in model.vms.values():
        vm.settle(now)
        yield vm_row(vm, vm.state_at(t), model.tags_at(vm.id, vm.tags, t))


def _arc_rows(model: EmulatorModel, now: float, t: float) -> Iterator[dict[str, Any]]:
    return (arc_row(machine, model.tags_at(machine.id, machine.tags, t)) for machine in model.arc_machines.values())


def _disk_rows(model: EmulatorModel, now: float, t: float) -> Iterator[dict[str, Any]]:
    for disk in model.disks.values():
        if disk.ephemeral:
            continue
        vm = model.vms.get(disk.vm_key)
        row = base_row(disk.id, DISK_TYPE, disk.location, {})
        row["sku"] = sku_body(disk.sku)
        row["managedBy"] = vm.id if vm else ""
        state = disk_state(vm, vm.state_at(t) if vm else None)
        row["properties"] = disk_properties(disk, state, model.clock.isoformat(disk.created))
        yield row


def _snapshot_rows(model: EmulatorModel, now: float, t: float) -> Iterator[dict[str, Any]]:
    model.settle_snapshots(now)
    for snapshot in [*model.snapshot_records.values(), *model.deleted_snapshot_records]:
        indexed = snapshot.seeded or snapshot.created <= t
        gone = snapshot.deleted_at is not None and snapshot.deleted_at <= t
        if indexed and not gone:
            yield snapshot_row(model, snapshot, t)


_RESOURCES: dict[str, Callable[[EmulatorModel, float, float], Iterator[dict[str, Any]]]] = {
    VM_TYPE: _vm_rows,
    ARC_TYPE: _arc_rows,
    DISK_TYPE: _disk_rows,
    SNAPSHOT_TYPE: _snapshot_rows,
}


def apply_update_rows(model: EmulatorModel, run: MaintenanceRun) -> list[dict[str, Any]]:
    """The `maintenanceresources` rows of one run, one per machine in its scope."""
    rows = []
    run_name = run.correlation_id.rstrip("/").rsplit("/", 1)[-1]
    updated = model.clock.isoformat(run.last_update)
    started = arm_time(run.window_start) if run.window_start else model.clock.isoformat(run.created)
    for machine_id in run.machine_ids:
        vm = model.vms.get(machine_id.lower())
        arc = model.arc_machines.get(machine_id.lower())
        location = vm.location if vm else arc.location if arc else ""
        row_id = f"{machine_id}/providers/Microsoft.Maintenance/applyUpdates/{run_name}"
        row = base_row(machine_id, "microsoft.maintenance/applyupdates", location, None)
        row.update(id=row_id, name=run_name)
        row["properties"] = {
            "correlationId": run.correlation_id,
            "resourceId": machine_id,
            "status": run.status,
            "maintenanceConfigurationId": run.maintenance_configuration_id,
            "startDateTime": started,
            "lastUpdateTime": updated,
        }
        row.update(resourceId=machine_id, correlationId=run.correlation_id, status=run.status)
        rows.append(row)
    return rows


def assignment_rows(model: EmulatorModel) -> list[dict[str, Any]]:
    """`maintenanceresources` rows of type configurationassignments: which machine uses which schedule."""
    rows = []
    for config_id, machine_ids in model.assignments.items():
        config_name = config_id.rsplit("/", 1)[-1]
        for machine_id in machine_ids:
            row = base_row(machine_id, "microsoft.maintenance/configurationassignments", "", None)
            row.update(id=f"{machine_id}/providers/Microsoft.Maintenance/configurationAssignments/{config_name}",
                       name=config_name)
            row["properties"] = {"maintenanceConfigurationId": config_id, "resourceId": machine_id}
            row.update(resourceId=machine_id, maintenanceConfigurationId=config_id)
            rows.append(row)
    return rows


def known_subscriptions(model: EmulatorModel) -> dict[str, tuple[str, str]]:
    """subscription id (lower) -> (id, display name): those added, then those of every seeded resource."""
    found = dict(model.subscriptions)
    subscriptions = [
        *(vm.subscription_id for vm in model.vms.values()),
        *(machine.subscription_id for machine in model.arc_machines.values()),
        *(disk.subscription_id for disk in model.disks.values()),
        *(s.subscription_id for s in [*model.snapshot_records.values(), *model.deleted_snapshot_records]),
    ]
    resource_ids: list[str] = []
    for run in model.runs.values():
        resource_ids.extend([run.correlation_id, run.maintenance_configuration_id, *run.machine_ids])
    for config_id, machine_ids in model.assignments.items():
        resource_ids.extend([config_id, *machine_ids])
    subscriptions.extend(m.group(1) for m in map(_SUBSCRIPTION_OF.match, resource_ids) if m)
    for subscription in subscriptions:
        found.setdefault(subscription.lower(), (subscription, subscription))
    return found


def subscription_rows(model: EmulatorModel, named: Collection[str] = ()) -> list[dict[str, Any]]:
    """The `resourcecontainers` rows of the subscriptions (resource groups are not emulated): those
    known, and those the query names. The emulator cannot tell a subscription without resources from
    one that does not exist; `readable_subscriptions` is what leaves a subscription out."""
    known = known_subscriptions(model)
    for subscription in named:
        known.setdefault(subscription.lower(), (subscription, subscription))
    rows = []
    for subscription, name in known.values():
        rows.append({
            "id": f"/subscriptions/{subscription}", "name": name, "type": SUBSCRIPTION_TYPE, "tenantId": TENANT_ID,
            "kind": "", "location": "", "resourceGroup": "", "subscriptionId": subscription, "managedBy": "",
            "sku": None, "plan": None, "tags": {}, "identity": None, "zones": None, "extendedLocation": None,
            "properties": {
                "state": "Enabled",
                "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "PayAsYouGo_2014-09-01",
                                         "spendingLimit": "Off"},
                "managementGroupAncestorsChain": [{"displayName": "Tenant Root Group", "name": TENANT_ID}],
            },
        })  # fmt: skip
    return rows


def _runs(model: EmulatorModel, parsed: ParsedQuery) -> list[MaintenanceRun]:
    """The runs a query can match: building rows only for the asked-for run keeps big scopes cheap."""
    for dotted in ("properties.correlationId", "correlationId"):
        values = parsed.values_of(dotted)
        if values is not None:
            return [model.runs[v.rstrip("/")] for v in values if v.rstrip("/") in model.runs]
    return list(model.runs.values())


def table_rows(
    model: EmulatorModel, parsed: ParsedQuery, now: float, subscriptions: Collection[str] = ()
) -> list[dict[str, Any]]:
    """The rows of the query's table, before filtering (only of the asked-for types, when it says);
    `subscriptions`: those the request names."""
    if parsed.table == "resourcecontainers":
        return subscription_rows(model, subscriptions)
    if parsed.table == "patchinstallationresources":
        return list(patch_table_rows(model.patch_results.values(), parsed, model.clock, now))
    if parsed.table == "maintenanceresources":
        runs = [row for run in _runs(model, parsed) for row in apply_update_rows(model, run)]
        return runs + assignment_rows(model)
    t = now - model.graph_lag
    types = parsed.values_of("type")
    return [row for type_, rows in _RESOURCES.items() if types is None or type_ in types for row in rows(model, now, t)]
