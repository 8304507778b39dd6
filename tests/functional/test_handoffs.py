"""The coordinator's hand-offs in blob storage (Azurite): what is stored is what a group reads,
and a blob that is not a hand-off of this run is refused, not half-used."""

from __future__ import annotations

import gzip
import uuid

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from emulator.azurite import Azurite
from handlers.adapters.handoffs import delete_handoffs, handoff_name, read_handoff, write_handoff
from handlers.adapters.inventory import DiskRef, MachineKind, RunMachine, VmView

pytestmark = pytest.mark.azurite

GROUP = "/subscriptions/00000000-0000-0000-0000-00000000000a/resourceGroups/rg/providers"
RUN = f"{GROUP}/Microsoft.Maintenance/maintenanceConfigurations/weekly/providers/Microsoft.Maintenance/applyUpdates/1"
VM = f"{GROUP}/Microsoft.Compute/virtualMachines/vm1"
ARC = f"{GROUP}/Microsoft.HybridCompute/machines/a1"


@pytest.fixture
def container(azurite: Azurite) -> ContainerClient:
    # A container that does not exist yet: the first hand-off creates it.
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    return service.get_container_client(f"handoff-{uuid.uuid4().hex[:12]}")


def test_a_group_reads_back_exactly_the_machines_and_views_it_was_handed(container: ContainerClient) -> None:
    machines = [RunMachine(VM, MachineKind.VM, "00000000-0000-0000-0000-00000000000a", "rg", "vm1"),
                RunMachine(ARC, MachineKind.ARC, "00000000-0000-0000-0000-00000000000a", "rg", "a1")]
    view = VmView(VM, "deallocated", "westeurope", {"Owner": "team-a", "maintenance-services": "nginx"},
                  (DiskRef("os", "vm1-os", f"{VM}-os"), DiskRef("data", "vm1-d0", "", vhd=True, lun=0)),
                  has_storage_profile=True, os_type="linux")
    write_handoff(container, RUN, "pre-lane-abc", machines, {VM.lower(): view, "/other": view})

    handed = read_handoff(container, RUN, "pre-lane-abc")

    assert handed == (machines, {VM.lower(): view}), "only the group's machines' views, unchanged"
    assert read_handoff(container, RUN, "pre-lane-other") is None
    assert delete_handoffs(container, RUN) == 1 and read_handoff(container, RUN, "pre-lane-abc") is None
    assert delete_handoffs(container, RUN) == 0


@pytest.mark.parametrize(("body", "problem"), [
    (b"not gzip", "not a gzip-compressed JSON document"),
    (gzip.compress(b'{"version": 2}'), "version 2, expected 1"),
    (gzip.compress(b'{"version": 1, "correlationId": "/another/run"}'), "it names another run"),
    (gzip.compress(f'{{"version": 1, "correlationId": "{RUN}", "machines": [["x", "vm"]], "views": []}}'.encode()),
     "a machine or view that does not parse"),
], ids=["not-gzip", "another-version", "another-run", "unparsable-machine"])
def test_a_blob_that_is_not_this_runs_hand_off_is_refused(container: ContainerClient, body: bytes,
                                                           problem: str) -> None:
    container.create_container()
    container.upload_blob(handoff_name(RUN, "pre-lane-abc"), body)

    with pytest.raises(ValueError, match=problem):
        read_handoff(container, RUN, "pre-lane-abc")
