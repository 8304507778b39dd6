"""AzureEmulator's public API for disks and snapshots: seeding old snapshots, observing them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .disks import Disk
from .ids import key
from .snapshot_model import Snapshot, invalid_name, summary
from .state import EmulatorModel

_SNAPSHOTS_PATH = "/providers/microsoft.compute/snapshots/"


def _os_type(disk: Disk | None) -> str | None:
    """A snapshot's osType: its source OS disk's (Linux when the source is gone), none for a data disk."""
    if disk is None:
        return "Linux"
    return disk.os_type if disk.is_os else None


class DiskApi(EmulatorModel):
    """Mixed into AzureEmulator (which inherits the model through ArmService)."""

    def add_snapshot(
        self,
        subscription_id: str,
        resource_group: str,
        name: str,
        *,
        source_disk_id: str,
        location: str = "westeurope",
        tags: Mapping[str, str] | None = None,
        incremental: bool = True,
        created_at: datetime | None = None,
    ) -> str:
        """Seed a Succeeded snapshot (say, of an older run); returns its ARM id.

        The source disk need not exist (it may have been deleted since). `created_at` (aware, or naive
        meaning UTC) sets `timeCreated`; by default now. Seeded snapshots are in Resource Graph at once.
        """
        error = invalid_name(name)
        if error is not None:
            raise ValueError(error.message)
        rid = (
            f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.Compute/snapshots/{name}"
        )
        with self.lock:
            now = self.clock.now()
            self.settle_snapshots(now)
            if key(rid) in self.snapshot_records:
                raise ValueError(f"snapshot already exists: {rid}")
            created = now
            if created_at is not None:
                aware = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
                created = (aware - self.clock.epoch).total_seconds()
            disk = self.disks.get(key(source_disk_id))
            snapshot = Snapshot(
                rid, subscription_id, resource_group, name, location, dict(tags or {}), source_id=source_disk_id,
                incremental=incremental, created=created, ready_at=created, size_gb=disk.size_gb if disk else 30,
                os_type=_os_type(disk), seeded=True,
            )  # fmt: skip
            if disk is not None:
                snapshot.source_unique_id = disk.unique_id
            self.snapshot_records[key(rid)] = snapshot
        return rid

    def snapshots(self) -> list[dict[str, Any]]:
        """Every snapshot that exists now, in creation order: id, name, resourceGroup, subscriptionId,
        location, tags, source, incremental, provisioningState, timeCreated."""
        with self.lock:
            now = self.clock.now()
            self.settle_snapshots(now)
            return [summary(self.clock, s, now) for s in self.snapshot_records.values()]

    def snapshot(self, resource_id: str) -> dict[str, Any] | None:
        """One snapshot as in `snapshots()`, or None when it does not exist (any id casing)."""
        with self.lock:
            now = self.clock.now()
            self.settle_snapshots(now)
            found = self.snapshot_records.get(key(resource_id))
            return summary(self.clock, found, now) if found else None

    def disk_ids(self, vm_resource_id: str) -> list[str]:
        """The ids of the VM's managed disk resources, OS disk first, then data disks by lun.

        An ephemeral OS disk (no resource) and unmanaged VHDs are not listed.
        """
        with self.lock:
            vm_key = key(self.find_vm(vm_resource_id).id)
            disks = [d for d in self.disks.values() if d.vm_key == vm_key and not d.ephemeral]
            return [d.id for d in sorted(disks, key=lambda d: -1 if d.lun is None else d.lun)]

    def snapshot_requests(self, name_contains: str | None = None, *, status: int | None = None) -> int:
        """How many snapshot PUTs were received (any outcome, unless `status`), for names containing
        `name_contains` (case-insensitive)."""
        needle = name_contains.lower() if name_contains else ""
        with self.lock:
            return sum(
                1
                for r in self.requests
                if r.method == "PUT"
                and _SNAPSHOTS_PATH in r.path.lower()
                and needle in r.path.lower().rsplit("/", 1)[-1]
                and (status is None or r.status == status)
            )
