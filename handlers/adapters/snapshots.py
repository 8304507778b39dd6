"""Disk snapshots before the window: which disks, deterministic names, tags, and the requests.

A snapshot's name comes from its disk and the run, so a redelivered event or a retried worker
finds the snapshot it already made instead of making another. Existing snapshots are found in
bulk through Resource Graph; one of the same name from a different disk is an error, not a reuse.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute.models import CreationData, Snapshot, SnapshotProperties, SnapshotSku

from handlers.adapters.clients import ClientFactory
from handlers.adapters.inventory import (
    RunMachine,
    VmView,
    parse_storage_profile,
    query_all,
)
from handlers.adapters.operations import Operation, raw_response
from handlers.core.ids import name_of, parse_arm_id, resource_group_of, subscription_of
from handlers.core.keys import run_key
from handlers.core.settings import Settings
from handlers.core.telemetry import InvocationPool
from handlers.ledger.records import SnapshotRecord

MARKER_TAG = "maintenance-toolkit"
MARKER_VALUE = "snapshot"
RUN_TAG = "maintenance-run"
CORRELATION_TAG = "maintenance-correlation-id"
SOURCE_VM_TAG = "maintenance-source-vm"
SOURCE_DISK_TAG = "maintenance-source-disk"
EXPIRES_TAG = "maintenance-expires"
_TAG_VALUE_MAX = 256
_NAME_MAX = 80

EXISTING_QUERY = """resources
| where type =~ 'microsoft.compute/snapshots'
| where tags['""" + RUN_TAG + """'] =~ '{run}'
| project id, name, resourceGroup, subscriptionId, location, tags,
    provisioningState = tostring(properties.provisioningState),
    sourceResourceId = tostring(properties.creationData.sourceResourceId)"""


def snapshot_name(disk_id: str, correlation_id: str) -> str:
    """`mt-<disk name>-<run time>-<hash>`: valid for Azure (≤ 80 chars, [A-Za-z0-9_.-], ends
    alphanumeric) and the same for the same disk and run, whatever the casing of either id."""
    digest = hashlib.sha256(f"{disk_id.lower()}|{correlation_id.lower()}".encode()).hexdigest()[:8]
    run = name_of(correlation_id)
    # Lower case: ARM returns the same disk id in different casings in different places.
    disk = re.sub(r"[^a-z0-9_.-]", "-", name_of(disk_id).lower())
    room = _NAME_MAX - len(f"mt--{run}-{digest}")
    return f"mt-{disk[:room]}-{run}-{digest}"


def plan_snapshots(
    settings: Settings, correlation_id: str, machines: Sequence[RunMachine], views: dict[str, VmView]
) -> list[SnapshotRecord]:
    """One record per disk due a snapshot, and per disk (or machine) that is skipped, with why."""
    if settings.snapshot_disks == "none":
        return []
    records: list[SnapshotRecord] = []
    for machine in machines:
        if machine.kind.value == "arc":
            records.append(SnapshotRecord(disk_id=machine.resource_id, vm_id=machine.resource_id, role="machine",
                                          outcome="skipped",
                                          detail="Arc-enabled server: no Azure managed disks to snapshot"))
            continue
        if machine.kind.value != "vm":
            continue
        view = views.get(machine.resource_id.lower())
        if view is None:
            records.append(SnapshotRecord(disk_id=machine.resource_id, vm_id=machine.resource_id, outcome="failed",
                                          detail="the VM's disks could not be read"))
            continue
        if not view.has_storage_profile or not view.disks:
            records.append(SnapshotRecord(disk_id=machine.resource_id, vm_id=machine.resource_id, outcome="skipped",
                                          detail="the VM lists no disks in its storage profile"))
            continue
        disks = [d for d in view.disks if d.role == "os" or settings.snapshot_disks == "all"]
        for disk in disks:
            base = SnapshotRecord(disk_id=disk.managed_disk_id or f"{machine.resource_id}/{disk.role}/{disk.name}",
                                  vm_id=machine.resource_id, role=disk.role, location=view.location)
            if disk.ephemeral:
                records.append(replace(base, outcome="skipped", detail="ephemeral OS disk: nothing persistent"))
            elif disk.vhd or not disk.managed_disk_id:
                records.append(replace(base, outcome="skipped",
                                       detail="unmanaged (VHD) disk: snapshots need managed disks"))
            else:
                name = snapshot_name(disk.managed_disk_id, correlation_id)
                group = settings.snapshot_resource_group or resource_group_of(disk.managed_disk_id)
                subscription = subscription_of(disk.managed_disk_id)
                snapshot_id = (f"/subscriptions/{subscription}/resourceGroups/{group}"
                               f"/providers/Microsoft.Compute/snapshots/{name}")
                records.append(replace(base, snapshot_id=snapshot_id, snapshot_name=name,
                                       outcome="pending"))
    return records


def read_storage_profiles(
    clients: ClientFactory, machines: Sequence[RunMachine], views: dict[str, VmView], *, parallelism: int
) -> dict[str, VmView]:
    """Fill in the disks of VMs whose Resource Graph row had no storage profile, one GET each.

    Returns the views with those VMs' disks added (a VM whose GET fails keeps its old view).
    """
    missing = [m for m in machines if m.kind.value == "vm" and not (
        views.get(m.resource_id.lower()) or VmView("", "")).has_storage_profile]
    if not missing:
        return views

    def read(machine: RunMachine) -> tuple[str, VmView | None]:
        try:
            vm = clients.compute(machine.subscription_id).virtual_machines.get(machine.resource_group, machine.name)
        except HttpResponseError:
            return machine.resource_id.lower(), None
        old = views.get(machine.resource_id.lower())
        profile = vm.storage_profile.as_dict() if vm.storage_profile is not None else None
        return machine.resource_id.lower(), VmView(
            resource_id=old.resource_id if old else machine.resource_id,
            power_state=old.power_state if old else "",
            location=(old.location if old else "") or vm.location or "",
            tags=old.tags if old else dict(vm.tags or {}),
            disks=parse_storage_profile(profile) if profile else (),
            has_storage_profile=profile is not None,
        )

    updated = dict(views)
    with InvocationPool(max_workers=min(parallelism, len(missing)), thread_name_prefix="vm-get") as pool:
        for key, view in pool.map(read, missing):
            if view is not None:
                updated[key] = view
    return updated


def find_existing(
    clients: ClientFactory, subscription_ids: Sequence[str], correlation_id: str, records: Iterable[SnapshotRecord]
) -> dict[str, dict[str, Any]]:
    """Snapshots this run already made, keyed by lower-cased snapshot id: one Resource Graph query
    for the run's tag, whatever the fleet size. (A snapshot of our name made from another disk
    without our tag is refused by the PUT itself: the source of a snapshot cannot change.)"""
    wanted = {r.snapshot_id.lower() for r in records if r.snapshot_id}
    if not wanted:
        return {}
    query = EXISTING_QUERY.format(run=run_key(correlation_id))
    found: dict[str, dict[str, Any]] = {}
    for row in query_all(clients.resource_graph(), subscription_ids, query):
        key = str(row.get("id") or "").lower()
        if key in wanted:
            found[key] = row
    return found


def reconcile(record: SnapshotRecord, existing: dict[str, Any] | None) -> SnapshotRecord:
    """What to do about a planned snapshot given the one of that name that already exists."""
    if existing is None:
        return record
    source = str(existing.get("sourceResourceId") or
                 ((existing.get("properties") or {}).get("creationData") or {}).get("sourceResourceId") or "")
    if source and source.lower() != record.disk_id.lower():
        return replace(record, outcome="failed",
                       detail=f"a snapshot named {record.snapshot_name} already exists from another disk ({source})")
    state = str(existing.get("provisioningState") or "").lower()
    if state == "succeeded":
        return replace(record, outcome="reused", detail="made by an earlier delivery of this event")
    return record  # still being created (or failed): sending the same PUT again waits for it or retries it


def snapshot_operation(
    clients: ClientFactory, settings: Settings, record: SnapshotRecord, *, correlation_id: str, now: datetime
) -> Operation:
    """The PUT that makes one incremental (or full) snapshot, tagged so retention can find it."""
    snapshot = parse_arm_id(record.snapshot_id)
    subscription, group = snapshot.subscription, snapshot.resource_group
    expires = now + timedelta(days=settings.snapshot_retention_days)
    tags = {
        MARKER_TAG: MARKER_VALUE,
        RUN_TAG: run_key(correlation_id),
        CORRELATION_TAG: _tag_value(correlation_id),
        SOURCE_VM_TAG: _tag_value(record.vm_id),
        SOURCE_DISK_TAG: _tag_value(record.disk_id),
        EXPIRES_TAG: expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    body = Snapshot(
        location=record.location,
        tags=tags,
        properties=SnapshotProperties(
            creation_data=CreationData(create_option="Copy", source_resource_id=record.disk_id),
            incremental=settings.snapshot_incremental,
        ),
        sku=None if settings.snapshot_incremental else SnapshotSku(name="Standard_LRS"),
    )

    def send() -> Any:
        snapshots = clients.compute(subscription).snapshots
        return snapshots.begin_create_or_update(group, record.snapshot_name, body, polling=False,
                                                cls=raw_response).result()

    return Operation(key=record.row_key(), resource_id=record.snapshot_id, action="snapshot", send=send)


def _tag_value(value: str) -> str:
    # Azure refuses tag values over 256 characters; ids that long are rare, keep their tail.
    return value if len(value) <= _TAG_VALUE_MAX else "..." + value[-(_TAG_VALUE_MAX - 3):]
