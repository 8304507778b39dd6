"""Snapshots of managed disks and the disk-RP async operations that create and delete them.

Everything derives from simulated time, like the VM power operations: a snapshot is Creating until
`ready_at`, then Succeeded (or Failed when its creation was made to fail); a delete in flight shows
Deleting and removes the snapshot when it ends (lazily: readers call `settle_snapshots` first).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .clock import EmulatorClock, operation_status
from .disks import sku_body
from .messages import ArmError

# Microsoft.Compute/snapshots names: 1-80 characters, start alphanumeric, end alphanumeric or '_'.
SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?$")
SNAPSHOT_SKUS = ("Standard_LRS", "Premium_LRS", "Standard_ZRS")


def invalid_name(name: str) -> ArmError | None:
    """The ARM error for an invalid snapshot name, or None when it is valid."""
    if SNAPSHOT_NAME.match(name):
        return None
    return ArmError(
        "InvalidResourceName",
        f"Resource name {name} is invalid. The name can be up to 80 characters long. It must begin with a word "
        "character, and it must end with a word character or with '_'. The name may contain word characters or "
        "'.', '-', '_'.",
    )


@dataclass
class DiskOperation:
    """A disk-RP async operation (…/locations/{loc}/DiskOperations/{id}); kind: snapshot | deleteSnapshot."""

    id: str
    kind: str
    resource_key: str
    subscription_id: str
    location: str
    started: float
    ends: float
    error: ArmError | None = None

    def status(self, now: float) -> str:
        return operation_status(now, self.ends, failed=self.error is not None)


@dataclass
class Snapshot:
    """A Microsoft.Compute/snapshots resource. `seeded`: added by the test, already indexed by Resource Graph."""

    id: str
    subscription_id: str
    resource_group: str
    name: str
    location: str
    tags: dict[str, str]
    source_id: str
    incremental: bool
    created: float
    ready_at: float
    size_gb: int
    os_type: str | None = None
    sku: str = "Standard_LRS"
    error: ArmError | None = None
    seeded: bool = False
    deleting: DiskOperation | None = None
    deleted_at: float | None = None
    source_unique_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    unique_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def state_at(self, t: float) -> str:
        """provisioningState at simulated time `t`."""
        deleting = self.deleting
        if deleting is not None and deleting.started <= t < deleting.ends:
            return "Deleting"
        if t < self.ready_at:
            return "Creating"
        return "Failed" if self.error else "Succeeded"

    def completion_percent(self, t: float) -> float:
        if t >= self.ready_at or self.ready_at <= self.created:
            return 100.0
        return round(100.0 * max(0.0, t - self.created) / (self.ready_at - self.created), 1)


def settle_snapshots(snapshots: dict[str, Snapshot], tombstones: list[Snapshot], now: float,
                     deleting: dict[str, Snapshot]) -> None:
    """Apply every delete that has ended: a deleted snapshot moves to `tombstones` (Resource Graph lag).
    `deleting`: the snapshots with a delete in flight (only those are looked at: every snapshot
    request settles first, and a fleet's run holds thousands of snapshots)."""
    for snapshot_key, snapshot in list(deleting.items()):
        op = snapshot.deleting
        if op is not None and now < op.ends:
            continue
        del deleting[snapshot_key]
        snapshot.deleting = None
        if op is not None and op.error is None:
            snapshot.deleted_at = op.ends
            tombstones.append(snapshot)
            snapshots.pop(snapshot_key, None)


def snapshot_properties(clock: EmulatorClock, snapshot: Snapshot, t: float) -> dict[str, Any]:
    """`properties` of a snapshot as seen at simulated time `t`."""
    properties: dict[str, Any] = {}
    if snapshot.os_type:
        properties.update(osType=snapshot.os_type, hyperVGeneration="V2")
    properties.update(
        creationData={
            "createOption": "Copy",
            "sourceResourceId": snapshot.source_id,
            "sourceUniqueId": snapshot.source_unique_id,
        },
        diskSizeGB=snapshot.size_gb,
        encryption={"type": "EncryptionAtRestWithPlatformKey"},
        incremental=snapshot.incremental,
        networkAccessPolicy="AllowAll",
        publicNetworkAccess="Enabled",
        timeCreated=clock.isoformat(snapshot.created),
        provisioningState=snapshot.state_at(t),
        diskState="Unattached",
        diskSizeBytes=snapshot.size_gb * 1024**3,
        uniqueId=snapshot.unique_id,
    )
    if snapshot.incremental:
        # Incremental snapshots copy in the background and report their progress.
        properties["completionPercent"] = snapshot.completion_percent(t)
    return properties


def snapshot_body(clock: EmulatorClock, snapshot: Snapshot, t: float) -> dict[str, Any]:
    """A Snapshot resource as compute answers a GET (or a PUT)."""
    return {
        "name": snapshot.name,
        "id": snapshot.id,
        "type": "Microsoft.Compute/snapshots",
        "location": snapshot.location,
        "tags": dict(snapshot.tags),
        "sku": sku_body(snapshot.sku),
        "properties": snapshot_properties(clock, snapshot, t),
    }


def summary(clock: EmulatorClock, snapshot: Snapshot, now: float) -> dict[str, Any]:
    """What AzureEmulator.snapshots() reports for one snapshot."""
    return {
        "id": snapshot.id,
        "name": snapshot.name,
        "resourceGroup": snapshot.resource_group,
        "subscriptionId": snapshot.subscription_id,
        "location": snapshot.location,
        "tags": dict(snapshot.tags),
        "source": snapshot.source_id,
        "incremental": snapshot.incremental,
        "provisioningState": snapshot.state_at(now),
        "timeCreated": clock.isoformat(snapshot.created),
    }
