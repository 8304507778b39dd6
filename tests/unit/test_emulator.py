"""The Azure emulator, driven through the real SDK clients and their real policies."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.policies import RequestIdPolicy, RetryPolicy
from azure.core.pipeline.transport import HttpRequest as LegacyHttpRequest
from azure.core.rest import HttpRequest
from azure.identity import ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from emulator import AzureEmulator

BASE_URL = "https://management.emulator.test"
SCOPE = f"{BASE_URL}/.default"
SUB = "00000000-0000-0000-0000-000000000001"
SUB2 = "00000000-0000-0000-0000-000000000002"
RG = "rg-app"
CONFIG_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-maint/providers/Microsoft.Maintenance/maintenanceConfigurations/weekly"
)
RUN_ID = f"{CONFIG_ID}/providers/Microsoft.Maintenance/applyUpdates/20250101020000"
CANCEL_API = "2023-09-01-preview"
FAST_RETRY = {"retry_total": 20, "retry_status": 20, "retry_backoff_factor": 0.01}
APPLY_UPDATES_QUERY = """maintenanceresources
| where type =~ 'microsoft.maintenance/applyupdates'
| where properties.correlationId =~ '{cid}'
| project id, resourceId = tostring(properties.resourceId)"""


@pytest.fixture
def emu() -> AzureEmulator:
    return AzureEmulator(time_scale=0.001)


@pytest.fixture
def credential(monkeypatch: pytest.MonkeyPatch, emu: AzureEmulator) -> Iterator[ManagedIdentityCredential]:
    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "IMDS_ENDPOINT",
        "IDENTITY_SERVER_THUMBPRINT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "test-header")
    with ManagedIdentityCredential(transport=emu.transport()) as cred:
        yield cred


def compute(emu: AzureEmulator, credential: Any, **kwargs: Any) -> ComputeManagementClient:
    return ComputeManagementClient(
        credential,
        SUB,
        base_url=BASE_URL,
        transport=emu.transport(),
        polling_interval=1,
        credential_scopes=[SCOPE],
        **kwargs,
    )


def resource_graph(emu: AzureEmulator, credential: Any, **kwargs: Any) -> ResourceGraphClient:
    return ResourceGraphClient(
        credential, base_url=BASE_URL, transport=emu.transport(), credential_scopes=[SCOPE], **kwargs
    )


def arm(emu: AzureEmulator, credential: Any, *, retry: bool = True) -> ARMPipelineClient:
    policies: list[Any] = [RequestIdPolicy()]
    if retry:
        policies.append(RetryPolicy(**FAST_RETRY))
    if credential is not None:
        policies.append(ARMChallengeAuthenticationPolicy(credential, SCOPE))
    return ARMPipelineClient(base_url=BASE_URL, policies=policies, transport=emu.transport())


def query_all(
    client: ResourceGraphClient, query: str, subscriptions: list[str]
) -> tuple[list[dict[str, Any]], list[int]]:
    rows: list[dict[str, Any]] = []
    pages: list[int] = []
    skip_token: str | None = None
    while True:
        options = QueryRequestOptions(skip_token=skip_token, top=1000, result_format="objectArray")
        response = client.resources(QueryRequest(subscriptions=subscriptions, query=query, options=options))
        assert response.count == len(response.data)
        rows.extend(cast(list[dict[str, Any]], response.data))
        pages.append(response.count)
        skip_token = response.skip_token
        if not skip_token:
            return rows, pages


def cancel(client: ARMPipelineClient, correlation_id: str, body: Any) -> Any:
    url = f"{BASE_URL}{correlation_id}?api-version={CANCEL_API}"
    return client.send_request(HttpRequest("PUT", url, json=body))


# ----- identity and authentication --------------------------------------------------


def test_managed_identity_token_is_issued_once_and_cached(
    emu: AzureEmulator, credential: ManagedIdentityCredential
) -> None:
    first = credential.get_token(SCOPE)
    second = credential.get_token(SCOPE)

    assert first.token.startswith("emulator-token-")
    assert second.token == first.token
    assert emu.token_requests == 1


def test_token_endpoint_requires_identity_header(emu: AzureEmulator) -> None:
    url = "http://127.0.0.1:41741/msi/token?api-version=2019-08-01&resource=x"
    response = emu.transport().send(HttpRequest("GET", url))

    assert response.status_code == 400


def test_arm_request_without_bearer_token_is_401(emu: AzureEmulator) -> None:
    rid = emu.add_vm(SUB, RG, "vm1")
    client = arm(emu, None, retry=False)

    response = client.send_request(HttpRequest("GET", f"{BASE_URL}{rid}?api-version=2024-07-01"))

    assert response.status_code == 401
    assert emu.count(status=401) == 1


# ----- Resource Graph ----------------------------------------------------------------


def test_graph_pages_2500_rows_with_skip_tokens(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    machines = [
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/vm{i:04d}"
        for i in range(2500)
    ]
    emu.add_run(RUN_ID, machines)
    emu.add_run(RUN_ID[:-1] + "9", machines[:3])  # another run: must not leak in

    rows, pages = query_all(resource_graph(emu, credential), APPLY_UPDATES_QUERY.format(cid=RUN_ID.lower()), [SUB])

    assert pages == [1000, 1000, 500]
    assert sorted(row["resourceId"] for row in rows) == sorted(machines)
    first = rows[0]
    assert first["id"] == f"{first['resourceId']}/providers/Microsoft.Maintenance/applyUpdates/20250101020000"
    assert first["properties"]["status"] == "Pending"
    assert first["properties"]["maintenanceConfigurationId"] == CONFIG_ID


def test_graph_leaves_out_unreadable_subscriptions(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    mine = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.add_vm(SUB, RG, "vm2")
    theirs = emu.add_vm(SUB2, RG, "vm3")
    arc = emu.add_arc_machine(SUB, RG, "onprem1")
    emu.readable_subscriptions = {SUB}
    client = resource_graph(emu, credential)

    query = (
        "resources | where type =~ 'microsoft.compute/virtualmachines' "
        f"| where id in~ ('{mine.lower()}', '{theirs.upper()}') "
        "| project id, powerState = tostring(properties.extended.instanceView.powerState.code)"
    )
    rows, _ = query_all(client, query, [SUB, SUB2])
    arcs, _ = query_all(client, "resources | where type =~ 'microsoft.hybridcompute/machines'", [SUB])

    assert [(r["id"], r["powerState"]) for r in rows] == [(mine, "PowerState/running")]
    assert [(r["id"], r["properties"]["status"]) for r in arcs] == [(arc, "Connected")]


def test_graph_reports_power_state_with_lag(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    rid = emu.add_vm(SUB, RG, "vm1")
    emu.graph_lag = 10_000.0
    emu.operation_durations["start"] = 5.0
    compute(emu, credential).virtual_machines.begin_start(RG, "vm1").result()
    client = resource_graph(emu, credential)
    query = f"resources | where id =~ '{rid}'"

    stale, _ = query_all(client, query, [SUB])
    emu.clock.advance(10_000.0)
    fresh, _ = query_all(client, query, [SUB])

    assert emu.vm_power_state(rid) == "PowerState/running"
    assert stale[0]["properties"]["extended"]["instanceView"]["powerState"]["code"] == ("PowerState/deallocated")
    assert fresh[0]["powerState"] == "PowerState/running"


# ----- VM power ----------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", [None, 10.0])
def test_begin_start_polls_to_succeeded_and_vm_runs(
    emu: AzureEmulator, credential: ManagedIdentityCredential, retry_after: float | None
) -> None:
    emu.poll_retry_after = retry_after
    rid = emu.add_vm(SUB, RG, "vm1")
    client = compute(emu, credential)

    poller = client.virtual_machines.begin_start(RG, "vm1")
    poller.result(timeout=5)
    view = client.virtual_machines.instance_view(RG, "vm1")

    assert poller.status() == "Succeeded"
    assert emu.vm_power_state(rid) == "PowerState/running"
    assert emu.vm_state_changes(rid) == ["PowerState/deallocated", "PowerState/starting", "PowerState/running"]
    assert emu.actions(rid) == ["start"]
    assert "PowerState/running" in [s.code for s in view.statuses or []]
    assert view.vm_agent is not None
    # ARMPolling ends a POST with a GET of the Location header (monitor=true).
    assert any("monitor=true" in r.url for r in emu.requests)
    if retry_after:  # the header beats polling_interval=1: a 60 s start needs about 6 polls
        assert emu.count(path_contains="/operations/") <= 10


@pytest.mark.parametrize(("action", "final"), [("begin_deallocate", "deallocated"), ("begin_power_off", "stopped")])
def test_stopping_actions_reach_their_state(
    emu: AzureEmulator, credential: ManagedIdentityCredential, action: str, final: str
) -> None:
    rid = emu.add_vm(SUB, RG, "vm1", power_state="running")
    client = compute(emu, credential)

    getattr(client.virtual_machines, action)(RG, "vm1").result(timeout=5)
    vm = client.virtual_machines.get(RG, "vm1", expand="instanceView")

    assert emu.vm_power_state(rid) == f"PowerState/{final}"
    assert vm.id == rid
    assert vm.properties is not None and vm.properties.instance_view is not None
    codes = [s.code for s in vm.properties.instance_view.statuses or []]
    assert f"PowerState/{final}" in codes


def test_starting_a_running_vm_succeeds_without_change(
    emu: AzureEmulator, credential: ManagedIdentityCredential
) -> None:
    rid = emu.add_vm(SUB, RG, "vm1", power_state="running")

    compute(emu, credential).virtual_machines.begin_start(RG, "vm1").result(timeout=5)

    assert emu.vm_state_changes(rid) == ["PowerState/running"]
    assert emu.actions(rid) == ["start"]


def test_parallel_starts_from_a_thread_pool(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    emu.operation_durations["start"] = 10.0
    rids = [emu.add_vm(SUB, RG, f"vm{i}") for i in range(20)]
    client = compute(emu, credential)
    credential.get_token(SCOPE)  # else racing threads may each fetch one (msal's cache)

    def start(i: int) -> None:
        client.virtual_machines.begin_start(RG, f"vm{i}").result(timeout=10)

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(start, range(20)))

    assert {emu.vm_power_state(r) for r in rids} == {"PowerState/running"}
    assert all(emu.actions(r) == ["start"] for r in rids)
    assert emu.token_requests == 1


def test_unknown_vm_is_resource_not_found(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    with pytest.raises(ResourceNotFoundError) as err:
        compute(emu, credential).virtual_machines.instance_view(RG, "ghost")

    assert err.value.error is not None
    assert err.value.error.code == "ResourceNotFound"


# ----- failure injection -------------------------------------------------------------


def test_request_failure_surfaces_as_http_response_error(
    emu: AzureEmulator, credential: ManagedIdentityCredential
) -> None:
    rid = emu.add_vm(SUB, RG, "vm1")
    emu.fail("start", rid.lower(), status=409, code="Conflict", message="busy")

    with pytest.raises(HttpResponseError) as err:
        compute(emu, credential).virtual_machines.begin_start(RG, "vm1")

    assert err.value.status_code == 409
    assert err.value.error is not None
    assert err.value.error.code == "Conflict"
    assert emu.actions(rid) == []
    assert emu.vm_power_state(rid) == "PowerState/deallocated"


def test_operation_failure_fails_the_poller_and_restores_state(
    emu: AzureEmulator, credential: ManagedIdentityCredential
) -> None:
    rid = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.fail("deallocate", rid, mode="operation", code="AllocationFailed", times=1)
    poller = compute(emu, credential).virtual_machines.begin_deallocate(RG, "vm1")

    with pytest.raises(HttpResponseError) as err:
        poller.result(timeout=5)

    assert err.value.error is not None
    assert err.value.error.code == "AllocationFailed"
    assert emu.vm_state_changes(rid) == ["PowerState/running", "PowerState/deallocating", "PowerState/running"]


def test_transient_failure_is_healed_by_sdk_retry(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    emu.add_vm(SUB, RG, "vm1", power_state="running")
    rule = emu.fail("instanceView", status=503, code="ServiceUnavailable", times=2)

    view = compute(emu, credential).virtual_machines.instance_view(RG, "vm1")

    assert "PowerState/running" in [s.code for s in view.statuses or []]
    assert rule.fired == 2
    assert emu.count(method="GET", path_contains="/instanceview", status=503) == 2


def test_graph_failure(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    emu.fail("graph", status=400, code="BadRequest")

    with pytest.raises(HttpResponseError) as err:
        query_all(resource_graph(emu, credential), "resources", [SUB])

    assert err.value.status_code == 400


def test_a_later_action_preempts_the_one_in_flight(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    rid = emu.add_vm(SUB, RG, "vm1")
    emu.operation_durations["start"] = 100_000.0
    client = compute(emu, credential)

    starting = client.virtual_machines.begin_start(RG, "vm1")
    client.virtual_machines.begin_deallocate(RG, "vm1").result(timeout=5)

    with pytest.raises(HttpResponseError) as err:
        starting.result(timeout=5)
    assert err.value.error is not None
    assert err.value.error.code == "OperationPreempted"
    assert emu.vm_state_changes(rid) == [
        "PowerState/deallocated",
        "PowerState/starting",
        "PowerState/deallocating",
        "PowerState/deallocated",
    ]
    assert emu.actions(rid) == ["start", "deallocate"]


# ----- cancellation ------------------------------------------------------------------


def test_cancel_put_answers_cancelled_twice(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    emu.add_run(RUN_ID, [])
    client = arm(emu, credential)

    first = cancel(client, RUN_ID, {"properties": {"status": "Cancel"}})
    second = cancel(client, RUN_ID.lower(), {"properties": {"status": "Cancel"}})

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["properties"]["status"] == "Cancelled"
    assert second.json()["properties"]["status"] == "Cancelled"
    assert first.json()["type"] == "Microsoft.Maintenance/applyUpdates"
    assert emu.run_status(RUN_ID) == "Cancelled"
    assert emu.count(method="PUT", path_contains="/applyupdates/", status=200) == 2
    run = client.send_request(HttpRequest("GET", f"{BASE_URL}{RUN_ID}?api-version={CANCEL_API}"))
    assert run.json()["properties"]["status"] == "Cancelled"


def test_cancel_rejects_anything_but_cancel(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    emu.add_run(RUN_ID, [])
    client = arm(emu, credential)

    install = cancel(client, RUN_ID, {"properties": {"status": "Pending"}})
    empty = cancel(client, RUN_ID, {})
    unknown = cancel(client, RUN_ID[:-1] + "9", {"properties": {"status": "Cancel"}})

    assert (install.status_code, empty.status_code, unknown.status_code) == (400, 400, 404)
    assert emu.run_status(RUN_ID) == "Pending"


def test_cancel_failure_injection(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    emu.add_run(RUN_ID, [])
    emu.fail("cancel", RUN_ID, status=403, code="AuthorizationFailed")

    response = cancel(arm(emu, credential), RUN_ID, {"properties": {"status": "Cancel"}})

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "AuthorizationFailed"
    assert emu.run_status(RUN_ID) == "Pending"


def test_legacy_http_request_gets_a_legacy_response(emu: AzureEmulator, credential: ManagedIdentityCredential) -> None:
    rid = emu.add_vm(SUB, RG, "vm1", power_state="stopped")
    url = f"{BASE_URL}{rid}/instanceView?api-version=2024-07-01"

    response = arm(emu, credential).send_request(LegacyHttpRequest("GET", url))

    assert response.status_code == 200
    codes = [s["code"] for s in json.loads(response.text())["statuses"]]
    assert "PowerState/stopped" in codes


# ----- throttling --------------------------------------------------------------------


def test_graph_throttling_answers_429_with_quota_headers(credential: ManagedIdentityCredential) -> None:
    # The credential gets its token from the `emu` fixture; any bearer token is accepted here.
    throttled = AzureEmulator(time_scale=0.001, throttling=True, buckets={"graph": (1, 0.01)})
    client = arm(throttled, credential, retry=False)
    url = f"{BASE_URL}/providers/Microsoft.ResourceGraph/resources?api-version=2021-03-01"
    body = {"subscriptions": [SUB], "query": "resources"}

    ok = client.send_request(HttpRequest("POST", url, json=body))
    refused = client.send_request(HttpRequest("POST", url, json=body))

    assert ok.status_code == 200
    assert ok.headers["x-ms-user-quota-remaining"] == "0"
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "TooManyRequests"
    assert int(refused.headers["Retry-After"]) >= 90


def test_sdk_retry_heals_a_429_storm(credential: ManagedIdentityCredential) -> None:
    # Refills slow enough (a token per 0.1 real s) that CPU contention cannot hide the throttling.
    emu = AzureEmulator(time_scale=0.001, throttling=True, buckets={"graph": (2, 0.01), "compute.update.vm": (1, 0.01)})
    emu.operation_durations.update(start=1.0, powerOff=1.0)
    rid = emu.add_vm(SUB, RG, "vm1")
    retry = RetryPolicy(**FAST_RETRY)
    graph = resource_graph(emu, credential, retry_policy=retry)
    client = compute(emu, credential, retry_policy=retry)

    for _ in range(6):
        assert query_all(graph, "resources", [SUB])[0][0]["id"] == rid
    client.virtual_machines.begin_start(RG, "vm1").result(timeout=5)
    client.virtual_machines.begin_power_off(RG, "vm1").result(timeout=5)

    assert emu.count(path_contains="resourcegraph", status=429) >= 3
    assert emu.count(method="POST", path_contains="/poweroff", status=429) >= 1
    assert emu.vm_power_state(rid) == "PowerState/stopped"
    assert emu.actions(rid) == ["start", "powerOff"]


def test_latency_delays_each_arm_response(credential: ManagedIdentityCredential) -> None:
    emu = AzureEmulator(time_scale=0.001, latency=50.0)
    emu.add_vm(SUB, RG, "vm1")
    client = compute(emu, credential)
    credential.get_token(SCOPE)

    started = time.perf_counter()
    client.virtual_machines.instance_view(RG, "vm1")
    client.virtual_machines.instance_view(RG, "vm1")

    assert time.perf_counter() - started >= 0.1
