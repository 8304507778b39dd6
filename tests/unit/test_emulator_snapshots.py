"""Disks and snapshots in the Azure emulator, driven through the real SDK clients and policies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.pipeline.policies import RequestIdPolicy, RetryPolicy
from azure.core.rest import HttpRequest
from azure.identity import ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import CreationData, Snapshot, SnapshotProperties, SnapshotSku
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from emulator import AzureEmulator

BASE_URL = "https://management.emulator.test"
SCOPE = f"{BASE_URL}/.default"
SUB = "00000000-0000-0000-0000-000000000001"
RG = "rg-app"
DISKS = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/disks"
SNAPSHOTS = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/snapshots"
FAST_RETRY = {"retry_total": 30, "retry_status": 30, "retry_backoff_factor": 0.01}
MARKER = {"maintenance-toolkit": "snapshot"}
VM_TYPE, ARC_TYPE = "microsoft.compute/virtualmachines", "microsoft.hybridcompute/machines"
SNAPSHOT_ROWS = "resources | where type =~ 'microsoft.compute/snapshots'"
SOURCE = "project id, sourceResourceId = tostring(properties.creationData.sourceResourceId)"


@pytest.fixture
def emu() -> AzureEmulator:
    return AzureEmulator(time_scale=0.001)


@pytest.fixture
def credential(monkeypatch: pytest.MonkeyPatch, emu: AzureEmulator) -> Iterator[ManagedIdentityCredential]:
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT", "MSI_SECRET",
                 "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "test-header")
    with ManagedIdentityCredential(transport=emu.transport()) as cred:
        yield cred


def compute(emu: AzureEmulator, credential: Any, **kwargs: Any) -> ComputeManagementClient:
    return ComputeManagementClient(credential, SUB, base_url=BASE_URL, transport=emu.transport(), polling_interval=1,
                                   credential_scopes=[SCOPE], **kwargs)  # fmt: skip


def graph(emu: AzureEmulator, credential: Any) -> ResourceGraphClient:
    return ResourceGraphClient(credential, base_url=BASE_URL, transport=emu.transport(), credential_scopes=[SCOPE])


def arm(emu: AzureEmulator, credential: Any) -> ARMPipelineClient:
    policies = [RequestIdPolicy(), ARMChallengeAuthenticationPolicy(credential, SCOPE)]
    return ARMPipelineClient(base_url=BASE_URL, policies=policies, transport=emu.transport())


def query_all(client: ResourceGraphClient, query: str) -> tuple[list[dict[str, Any]], list[int]]:
    rows: list[dict[str, Any]] = []
    pages: list[int] = []
    skip_token: str | None = None
    while True:
        options = QueryRequestOptions(skip_token=skip_token, top=1000, result_format="objectArray")
        response = client.resources(QueryRequest(subscriptions=[SUB], query=query, options=options))
        rows.extend(cast(list[dict[str, Any]], response.data))
        pages.append(response.count)
        skip_token = response.skip_token
        if not skip_token:
            return rows, pages


def snapshot_body(source: str, *, location: str = "westeurope", tags: dict[str, str] | None = None) -> dict[str, Any]:
    properties = {"creationData": {"createOption": "Copy", "sourceResourceId": source}, "incremental": True}
    return {"location": location, "tags": tags or {}, "sku": {"name": "Standard_ZRS"}, "properties": properties}


# ----- disks -----------------------------------------------------------------------------


def test_vm_get_shows_storage_profile_for_each_disk_kind(
    emu: AzureEmulator, credential: ManagedIdentityCredential
) -> None:
    managed = emu.add_vm(SUB, RG, "vm-m", data_disks=2)
    emu.add_vm(SUB, RG, "vm-e", os_disk="ephemeral", data_disks=1, power_state="running")
    emu.add_vm(SUB, RG, "vm-u", os_disk="unmanaged", data_disks=1)
    client = compute(emu, credential)

    m, e, u = (client.virtual_machines.get(RG, n).properties.storage_profile for n in ("vm-m", "vm-e", "vm-u"))
    disk = client.disks.get(RG, "vm-m-osdisk")
    running_data = client.disks.get(RG, "vm-e-datadisk-0")
    rows, _ = query_all(graph(emu, credential), "resources | where type =~ 'microsoft.compute/disks'")
    vm_rows, _ = query_all(graph(emu, credential), f"resources | where id =~ '{managed}'")

    assert m.os_disk.managed_disk.id == f"{DISKS}/vm-m-osdisk" and m.os_disk.diff_disk_settings is None
    assert [(d.lun, d.managed_disk.id) for d in m.data_disks] == [(0, f"{DISKS}/vm-m-datadisk-0"),
                                                                 (1, f"{DISKS}/vm-m-datadisk-1")]  # fmt: skip
    assert e.os_disk.diff_disk_settings.option == "Local" and e.os_disk.managed_disk.id == f"{DISKS}/vm-e-osdisk"
    assert u.os_disk.managed_disk is None and u.os_disk.vhd.uri.endswith(".blob.core.windows.net/vhds/vm-u.vhd")
    assert u.data_disks[0].vhd.uri.endswith("/vhds/vm-u-datadisk-0.vhd") and u.data_disks[0].managed_disk is None
    assert emu.disk_ids(managed) == [f"{DISKS}/vm-m-osdisk", f"{DISKS}/vm-m-datadisk-0", f"{DISKS}/vm-m-datadisk-1"]
    assert emu.disk_ids(managed.replace("vm-m", "vm-e")) == [f"{DISKS}/vm-e-datadisk-0"]
    assert (disk.properties.disk_state, disk.properties.disk_size_gb, disk.managed_by) == ("Reserved", 30, managed)
    assert disk.properties.provisioning_state == "Succeeded" and disk.location == "westeurope"
    assert running_data.properties.disk_state == "Attached"
    assert sorted(r["name"] for r in rows) == ["vm-e-datadisk-0", "vm-m-datadisk-0", "vm-m-datadisk-1", "vm-m-osdisk"]
    assert vm_rows[0]["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"] == f"{DISKS}/vm-m-osdisk"
    with pytest.raises(ResourceNotFoundError):
        client.disks.get(RG, "vm-e-osdisk")  # an ephemeral OS disk is no resource


def test_agent_not_ready_on_a_running_vm(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    rid = emu.add_vm(SUB, RG, "vm1", power_state="running")
    client = compute(emu, credential)

    emu.set_agent_ready(rid, False)
    down = client.virtual_machines.instance_view(RG, "vm1").vm_agent
    emu.set_agent_ready(rid, True)
    up = client.virtual_machines.instance_view(RG, "vm1").vm_agent

    assert (down.statuses[0].code, down.statuses[0].display_status) == ("ProvisioningState/Unavailable", "Not Ready")
    assert (up.statuses[0].code, up.statuses[0].display_status) == ("ProvisioningState/succeeded", "Ready")


# ----- snapshots -------------------------------------------------------------------------


def test_snapshot_put_is_a_202_long_running_operation(
    emu: AzureEmulator, credential: ManagedIdentityCredential
) -> None:
    emu.add_vm(SUB, RG, "vm1")
    url = f"{BASE_URL}{SNAPSHOTS}/snap1?api-version=2024-03-02"

    response = arm(emu, credential).send_request(HttpRequest("PUT", url, json=snapshot_body(f"{DISKS}/vm1-osdisk")))

    assert response.status_code == 202
    assert "/DiskOperations/" in response.headers["Azure-AsyncOperation"]
    assert response.headers["Location"].endswith("&monitor=true")
    assert response.headers["x-ms-ratelimit-remaining-resource"].startswith("Microsoft.Compute/CreateUpdateDisks3Min;")
    assert response.json()["properties"]["provisioningState"] == "Creating"


def test_incremental_snapshot_succeeds_and_a_same_source_put_is_an_update(
    emu: AzureEmulator, credential: ManagedIdentityCredential
) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", data_disks=1)
    disk = emu.disk_ids(vm)[1]
    client = compute(emu, credential)
    model = Snapshot(location="westeurope", tags={**MARKER, "run": "1"}, sku=SnapshotSku(name="Standard_LRS"),
                     properties=SnapshotProperties(incremental=True,
                                                   creation_data=CreationData(create_option="Copy",
                                                                              source_resource_id=disk)))  # fmt: skip

    created = client.snapshots.begin_create_or_update(RG, "snap1", model).result(timeout=5)
    updated = client.snapshots.begin_create_or_update(RG, "snap1", snapshot_body(disk, tags={"run": "2"})).result()

    assert created.properties.provisioning_state == "Succeeded" and created.tags == {**MARKER, "run": "1"}
    assert created.properties.incremental and created.properties.disk_size_gb == 64
    assert created.properties.creation_data.source_resource_id == disk
    assert updated.tags == {"run": "2"} and updated.properties.time_created == created.properties.time_created
    assert [(s["name"], s["source"], s["provisioningState"]) for s in emu.snapshots()] == [("snap1", disk, "Succeeded")]
    assert emu.snapshot(f"{SNAPSHOTS}/SNAP1".lower())["tags"] == {"run": "2"}
    assert emu.snapshot_requests("snap1") == 2 and emu.count(method="PUT", path_contains="/snapshots/", status=202) == 1


def test_snapshot_of_another_source_under_the_same_name_conflicts(
    emu: AzureEmulator, credential: ManagedIdentityCredential
) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", data_disks=1)
    os_disk, data_disk = emu.disk_ids(vm)
    client = compute(emu, credential)
    client.snapshots.begin_create_or_update(RG, "snap1", snapshot_body(os_disk)).result(timeout=5)

    with pytest.raises(ResourceExistsError) as err:
        client.snapshots.begin_create_or_update(RG, "snap1", snapshot_body(data_disk))

    assert err.value.status_code == 409 and err.value.error.code == "PropertyChangeNotAllowed"
    assert emu.snapshot(f"{SNAPSHOTS}/snap1")["source"] == os_disk


@pytest.mark.parametrize(
    ("name", "source", "location", "status", "code"),
    [
        ("snap1", "vm1-osdisk", "northeurope", 400, "InvalidParameter"),
        ("snap1", "eph-osdisk", "westeurope", 400, "OperationNotAllowed"),
        ("snap1", "ghost-osdisk", "westeurope", 404, "NotFound"),
        ("-bad", "vm1-osdisk", "westeurope", 400, "InvalidResourceName"),
        ("x" * 81, "vm1-osdisk", "westeurope", 400, "InvalidResourceName"),
    ],
)
def test_snapshot_validation(
    emu: AzureEmulator, credential: ManagedIdentityCredential, name: str, source: str, location: str, status: int,
    code: str,
) -> None:  # fmt: skip
    emu.add_vm(SUB, RG, "vm1")
    emu.add_vm(SUB, RG, "eph", os_disk="ephemeral")

    with pytest.raises(HttpResponseError) as err:
        compute(emu, credential).snapshots.begin_create_or_update(
            RG, name, snapshot_body(f"{DISKS}/{source}", location=location)
        )

    assert (err.value.status_code, err.value.error.code) == (status, code)
    assert emu.snapshots() == []


def test_snapshot_failures_on_demand(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    disk = emu.disk_ids(vm)[0]
    client = compute(emu, credential)
    emu.fail("snapshot", f"{SNAPSHOTS}/snap1", status=403, code="AuthorizationFailed", times=1)
    emu.fail("snapshot", f"{SNAPSHOTS}/snap1", mode="operation", code="InternalDiskManagementError", times=1)

    with pytest.raises(HttpResponseError) as refused:
        client.snapshots.begin_create_or_update(RG, "snap1", snapshot_body(disk))
    poller = client.snapshots.begin_create_or_update(RG, "snap1", snapshot_body(disk))
    with pytest.raises(HttpResponseError) as failed:
        poller.result(timeout=5)
    state_after_failure = emu.snapshot(f"{SNAPSHOTS}/snap1")["provisioningState"]
    retried = client.snapshots.begin_create_or_update(RG, "snap1", snapshot_body(disk)).result(timeout=5)
    emu.fail("getSnapshot", status=503, code="ServiceUnavailable", times=1)
    emu.fail("deleteSnapshot", mode="operation", code="InternalError", times=1)
    emu.fail("disk", f"{disk}".upper(), status=403, code="AuthorizationFailed")

    assert (refused.value.status_code, refused.value.error.code) == (403, "AuthorizationFailed")
    assert failed.value.error.code == "InternalDiskManagementError" and state_after_failure == "Failed"
    assert retried.properties.provisioning_state == "Succeeded"
    assert client.snapshots.get(RG, "snap1").name == "snap1"  # the 503 is retried by the SDK
    with pytest.raises(HttpResponseError):
        client.snapshots.begin_delete(RG, "snap1").result(timeout=5)
    assert emu.snapshot(f"{SNAPSHOTS}/snap1")["provisioningState"] == "Succeeded"
    with pytest.raises(HttpResponseError) as forbidden:
        client.disks.get(RG, "vm1-osdisk")
    assert forbidden.value.status_code == 403
    with pytest.raises(ValueError):
        emu.fail("getSnapshot", mode="operation")


def test_delete_snapshot_and_delete_of_absent_snapshot(
    emu: AzureEmulator, credential: ManagedIdentityCredential
) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    emu.add_snapshot(SUB, RG, "old", source_disk_id=emu.disk_ids(vm)[0], tags=MARKER)
    client = compute(emu, credential)

    client.snapshots.begin_delete(RG, "old").result(timeout=5)
    client.snapshots.begin_delete(RG, "old").result(timeout=5)

    assert emu.snapshots() == []
    assert [r.status for r in emu.requests if r.method == "DELETE"] == [202, 204]
    with pytest.raises(ResourceNotFoundError):
        client.snapshots.get(RG, "old")


# ----- Resource Graph --------------------------------------------------------------------


def test_graph_finds_snapshots_by_tag_name_and_vms_by_type(
    emu: AzureEmulator, credential: ManagedIdentityCredential
) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    arc = emu.add_arc_machine(SUB, RG, "onprem1")
    disk = emu.disk_ids(vm)[0]
    week_ago = datetime.now(UTC) - timedelta(days=7)
    for i in range(1200):
        emu.add_snapshot(SUB, RG, f"mt-{i:04d}", source_disk_id=disk, tags={"Maintenance-Toolkit": "Snapshot"},
                         created_at=week_ago)  # fmt: skip
    emu.add_snapshot(SUB, "rg-other", "manual", source_disk_id=disk, tags={"owner": "ops"})
    client = graph(emu, credential)

    tagged, pages = query_all(client, f"{SNAPSHOT_ROWS} | where tags['maintenance-toolkit'] =~ 'snapshot'")
    named, _ = query_all(client, f"{SNAPSHOT_ROWS} | where name in~ ('MT-0007', 'manual', 'absent') | {SOURCE}")
    owned, _ = query_all(client, "resources | where isnotempty(tags['OWNER']) and resourceGroup =~ 'RG-OTHER'")
    # `==` on a tag in double quotes; what is inside not(...) is ignored, not inverted.
    same, _ = query_all(client, f"{SNAPSHOT_ROWS} | where tags[\"maintenance-toolkit\"] == 'snapshot' "
                                "and not(isnotempty(tags.x))")  # fmt: skip
    machines, _ = query_all(client, f"resources | where type in~ ('{VM_TYPE}', '{ARC_TYPE}') | project id, type")

    assert pages == [1000, 200] and len({r["id"] for r in tagged}) == 1200
    assert sorted(r["id"].rsplit("/", 1)[-1] for r in named) == ["manual", "mt-0007"]
    assert {r["sourceResourceId"] for r in named} == {disk}
    assert [r["name"] for r in owned] == ["manual"] and owned[0]["provisioningState"] == "Succeeded"
    assert len(same) == 1200
    assert [r["id"] for r in machines] == [vm, arc]
    assert tagged[0]["timeCreated"].startswith(week_ago.strftime("%Y-%m-%dT%H:%M"))


def test_graph_shows_created_and_deleted_snapshots_after_its_lag(
    emu: AzureEmulator, credential: ManagedIdentityCredential
) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    emu.graph_lag = 10_000.0
    client = compute(emu, credential)
    client.snapshots.begin_create_or_update(RG, "snap1", snapshot_body(emu.disk_ids(vm)[0])).result(timeout=5)
    query = f"{SNAPSHOT_ROWS} | project id, state = tostring(properties.provisioningState)"

    before, _ = query_all(graph(emu, credential), query)
    emu.clock.advance(10_000.0)
    after, _ = query_all(graph(emu, credential), query)
    client.snapshots.begin_delete(RG, "snap1").result(timeout=5)
    still, _ = query_all(graph(emu, credential), query)

    assert before == [] and [r["state"] for r in after] == ["Succeeded"]
    assert emu.snapshots() == [] and [r["state"] for r in still] == ["Succeeded"]


# ----- throttling ------------------------------------------------------------------------


def test_throttled_snapshot_writes_are_healed_by_sdk_retries(credential: ManagedIdentityCredential) -> None:
    emu = AzureEmulator(time_scale=0.001, throttling=True, buckets={"compute.snapshot.subscription": (2, 0.02)})
    emu.operation_durations["snapshot"] = 2.0
    vm = emu.add_vm(SUB, RG, "vm1", data_disks=3)
    client = compute(emu, credential, retry_policy=RetryPolicy(**FAST_RETRY))

    pollers = [
        client.snapshots.begin_create_or_update(RG, f"snap{i}", snapshot_body(disk))
        for i, disk in enumerate(emu.disk_ids(vm))
    ]
    results = [p.result(timeout=5) for p in pollers]

    assert [r.properties.provisioning_state for r in results] == ["Succeeded"] * 4
    assert emu.snapshot_requests(status=429) >= 2 and emu.snapshot_requests(status=202) == 4
    assert emu.count(method="PUT", path_contains="/snapshots/snap3", status=429) >= 1
