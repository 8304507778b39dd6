"""Transport-level faults between the SDK clients and the emulated ARM, and the `resourcecontainers`
table of Resource Graph: what the app sees, and what was applied behind it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RequestIdPolicy, RetryPolicy
from azure.core.rest import HttpRequest
from azure.identity import ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from emulator import AzureEmulator
from emulator.https_server import LoopbackEndpoints, serve_on_loopback

BASE_URL = "https://management.emulator.test"
SCOPE = f"{BASE_URL}/.default"
SUB = "00000000-0000-0000-0000-000000000001"
SUB2 = "00000000-0000-0000-0000-000000000002"
RG = "rg-app"
CONFIG_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-maint/providers/Microsoft.Maintenance/maintenanceConfigurations/weekly"
)
RUN_ID = f"{CONFIG_ID}/providers/Microsoft.Maintenance/applyUpdates/20250101020000"
RESET_MESSAGE = "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"
SUBSCRIPTIONS_QUERY = "resourcecontainers | where type =~ 'microsoft.resources/subscriptions' | project subscriptionId"


class StaticToken:
    """A credential that needs no token endpoint (the token endpoint is tested on its own)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", int(time.time()) + 3600)


@pytest.fixture
def emu() -> AzureEmulator:
    return AzureEmulator(time_scale=0.001)


def compute(emu: AzureEmulator, **kwargs: Any) -> ComputeManagementClient:
    return ComputeManagementClient(
        StaticToken(), SUB, base_url=BASE_URL, transport=emu.transport(), polling_interval=1,
        credential_scopes=[SCOPE], **kwargs,
    )  # fmt: skip


def arm(emu: AzureEmulator, *, retries: int = 0) -> ARMPipelineClient:
    policies: list[Any] = [RequestIdPolicy(), RetryPolicy(retry_total=retries, retry_backoff_factor=0.01)]
    policies.append(BearerTokenCredentialPolicy(StaticToken(), SCOPE))
    return ARMPipelineClient(base_url=BASE_URL, policies=policies, transport=emu.transport())


def get(client: ARMPipelineClient, resource_id: str) -> str:
    """One GET, as its outcome: the status, or which connection error it raised."""
    url = f"{BASE_URL}{resource_id}?api-version=2024-07-01"
    try:
        return str(client.send_request(HttpRequest("GET", url)).status_code)
    except ServiceRequestError:
        return "refused"
    except ServiceResponseError:
        return "reset"


def faults(emu: AzureEmulator) -> list[str]:
    return [r.fault for r in emu.requests]


def snapshot_body(source: str) -> dict[str, Any]:
    properties = {"creationData": {"createOption": "Copy", "sourceResourceId": source}, "incremental": True}
    return {"location": "westeurope", "properties": properties}


def query(emu: AzureEmulator, text: str, subscriptions: list[str], credential: Any = None) -> list[dict[str, Any]]:
    client = ResourceGraphClient(credential or StaticToken(), base_url=BASE_URL, transport=emu.transport(),
                                 credential_scopes=[SCOPE])  # fmt: skip
    options = QueryRequestOptions(result_format="objectArray")
    response = client.resources(QueryRequest(subscriptions=subscriptions, query=text, options=options))
    return cast(list[dict[str, Any]], response.data)


# ----- fail(): faults before the service -----------------------------------------------------


def test_reset_drops_a_start_before_it_reaches_arm(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    emu.fail("start", vm, mode="reset", times=1)

    with pytest.raises(ServiceResponseError) as raised:
        compute(emu).virtual_machines.begin_start(RG, "vm1")

    assert str(raised.value) == RESET_MESSAGE, "what RequestsTransport raises for urllib3's ProtocolError"
    assert emu.actions(vm) == []
    assert emu.vm_power_state(vm) == "PowerState/deallocated"
    [request] = emu.requests
    assert (request.method, request.status, request.fault) == ("POST", 0, "reset")


def test_refused_sends_nothing_and_is_retried_like_a_connect_error(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    emu.fail("get", vm, mode="refused", times=2)

    assert compute(emu).virtual_machines.get(RG, "vm1").name == "vm1"
    assert [(r.status, r.fault) for r in emu.requests] == [(0, "refused"), (0, "refused"), (200, "")]

    emu.fail("get", vm, mode="refused")
    with pytest.raises(ServiceRequestError, match=r"Connection refused") as raised:
        compute(emu, retry_total=1).virtual_machines.get(RG, "vm1")
    assert "Max retries exceeded with url: /subscriptions/" in str(raised.value)


def test_refused_power_post_is_not_retried_and_applies_nothing(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.fail("deallocate", vm, mode="refused", times=1)

    # azure-core retries a POST only on a 500/503/504 answer, never on a connection error.
    with pytest.raises(ServiceRequestError):
        compute(emu).virtual_machines.begin_deallocate(RG, "vm1")
    assert emu.actions(vm) == []
    assert emu.vm_power_state(vm) == "PowerState/running"


def test_reset_of_an_operation_status_poll_is_retried(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    emu.fail("operationStatus", vm, mode="reset", times=1)

    compute(emu).virtual_machines.begin_start(RG, "vm1").result(timeout=5)

    assert emu.vm_power_state(vm) == "PowerState/running"
    [poll] = [r for r in emu.requests if r.fault]
    assert (poll.method, poll.status, poll.fault) == ("GET", 0, "reset")
    assert "/operations/" in poll.path.lower()


def test_operation_status_faults_match_the_operations_vm(emu: AzureEmulator) -> None:
    vm, other = emu.add_vm(SUB, RG, "vm1"), emu.add_vm(SUB, RG, "vm2")
    emu.fail("operationStatus", other, status=503, code="ServiceUnavailable")

    compute(emu).virtual_machines.begin_start(RG, "vm1").result(timeout=5)

    assert emu.vm_power_state(vm) == "PowerState/running"
    assert faults(emu) == [""] * len(emu.requests)


# ----- fail(): faults after the service applied the request ----------------------------------


def test_lost_answer_starts_the_vm_and_a_repeated_start_joins_it(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    emu.fail("start", vm, mode="lost-answer", times=1)
    client = compute(emu)

    with pytest.raises(ServiceResponseError) as raised:
        client.virtual_machines.begin_start(RG, "vm1")
    assert str(raised.value) == RESET_MESSAGE
    assert emu.actions(vm) == ["start"]
    assert emu.vm_power_state(vm) == "PowerState/starting"

    client.virtual_machines.begin_start(RG, "vm1").result(timeout=5)

    assert emu.actions(vm) == ["start", "start"]
    assert emu.vm_state_changes(vm) == ["PowerState/deallocated", "PowerState/starting", "PowerState/running"]
    assert [(r.status, r.fault) for r in emu.requests][:2] == [(0, "lost-answer"), (202, "")]


def test_lost_answer_of_a_snapshot_put_is_retried_into_one_snapshot(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    [disk] = emu.disk_ids(vm)
    snapshot_id = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/snapshots/snap1"
    emu.fail("snapshot", snapshot_id, mode="lost-answer", times=1)

    # azure-core retries a PUT after a connection error; the second PUT finds the snapshot made.
    result = compute(emu).snapshots.begin_create_or_update(RG, "snap1", snapshot_body(disk)).result(timeout=5)

    assert result.provisioning_state == "Succeeded"
    assert [s["id"] for s in emu.snapshots()] == [snapshot_id]
    assert emu.snapshot_requests("snap1") == 2
    puts = [(r.status, r.fault) for r in emu.requests if r.method == "PUT"]
    assert puts == [(0, "lost-answer"), (200, "")]


def test_applied_error_on_a_start_is_retried_by_azure_core_and_joins(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    emu.fail("start", vm, mode="applied-error", status=500, times=1)

    compute(emu).virtual_machines.begin_start(RG, "vm1").result(timeout=5)

    assert emu.actions(vm) == ["start", "start"]
    assert emu.vm_state_changes(vm) == ["PowerState/deallocated", "PowerState/starting", "PowerState/running"]
    assert [(r.status, r.fault) for r in emu.requests][:2] == [(500, "applied-error"), (202, "")]


def test_applied_error_without_retries_reaches_the_caller_and_the_vm_still_starts(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    emu.operation_durations["start"] = 1.0
    emu.fail("start", vm, mode="applied-error", status=500, code="InternalServerError", message="lost it")

    with pytest.raises(HttpResponseError) as raised:
        compute(emu, retry_total=0).virtual_machines.begin_start(RG, "vm1")

    assert raised.value.status_code == 500
    assert raised.value.error is not None and raised.value.error.code == "InternalServerError"
    emu.clock.advance(2.0)
    assert emu.vm_power_state(vm) == "PowerState/running"


def test_after_service_faults_wait_for_a_request_the_service_applies(emu: AzureEmulator) -> None:
    rule = emu.fail("cancel", mode="lost-answer", times=1)
    client = arm(emu, retries=3)
    body = json.dumps({"properties": {"status": "Cancel"}})

    def cancel(correlation_id: str) -> int:
        url = f"{BASE_URL}{correlation_id}?api-version=2023-09-01-preview"
        return client.send_request(HttpRequest("PUT", url, content=body)).status_code

    assert cancel(RUN_ID) == 404, "nothing to apply: the refusal reaches the client, the rule stays armed"
    assert rule.fired == 0
    emu.add_run(RUN_ID, [])
    assert cancel(RUN_ID) == 200, "the lost answer is retried (a PUT) and the cancel is idempotent"
    assert rule.fired == 1
    assert emu.run_status(RUN_ID) == "Cancelled"
    assert [(r.status, r.fault) for r in emu.requests] == [(404, ""), (0, "lost-answer"), (200, "")]


def test_request_and_operation_modes_are_recorded(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    emu.fail("get", vm, status=409, code="Conflict", times=1)
    emu.fail("start", vm, mode="operation", code="AllocationFailed", times=1)

    assert get(arm(emu), vm) == "409"
    poller = compute(emu).virtual_machines.begin_start(RG, "vm1")
    with pytest.raises(HttpResponseError):
        poller.result(timeout=5)

    assert [r.fault for r in emu.requests][:2] == ["request", "operation"]


def test_fail_checks_its_mode(emu: AzureEmulator) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        emu.fail("start", mode="explode")
    with pytest.raises(ValueError, match="token endpoint"):
        emu.fail("token", mode="reset")
    with pytest.raises(ValueError, match="mode='operation'"):
        emu.fail("get", mode="operation")


# ----- the loopback HTTPS server -------------------------------------------------------------


@pytest.fixture
def loopback(emu: AzureEmulator) -> Iterator[LoopbackEndpoints]:
    endpoints = serve_on_loopback(emu)
    yield endpoints
    endpoints.close()


def test_loopback_server_closes_the_socket_without_an_answer(emu: AzureEmulator, loopback: LoopbackEndpoints) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.operation_durations["deallocate"] = 1.0
    client = ComputeManagementClient(
        StaticToken(), SUB, base_url=loopback.arm_endpoint, connection_verify=loopback.ca_bundle, polling_interval=1,
        credential_scopes=[SCOPE], retry_total=0,
    )  # fmt: skip
    emu.fail("get", vm, mode="reset", times=1)
    emu.fail("deallocate", vm, mode="lost-answer", times=1)

    with pytest.raises(ServiceResponseError, match="Connection aborted"):
        client.virtual_machines.get(RG, "vm1")
    assert client.virtual_machines.get(RG, "vm1").name == "vm1", "the next connection is served"
    with pytest.raises(ServiceResponseError, match="Connection aborted"):
        client.virtual_machines.begin_deallocate(RG, "vm1")

    emu.clock.advance(2.0)
    assert emu.actions(vm) == ["deallocate"]
    assert emu.vm_power_state(vm) == "PowerState/deallocated"
    assert [(r.status, r.fault) for r in emu.requests] == [(0, "reset"), (200, ""), (0, "lost-answer")]


# ----- inject_faults ---------------------------------------------------------------------------


def test_random_faults_are_deterministic_for_a_seed() -> None:
    def outcomes(seed: int) -> list[str]:
        emu = AzureEmulator(time_scale=0.001)
        vm = emu.add_vm(SUB, RG, "vm1")
        emu.inject_faults(0.3, seed=seed, kinds=("500", "502", "503", "504", "reset", "refused"))
        client = arm(emu)
        return [get(client, vm) for _ in range(200)]

    first, again, other = outcomes(7), outcomes(7), outcomes(8)

    assert first == again
    assert first != other
    assert set(first) == {"200", "500", "502", "503", "504", "reset", "refused"}


def test_random_faults_strike_at_the_rate_and_answer_like_arm(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    stats = emu.inject_faults(0.25, seed=11, kinds=("503", "reset"))
    client = arm(emu)
    url = f"{BASE_URL}{vm}?api-version=2024-07-01"

    answers: list[Any] = []
    for _ in range(2000):
        try:
            answers.append(client.send_request(HttpRequest("GET", url)))
        except ServiceResponseError as exc:
            answers.append(exc)

    unavailable = [a for a in answers if not isinstance(a, Exception) and a.status_code == 503]
    resets = [a for a in answers if isinstance(a, ServiceResponseError)]
    assert 400 <= stats.total <= 600
    assert stats.injected == {"503": len(unavailable), "reset": len(resets)}
    assert stats.applied == 0, "a GET applies nothing"
    assert sum(1 for r in emu.requests if r.fault) == stats.total
    assert all(r.status == 0 for r in emu.requests if r.fault == "reset")
    sample = unavailable[0]
    assert sample.json()["error"]["code"] == "ServiceUnavailable"
    assert "Retry-After" not in sample.headers
    assert all(str(e) == RESET_MESSAGE for e in resets)


def test_random_faults_spare_the_token_endpoint_and_other_operations(
    emu: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AZURE_CLIENT_ID", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "test-header")
    emu.add_vm(SUB, RG, "vm1")
    stats = emu.inject_faults(1.0, seed=1, kinds=("500",), operations={"graph"})

    with ManagedIdentityCredential(transport=emu.transport()) as credential:
        client = ComputeManagementClient(credential, SUB, base_url=BASE_URL, transport=emu.transport(),
                                         credential_scopes=[SCOPE])  # fmt: skip
        assert client.virtual_machines.get(RG, "vm1").name == "vm1"
        with pytest.raises(HttpResponseError) as raised:
            query(emu, "resources", [SUB], credential)

    assert raised.value.status_code == 500
    assert emu.token_requests >= 1
    assert stats.injected["500"] >= 1
    assert all(r.fault == "" for r in emu.requests if "resourcegraph" not in r.path.lower())


def test_applied_share_lets_writes_land_before_the_fault(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    stats = emu.inject_faults(1.0, seed=3, kinds=("reset",), operations={"start"}, applied_share=1.0)

    with pytest.raises(ServiceResponseError):
        compute(emu).virtual_machines.begin_start(RG, "vm1")

    assert emu.actions(vm) == ["start"]
    assert (stats.injected, stats.applied) == ({"reset": 1}, 1)
    assert faults(emu) == ["lost-answer"]

    emu.inject_faults(1.0, seed=3, kinds=("503",), operations={"deallocate"}, applied_share=1.0)
    with pytest.raises(HttpResponseError):
        compute(emu, retry_total=0).virtual_machines.begin_deallocate(RG, "vm1")
    assert emu.actions(vm) == ["start", "deallocate"]
    assert emu.requests[-1].fault == "applied-error"


def test_applied_share_never_applies_a_refusal_or_a_read(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    stats = emu.inject_faults(1.0, seed=5, kinds=("refused",), operations={"start"}, applied_share=1.0)
    with pytest.raises(ServiceRequestError):
        compute(emu).virtual_machines.begin_start(RG, "vm1")
    assert emu.actions(vm) == []
    assert stats.applied == 0

    stats = emu.inject_faults(1.0, seed=5, kinds=("reset",), operations={"get"}, applied_share=1.0)
    assert get(arm(emu), vm) == "reset"
    assert (stats.applied, emu.requests[-1].fault) == (0, "reset")


def test_an_applied_fault_on_a_refused_write_counts_as_not_applied(emu: AzureEmulator) -> None:
    stats = emu.inject_faults(1.0, seed=2, kinds=("500",), operations={"start"}, applied_share=1.0)

    with pytest.raises(HttpResponseError):
        compute(emu, retry_total=0).virtual_machines.begin_start(RG, "no-such-vm")

    assert (stats.injected, stats.applied) == ({"500": 1}, 0)
    assert faults(emu) == ["request"]


def test_random_faults_reach_status_polls_and_the_run_still_completes(emu: AzureEmulator) -> None:
    vms = [emu.add_vm(SUB, RG, f"vm{i}") for i in range(5)]
    stats = emu.inject_faults(0.3, seed=21, kinds=("503", "reset"), operations={"operationStatus", "get"})
    client = compute(emu)

    for i in range(5):
        client.virtual_machines.begin_start(RG, f"vm{i}").result(timeout=10)
        assert client.virtual_machines.get(RG, f"vm{i}").name == f"vm{i}"

    assert all(emu.vm_power_state(vm) == "PowerState/running" for vm in vms)
    assert stats.total > 0
    assert any("/operations/" in r.path.lower() for r in emu.requests if r.fault)
    assert not any(r.method == "POST" and r.fault for r in emu.requests), "starts were not in `operations`"


def test_random_faults_are_thread_safe(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    stats = emu.inject_faults(0.3, seed=4, kinds=("500", "reset", "refused"))

    def work(_: int) -> list[str]:
        client = arm(emu)
        return [get(client, vm) for _ in range(100)]

    with ThreadPoolExecutor(8) as pool:
        outcomes = [o for batch in pool.map(work, range(8)) for o in batch]

    assert len(emu.requests) == 800
    assert stats.total == sum(1 for o in outcomes if o != "200") == sum(1 for r in emu.requests if r.fault)
    assert stats.injected == {k: outcomes.count(k) for k in ("500", "reset", "refused")}


def test_clear_faults_disarms_and_keeps_the_counts(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    stats = emu.inject_faults(1.0, seed=9, kinds=("502",))
    client = arm(emu)
    assert get(client, vm) == "502"

    emu.clear_faults()

    assert [get(client, vm) for _ in range(20)] == ["200"] * 20
    assert stats.injected == {"502": 1}


def test_inject_faults_checks_its_arguments(emu: AzureEmulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        emu.inject_faults(0.1, seed=1, kinds=("418",))
    with pytest.raises(ValueError, match="rate"):
        emu.inject_faults(1.5, seed=1)
    with pytest.raises(ValueError, match="cannot inject faults into 'token'"):
        emu.inject_faults(0.1, seed=1, operations={"token"})
    with pytest.raises(ValueError, match="applied_share"):
        emu.inject_faults(0.1, seed=1, applied_share=-0.1)


# ----- Resource Graph: resourcecontainers ----------------------------------------------------


def test_resourcecontainers_lists_every_known_subscription(emu: AzureEmulator) -> None:
    subs = [f"00000000-0000-0000-0000-0000000000{i:02d}" for i in range(10, 17)]
    vm = emu.add_vm(subs[0], RG, "vm1")
    emu.add_arc_machine(subs[1], RG, "arc1")
    emu.add_snapshot(subs[2], RG, "old-snap", source_disk_id=emu.disk_ids(vm)[0])
    config = CONFIG_ID.replace(SUB, subs[3])
    arc_in_run = f"/subscriptions/{subs[4]}/resourceGroups/{RG}/providers/Microsoft.HybridCompute/machines/arc2"
    emu.add_run(f"{config}/providers/Microsoft.Maintenance/applyUpdates/20250101020000", [arc_in_run])
    emu.assign(CONFIG_ID.replace(SUB, subs[5]), ["not-an-arm-id"])
    emu.add_subscription(subs[6], name="Production")

    rows = query(emu, SUBSCRIPTIONS_QUERY, [])

    assert sorted(r["subscriptionId"] for r in rows) == subs
    by_id = {r["subscriptionId"]: r for r in rows}
    assert by_id[subs[6]]["name"] == "Production"
    assert by_id[subs[0]]["name"] == subs[0], "display name defaults to the id"
    row = by_id[subs[0]]
    assert row["id"] == f"/subscriptions/{subs[0]}"
    assert row["type"] == "microsoft.resources/subscriptions"
    assert row["properties"]["state"] == "Enabled"
    assert row["tenantId"]


def test_resourcecontainers_leaves_out_unrequested_and_unreadable_subscriptions(emu: AzureEmulator) -> None:
    third = "00000000-0000-0000-0000-000000000003"
    for sub in (SUB, SUB2, third):
        emu.add_subscription(sub)
    emu.readable_subscriptions = {SUB, SUB2}

    assert [r["subscriptionId"] for r in query(emu, SUBSCRIPTIONS_QUERY, [SUB, third])] == [SUB]
    assert sorted(r["subscriptionId"] for r in query(emu, SUBSCRIPTIONS_QUERY, [])) == [SUB, SUB2]


def test_resourcecontainers_honours_the_type_filter(emu: AzureEmulator) -> None:
    emu.add_vm(SUB, RG, "vm1")

    vms_query = "resourcecontainers | where type =~ 'microsoft.compute/virtualmachines'"
    assert query(emu, vms_query, [SUB]) == []
    assert [r["type"] for r in query(emu, "resourcecontainers", [SUB])] == ["microsoft.resources/subscriptions"]
    assert [r["type"] for r in query(emu, "resources", [SUB])].count("microsoft.resources/subscriptions") == 0


def test_resourcecontainers_shows_a_named_subscription_unless_it_is_unreadable(emu: AzureEmulator) -> None:
    # Nothing seeded: a tenant-wide query knows no subscription, but one the query names is readable
    # (the default identity reads everything) until readable_subscriptions leaves it out.
    assert query(emu, SUBSCRIPTIONS_QUERY, []) == []
    assert [(r["subscriptionId"], r["name"]) for r in query(emu, SUBSCRIPTIONS_QUERY, [SUB, SUB2])] == [
        (SUB, SUB), (SUB2, SUB2)
    ]
    emu.readable_subscriptions = {SUB2}
    assert [r["subscriptionId"] for r in query(emu, SUBSCRIPTIONS_QUERY, [SUB, SUB2])] == [SUB2]
