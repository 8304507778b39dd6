"""Microsoft.Compute disks: the disks of each VM, its storageProfile, and GET of a managed disk.

A VM's OS disk is one of three kinds:
- "managed": a disk resource `{vm}-osdisk` (GET-able, in Resource Graph, snapshot-able);
- "ephemeral": `diffDiskSettings.option = Local`; the VM reports a `managedDisk.id`, but there is no
  disk resource behind it (GET 404, not in Resource Graph, a snapshot of it is refused);
- "unmanaged": a page blob `https://<account>.blob.core.windows.net/vhds/{vm}.vhd`, no managedDisk.
Data disks `{vm}-datadisk-{i}` (lun i) are managed, except on a VM with an unmanaged OS disk,
where they are page blobs too (Azure does not mix the two on one VM).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from .messages import ArmError, Reply, error_reply
from .power import VirtualMachine

OS_DISK_KINDS = ("managed", "ephemeral", "unmanaged")
OS_DISK_GB = 30
DATA_DISK_GB = 64
# The marketplace image of a VM, by OS type, and its version as a disk's creationData names it.
_IMAGES = {
    "Linux": {"publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2",
              "version": "latest"},
    "Windows": {"publisher": "MicrosoftWindowsServer", "offer": "WindowsServer", "sku": "2022-datacenter-azure-edition",
                "version": "latest"},
}  # fmt: skip
_IMAGE_VERSIONS = {"Linux": "22.04.202501010", "Windows": "20348.2966.250104"}
_TIERS = {OS_DISK_GB: "P4", DATA_DISK_GB: "P6"}


@dataclass
class Disk:
    """A disk of a VM. `ephemeral` disks are only an id: no resource answers for them."""

    id: str
    subscription_id: str
    resource_group: str
    name: str
    location: str
    vm_key: str
    size_gb: int
    created: float
    lun: int | None = None  # None: the OS disk
    ephemeral: bool = False
    sku: str = "Premium_LRS"
    os_type: str = "Linux"  # of the VM; only an OS disk reports it
    unique_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def is_os(self) -> bool:
        return self.lun is None


def disk_id(vm: VirtualMachine, name: str) -> str:
    return (
        f"/subscriptions/{vm.subscription_id}/resourceGroups/{vm.resource_group}"
        f"/providers/Microsoft.Compute/disks/{name}"
    )


def os_disk_name(vm: VirtualMachine) -> str:
    return f"{vm.name}-osdisk"


def data_disk_name(vm: VirtualMachine, lun: int) -> str:
    return f"{vm.name}-datadisk-{lun}"


def vhd_uri(vm: VirtualMachine, name: str) -> str:
    """A page blob in the resource group's (made-up but stable) classic storage account."""
    digest = hashlib.sha256(f"{vm.subscription_id}/{vm.resource_group}".lower().encode()).hexdigest()
    return f"https://stvhds{digest[:12]}.blob.core.windows.net/vhds/{name}.vhd"


def make_disks(vm: VirtualMachine, now: float) -> list[Disk]:
    """The disk records of a new VM: managed disks and the id-only ephemeral OS disk."""
    if vm.os_disk == "unmanaged":
        return []
    sub, rg, vm_key = vm.subscription_id, vm.resource_group, vm.id.lower()
    os_name = os_disk_name(vm)
    ephemeral = vm.os_disk == "ephemeral"
    disks = [
        Disk(disk_id(vm, os_name), sub, rg, os_name, vm.location, vm_key, OS_DISK_GB, now, ephemeral=ephemeral,
             sku="Standard_LRS" if ephemeral else "Premium_LRS", os_type=vm.os_type)
    ]  # fmt: skip
    for lun in range(vm.data_disks):
        name = data_disk_name(vm, lun)
        disks.append(Disk(disk_id(vm, name), sub, rg, name, vm.location, vm_key, DATA_DISK_GB, now, lun=lun))
    return disks


def storage_profile(vm: VirtualMachine) -> dict[str, Any]:
    """`properties.storageProfile` as compute answers a VM GET (and Resource Graph shows it)."""
    name = os_disk_name(vm)
    os_disk: dict[str, Any] = {"osType": vm.os_type, "name": name, "createOption": "FromImage", "caching": "ReadWrite"}
    if vm.os_disk == "unmanaged":
        os_disk["vhd"] = {"uri": vhd_uri(vm, vm.name)}
    else:
        sku = "Premium_LRS"
        if vm.os_disk == "ephemeral":
            # Ephemeral OS disks live on the host's cache disk: ReadOnly caching only.
            os_disk.update(caching="ReadOnly", diffDiskSettings={"option": "Local", "placement": "CacheDisk"})
            sku = "Standard_LRS"
        os_disk["managedDisk"] = {"id": disk_id(vm, name), "storageAccountType": sku}
        os_disk["deleteOption"] = "Delete"
    os_disk["diskSizeGB"] = OS_DISK_GB
    data_disks = []
    for lun in range(vm.data_disks):
        data_name = data_disk_name(vm, lun)
        data: dict[str, Any] = {"lun": lun, "name": data_name, "createOption": "Empty", "caching": "ReadOnly"}
        if vm.os_disk == "unmanaged":
            data["vhd"] = {"uri": vhd_uri(vm, data_name)}
        else:
            data["managedDisk"] = {"id": disk_id(vm, data_name), "storageAccountType": "Premium_LRS"}
            data["deleteOption"] = "Detach"
        data.update(diskSizeGB=DATA_DISK_GB, toBeDetached=False, writeAcceleratorEnabled=False)
        data_disks.append(data)
    return {"imageReference": dict(_IMAGES[vm.os_type]), "osDisk": os_disk, "dataDisks": data_disks}


def disk_names(vm: VirtualMachine) -> list[str]:
    """Names of the VM's disks, OS first (the instance view lists them)."""
    return [os_disk_name(vm)] + [data_disk_name(vm, lun) for lun in range(vm.data_disks)]


def disk_state(vm: VirtualMachine | None, power_state: str | None) -> str:
    """diskState: Attached to a VM with a host, Reserved by a deallocated one, else Unattached."""
    if vm is None or power_state is None:
        return "Unattached"
    return "Reserved" if power_state == "deallocated" else "Attached"


def disk_properties(disk: Disk, state: str, time_created: str) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    if disk.is_os:
        source = _IMAGES[disk.os_type]
        image = (
            f"/Subscriptions/{disk.subscription_id}/Providers/Microsoft.Compute/Locations/{disk.location}"
            f"/Publishers/{source['publisher']}/ArtifactTypes/VMImage/Offers/{source['offer']}"
            f"/Skus/{source['sku']}/Versions/{_IMAGE_VERSIONS[disk.os_type]}"
        )
        properties.update(
            osType=disk.os_type,
            hyperVGeneration="V2",
            creationData={"createOption": "FromImage", "imageReference": {"id": image}},
        )
    else:
        properties["creationData"] = {"createOption": "Empty"}
    properties.update(
        diskSizeGB=disk.size_gb,
        diskIOPSReadWrite=120,
        diskMBpsReadWrite=25,
        encryption={"type": "EncryptionAtRestWithPlatformKey"},
        networkAccessPolicy="AllowAll",
        publicNetworkAccess="Enabled",
        timeCreated=time_created,
        provisioningState="Succeeded",
        diskState=state,
        diskSizeBytes=disk.size_gb * 1024**3,
        uniqueId=disk.unique_id,
        tier=_TIERS.get(disk.size_gb, "P10"),
    )
    return properties


def sku_body(name: str) -> dict[str, str]:
    return {"name": name, "tier": "Premium" if name.startswith("Premium") else "Standard"}


def disk_body(disk: Disk, vm: VirtualMachine | None, state: str, time_created: str) -> dict[str, Any]:
    """A Disk resource as compute answers a GET."""
    body: dict[str, Any] = {
        "name": disk.name,
        "id": disk.id,
        "type": "Microsoft.Compute/disks",
        "location": disk.location,
        "tags": {},
        "sku": sku_body(disk.sku),
        "properties": disk_properties(disk, state, time_created),
    }
    if vm is not None:
        body["managedBy"] = vm.id
    return body


def resource_not_found(type_name: str, resource_group: str, name: str) -> Reply:
    return error_reply(
        404,
        ArmError(
            "ResourceNotFound",
            f"The Resource 'Microsoft.Compute/{type_name}/{name}' under resource group '{resource_group}' was not "
            "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        ),
    )
