"""Update Manager's installation results in the emulator's Resource Graph, and the Tags API, through the
real SDK clients (azure-mgmt-resourcegraph, azure-mgmt-resource) and the emulator transport."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, cast

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceResponseError
from azure.core.pipeline.policies import RequestIdPolicy
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from emulator import AzureEmulator
from emulator.kql import parse_query
from emulator.messages import ArmRequest
from emulator.routes import match, throttle_keys

BASE_URL = "https://management.emulator.test"
SCOPE = f"{BASE_URL}/.default"
SUB = "00000000-0000-0000-0000-000000000001"
SUB2 = "00000000-0000-0000-0000-000000000002"
RG = "rg-app"
CONFIG_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-maint/providers/Microsoft.Maintenance/maintenanceConfigurations/weekly"
)
RUN_PART = "20250101020000"
RUN_ID = f"{CONFIG_ID}/providers/Microsoft.Maintenance/applyUpdates/{RUN_PART}"
OTHER_RUN_ID = f"{CONFIG_ID}/providers/Microsoft.Maintenance/applyUpdates/20250108020000"
RESULT_TYPES = (
    "'microsoft.compute/virtualmachines/patchinstallationresults', "
    "'microsoft.hybridcompute/machines/patchinstallationresults'"
)
PATCH_TYPES = (
    "'microsoft.compute/virtualmachines/patchinstallationresults/softwarepatches', "
    "'microsoft.hybridcompute/machines/patchinstallationresults/softwarepatches'"
)
RESULTS_QUERY = f"""patchinstallationresources
| where type in~ ({RESULT_TYPES})
| where properties.maintenanceRunId in~ ('{{full}}', '{{run}}')
| project id, status = tostring(properties.status), installed = toint(properties.installedPatchCount),
    runId = tostring(properties.maintenanceRunId)"""
CHILDREN_QUERY = f"""patchinstallationresources
| where type in~ ({PATCH_TYPES})
| extend resultId = tolower(substring(id, 0, indexof(id, '/softwarePatches/')))
| where resultId in~ ({{ids}})
| project id, resultId, patchName = tostring(properties.patchName), state = tostring(properties.installationState)"""
TAGS_API = "2021-04-01"


class FakeCredential:
    """A TokenCredential the emulator accepts (it checks only that a bearer token is sent)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("emulator-test-token", int(time.time()) + 3600)


@pytest.fixture
def emu() -> AzureEmulator:
    # Simulated time runs at real speed: the tests move it with clock.advance.
    return AzureEmulator()


def graph(emu: AzureEmulator) -> ResourceGraphClient:
    return ResourceGraphClient(FakeCredential(), base_url=BASE_URL, transport=emu.transport(),
                               credential_scopes=[SCOPE])  # fmt: skip


def resources(emu: AzureEmulator, **kwargs: Any) -> ResourceManagementClient:
    return ResourceManagementClient(FakeCredential(), SUB, base_url=BASE_URL, transport=emu.transport(),
                                    credential_scopes=[SCOPE], polling_interval=1, **kwargs)  # fmt: skip


def arm(emu: AzureEmulator) -> ARMPipelineClient:
    policies = [RequestIdPolicy(), ARMChallengeAuthenticationPolicy(FakeCredential(), SCOPE)]
    return ARMPipelineClient(base_url=BASE_URL, policies=policies, transport=emu.transport())


Rows = list[dict[str, Any]]


def query_all(emu: AzureEmulator, query: str, subscriptions: list[str] | None = None) -> tuple[Rows, list[int]]:
    client = graph(emu)
    rows: list[dict[str, Any]] = []
    pages: list[int] = []
    skip_token: str | None = None
    while True:
        options = QueryRequestOptions(skip_token=skip_token, top=1000, result_format="objectArray")
        response = client.resources(QueryRequest(subscriptions=subscriptions or [SUB], query=query, options=options))
        rows.extend(cast(list[dict[str, Any]], response.data))
        pages.append(response.count)
        skip_token = response.skip_token
        if not skip_token:
            return rows, pages


def results(emu: AzureEmulator, run_id: str = RUN_ID, subscriptions: list[str] | None = None) -> list[dict[str, Any]]:
    query = RESULTS_QUERY.format(full=run_id, run=run_id.rsplit("/", 1)[-1])
    return query_all(emu, query, subscriptions)[0]


def children(emu: AzureEmulator, result_ids: list[str], subscriptions: list[str] | None = None) -> list[dict[str, Any]]:
    ids = ", ".join(f"'{rid.lower()}'" for rid in result_ids)
    return query_all(emu, CHILDREN_QUERY.format(ids=ids), subscriptions)[0]


def tags_url(scope: str) -> str:
    return f"{BASE_URL}{scope}/providers/Microsoft.Resources/tags/default?api-version={TAGS_API}"


def patch_tags(emu: AzureEmulator, scope: str, body: Any) -> Any:
    """A raw Tags API PATCH (the SDK would refuse some of these bodies before sending them)."""
    return arm(emu).send_request(HttpRequest("PATCH", tags_url(scope), json=body))


def merge(emu: AzureEmulator, scope: str, tags: dict[str, str], operation: str = "Merge") -> dict[str, str]:
    poller = resources(emu).tags.begin_update_at_scope(scope, {"operation": operation, "properties": {"tags": tags}})
    return dict(poller.result().properties.tags or {})


# ----- installation results ----------------------------------------------------------------


def test_results_of_a_vm_and_an_arc_machine_have_the_documented_shape(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", os_type="Windows")
    arc = emu.add_arc_machine(SUB, RG, "arc1", location="northeurope")
    on_vm = emu.add_patch_result(vm, RUN_ID, installed=2, reboot_status="Required")
    on_arc = emu.add_patch_result(arc, RUN_ID, status="Failed", installed=1, failed=1,
                                  error={"code": "PatchFailed", "message": "1 update failed."})  # fmt: skip
    emu.add_patch_result(vm, OTHER_RUN_ID)

    rows, _ = query_all(emu, f"patchinstallationresources | where properties.maintenanceRunId =~ '{RUN_ID.upper()}'")

    assert [r["id"] for r in rows] == [on_vm, on_arc]  # ordered by id
    assert on_vm.startswith(f"{vm}/patchInstallationResults/") and on_arc.startswith(f"{arc}/patchInstallationResults/")
    vm_row, arc_row = rows
    assert arc_row["type"] == "microsoft.hybridcompute/machines/patchinstallationresults"
    assert vm_row["type"] == "microsoft.compute/virtualmachines/patchinstallationresults"
    assert (vm_row["name"], vm_row["resourceGroup"], vm_row["subscriptionId"], vm_row["location"]) == (
        on_vm.rsplit("/", 1)[-1], RG, SUB, "westeurope")
    assert arc_row["location"] == "northeurope"
    p = vm_row["properties"]
    assert {k: p[k] for k in ("status", "maintenanceRunId", "installedPatchCount", "failedPatchCount",
                              "pendingPatchCount", "excludedPatchCount", "notSelectedPatchCount", "rebootStatus",
                              "maintenanceWindowExceeded", "errorDetails", "osType")} == {
        "status": "Succeeded", "maintenanceRunId": RUN_ID, "installedPatchCount": 2, "failedPatchCount": 0,
        "pendingPatchCount": 0, "excludedPatchCount": 0, "notSelectedPatchCount": 0, "rebootStatus": "Required",
        "maintenanceWindowExceeded": False, "errorDetails": None, "osType": "Windows",
    }  # fmt: skip
    assert p["startDateTime"] < p["lastModifiedDateTime"] and p["installationActivityId"]
    error = {"code": "PatchFailed", "message": "1 update failed.", "details": []}
    assert arc_row["properties"]["errorDetails"] == error
    assert (arc_row["properties"]["status"], arc_row["properties"]["osType"]) == ("Failed", "Linux")


def test_the_app_s_results_query_accepts_either_run_id_form(emu: AzureEmulator) -> None:
    full = emu.add_patch_result(emu.add_vm(SUB, RG, "vm1"), RUN_ID)
    part = emu.add_patch_result(emu.add_vm(SUB, RG, "vm2"), RUN_ID, run_id_form="run", installed=5)
    emu.add_patch_result(emu.add_vm(SUB, RG, "vm3"), OTHER_RUN_ID, run_id_form="run")

    rows = results(emu)

    assert [(r["id"], r["status"], r["installed"], r["runId"]) for r in rows] == [
        (full, "Succeeded", 3, RUN_ID), (part, "Succeeded", 5, RUN_PART)]  # fmt: skip
    with pytest.raises(ValueError, match="run_id_form"):
        emu.add_patch_result(emu.add_vm(SUB, RG, "vm4"), RUN_ID, run_id_form="short")


def test_a_result_appears_after_its_own_index_lag_not_graph_lag(emu: AzureEmulator) -> None:
    emu.graph_lag = 1000.0
    vm = emu.add_vm(SUB, RG, "vm1")
    late = emu.add_patch_result(vm, RUN_ID, appears_after=120)
    now = emu.add_patch_result(emu.add_vm(SUB, RG, "vm2"), RUN_ID)

    assert [r["id"] for r in results(emu)] == [now]
    emu.clock.advance(110)
    assert [r["id"] for r in results(emu)] == [now]
    assert children(emu, [late]) == []
    emu.clock.advance(11)
    assert [r["id"] for r in results(emu)] == [late, now]
    assert len(children(emu, [late])) == 3


def test_a_status_change_shows_after_its_lag_with_the_new_counts(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    result = emu.add_patch_result(vm, RUN_ID, status="InProgress", installed=0, pending=4)
    assert [(r["status"], r["installed"]) for r in results(emu)] == [("InProgress", 0)]
    assert Counter(c["state"] for c in children(emu, [result])) == {"Pending": 4}

    emu.clock.advance(600)
    emu.set_patch_status(result, "Failed", installed=3, failed=1, pending=0, reboot_status="Completed",
                         error={"code": "PatchInstallationFailed", "message": "One update failed.",
                                "details": [{"code": "KB1", "message": "0x80240022"}]}, appears_after=60)  # fmt: skip
    assert [r["status"] for r in results(emu)] == ["InProgress"]
    emu.clock.advance(60)

    rows, _ = query_all(emu, f"patchinstallationresources | where id =~ '{result}'")
    p = rows[0]["properties"]
    assert (p["status"], p["installedPatchCount"], p["failedPatchCount"], p["pendingPatchCount"]) == ("Failed", 3, 1, 0)
    assert p["rebootStatus"] == "Completed"
    assert p["errorDetails"]["details"] == [{"code": "KB1", "message": "0x80240022"}]
    assert p["lastModifiedDateTime"] > p["startDateTime"]
    patches = children(emu, [result])
    assert Counter(c["state"] for c in patches) == {"Installed": 3, "Failed": 1}
    with pytest.raises(KeyError):
        emu.set_patch_status(f"{vm}/patchInstallationResults/unknown", "Failed")


def test_default_child_patches_match_the_counts(emu: AzureEmulator) -> None:
    windows = emu.add_vm(SUB, RG, "win1", os_type="Windows")
    linux = emu.add_arc_machine(SUB, RG, "arc1")
    on_windows = emu.add_patch_result(windows, RUN_ID, status="CompletedWithWarnings", installed=2, failed=1,
                                      pending=1, excluded=1, not_selected=2)  # fmt: skip
    on_linux = emu.add_patch_result(linux, RUN_ID, installed=9)
    emu.add_patch_result(emu.add_vm(SUB, RG, "other"), RUN_ID, installed=4)

    found = children(emu, [on_windows.upper(), on_linux])
    a_windows_patch = next(c["id"] for c in found if c["resultId"] == on_windows.lower())
    raw, _ = query_all(emu, "patchinstallationresources | where type =~ 'microsoft.compute/virtualmachines"
                       f"/patchinstallationresults/softwarepatches' | where id =~ '{a_windows_patch}'")  # fmt: skip

    by_result = Counter(c["resultId"] for c in found)
    assert by_result == {on_windows.lower(): 7, on_linux.lower(): 9}
    windows_states = Counter(c["state"] for c in found if c["resultId"] == on_windows.lower())
    assert windows_states == {"Installed": 2, "Failed": 1, "Pending": 1, "Excluded": 1, "NotSelected": 2}
    assert all(c["id"].startswith((f"{on_windows}/softwarePatches/", f"{on_linux}/softwarePatches/")) for c in found)
    assert len({c["patchName"] for c in found}) == 16
    windows_row = raw[0]
    assert windows_row["type"] == "microsoft.compute/virtualmachines/patchinstallationresults/softwarepatches"
    assert set(windows_row["properties"]) == {"patchName", "kbId", "classifications", "installationState",
                                              "rebootRequired", "lastModifiedDateTime"}  # fmt: skip
    linux_rows = [r for r in query_all(emu, f"patchinstallationresources | where type in~ ({PATCH_TYPES})")[0]
                  if r["id"].startswith(on_linux)]  # fmt: skip
    assert all("version" in r["properties"] and "kbId" not in r["properties"] for r in linux_rows)
    assert linux_rows[0]["type"] == "microsoft.hybridcompute/machines/patchinstallationresults/softwarepatches"


def test_given_patches_are_the_children(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", os_type="Windows")
    result = emu.add_patch_result(vm, RUN_ID, installed=1, failed=1, patches=[
        {"name": "2025-01 Cumulative Update", "kb_id": "5050001", "classifications": ["Security", "Critical"],
         "state": "Installed"},
        {"name": "Defender update", "kb_id": "2267602", "classifications": ["Definition"], "state": "failed"},
    ])  # fmt: skip
    rows, _ = query_all(emu, f"patchinstallationresources | where type in~ ({PATCH_TYPES})")

    assert [(r["properties"]["patchName"], r["properties"]["kbId"], r["properties"]["classifications"],
             r["properties"]["installationState"]) for r in sorted(rows, key=lambda r: r["properties"]["kbId"])] == [
        ("Defender update", "2267602", ["Definition"], "Failed"),
        ("2025-01 Cumulative Update", "5050001", ["Security", "Critical"], "Installed"),
    ]  # fmt: skip
    assert {r["id"].rsplit("/softwarePatches/", 1)[0] for r in rows} == {result}
    with pytest.raises(ValueError, match="state"):
        emu.add_patch_result(vm, RUN_ID, patches=[{"name": "x", "state": "Done"}])
    with pytest.raises(ValueError, match="kb"):
        emu.add_patch_result(vm, RUN_ID, patches=[{"name": "x", "kb": "1"}])


def test_results_and_children_page_past_1000_rows(emu: AzureEmulator) -> None:
    machines = [emu.add_vm(SUB, RG, f"vm{i:04d}") for i in range(1001)]
    made = [emu.add_patch_result(vm, RUN_ID, installed=5) for vm in machines]

    rows, pages = query_all(emu, RESULTS_QUERY.format(full=RUN_ID, run=RUN_PART))
    assert pages == [1000, 1] and sorted(r["id"] for r in rows) == sorted(made)

    ids = ", ".join(f"'{rid.lower()}'" for rid in made[:210])
    found, child_pages = query_all(emu, CHILDREN_QUERY.format(ids=ids))
    assert child_pages == [1000, 50]
    assert len({c["id"] for c in found}) == 1050 and {c["resultId"] for c in found} == {r.lower() for r in made[:210]}


def test_unreadable_subscriptions_are_left_out(emu: AzureEmulator) -> None:
    mine = emu.add_patch_result(emu.add_vm(SUB, RG, "vm1"), RUN_ID)
    theirs = emu.add_patch_result(emu.add_vm(SUB2, RG, "vm2"), RUN_ID)
    assert [r["id"] for r in results(emu, subscriptions=[SUB, SUB2])] == [mine, theirs]

    emu.readable_subscriptions = {SUB}

    assert [r["id"] for r in results(emu, subscriptions=[SUB, SUB2])] == [mine]
    assert {c["resultId"] for c in children(emu, [mine, theirs], [SUB, SUB2])} == {mine.lower()}


def test_add_patch_result_refuses_what_azure_would_not_write(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    with pytest.raises(ValueError, match="unknown machine"):
        emu.add_patch_result(vm.replace("vm1", "vm9"), RUN_ID)
    with pytest.raises(ValueError, match="applyUpdates"):
        emu.add_patch_result(vm, CONFIG_ID)
    with pytest.raises(ValueError, match="status"):
        emu.add_patch_result(vm, RUN_ID, status="Done")
    with pytest.raises(ValueError, match=">= 0"):
        emu.add_patch_result(vm, RUN_ID, failed=-1)


def test_the_recogniser_understands_the_prefix_alias_only_as_documented() -> None:
    row = {"id": "/a/B/softwarePatches/x"}

    def alias(expression: str) -> Any:
        parsed = parse_query(f"patchinstallationresources | extend r = {expression}")
        return parsed.aliases[0].value(row) if parsed.aliases else "not recognised"

    assert alias("tolower(substring(id, 0, indexof(id, '/softwarePatches/')))") == "/a/b"
    assert alias("substring(id, 0, indexof(id, '/softwarePatches/'))") == "/a/B"
    assert alias("toupper(substring(tostring(id), 0, indexof(tolower(id), '/softwarepatches/')))") == "/A/B"
    assert alias("substring(id, 0, indexof(id, '/softwarepatches/'))") == ""  # indexof is case-sensitive
    assert alias("substring(id, 0, indexof(name, '/softwarePatches/'))") == "not recognised"
    assert alias("tolower(substring(id, 1, indexof(id, '/softwarePatches/')))") == "not recognised"


# ----- the Tags API --------------------------------------------------------------------------


def test_merge_keeps_the_other_tags_and_the_vm_shows_them(emu: AzureEmulator) -> None:
    emu.graph_lag = 30.0
    vm = emu.add_vm(SUB, RG, "vm1", tags={"Owner": "ops", "env": "prod"})

    after = merge(emu, vm, {"env": "test", "patched": "2025-01-01"})

    assert after == {"Owner": "ops", "env": "test", "patched": "2025-01-01"}
    compute = ComputeManagementClient(FakeCredential(), SUB, base_url=BASE_URL, transport=emu.transport(),
                                      credential_scopes=[SCOPE])  # fmt: skip
    assert compute.virtual_machines.get(RG, "vm1").tags == after
    graph_query = f"resources | where id =~ '{vm}' | project id, tags"
    assert query_all(emu, graph_query)[0][0]["tags"] == {"Owner": "ops", "env": "prod"}  # the index lags
    emu.clock.advance(31)
    assert query_all(emu, graph_query)[0][0]["tags"] == after
    changes = emu.tag_changes(vm.upper())
    assert [(c.machine_id, c.operation, c.tags) for c in changes] == [(vm, "Merge", {"env": "test",
                                                                                      "patched": "2025-01-01"})]


def test_replace_and_delete(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", tags={"Owner": "ops", "env": "prod", "keep": "me"})

    assert merge(emu, vm, {"owner": "other", "env": "prod", "keep": "you"}, "Delete") == {"Owner": "ops", "keep": "me"}
    assert merge(emu, vm, {"OWNER": "ops"}, "Delete") == {"keep": "me"}  # names compare case-insensitively
    assert merge(emu, vm, {"a": "1", "b": "2"}, "Replace") == {"a": "1", "b": "2"}
    assert merge(emu, vm, {"A": "3"}) == {"a": "3", "b": "2"}
    assert resources(emu).tags.get_at_scope(vm).properties.tags == {"a": "3", "b": "2"}
    assert [c.operation for c in emu.tag_changes()] == ["Delete", "Delete", "Replace", "Merge"]


def test_tags_of_an_arc_machine_in_any_casing(emu: AzureEmulator) -> None:
    arc = emu.add_arc_machine(SUB, RG, "arc1", tags={"site": "lyon"})
    vm = emu.add_vm(SUB, RG, "vm1")

    response = patch_tags(emu, arc.upper(), {"operation": "merge", "properties": {"tags": {"patched": "yes"}}})

    assert response.status_code == 200
    body = response.json()
    assert body.pop("id").lower() == f"{arc}/providers/Microsoft.Resources/tags/default".lower()
    assert body == {"type": "Microsoft.Resources/tags", "name": "default",
                    "properties": {"tags": {"site": "lyon", "patched": "yes"}}}  # fmt: skip
    rows, _ = query_all(emu, "resources | where type =~ 'microsoft.hybridcompute/machines' | project id, tags")
    assert rows[0]["tags"] == {"site": "lyon", "patched": "yes"}
    assert [c.machine_id for c in emu.tag_changes()] == [arc] and emu.tag_changes(vm) == []


def test_unknown_machine_is_404(emu: AzureEmulator) -> None:
    emu.add_vm(SUB, RG, "vm1")
    missing = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/vm9"

    with pytest.raises(ResourceNotFoundError) as raised:
        merge(emu, missing, {"a": "b"})
    with pytest.raises(ResourceNotFoundError):
        resources(emu).tags.get_at_scope(missing)

    assert raised.value.error is not None and raised.value.error.code == "ResourceNotFound"
    assert emu.tag_changes() == []


@pytest.mark.parametrize(
    ("tags", "code"),
    [
        ({f"t{i}": "v" for i in range(48)}, "InvalidTagCount"),  # 3 existing + 48 new = 51 tags
        ({"a/b": "v"}, "InvalidTagNameCharacters"),
        ({"a<b": "v"}, "InvalidTagNameCharacters"),
        ({"n" * 513: "v"}, "InvalidTagNameLength"),
        ({"n": "v" * 257}, "InvalidTagValueLength"),
    ],
)
def test_limits_are_refused_with_nothing_changed(emu: AzureEmulator, tags: dict[str, str], code: str) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", tags={"Owner": "ops", "env": "prod", "x": "y"})

    response = patch_tags(emu, vm, {"operation": "Merge", "properties": {"tags": tags}})

    assert (response.status_code, response.json()["error"]["code"]) == (400, code)
    assert emu.tag_changes() == [] and (resources(emu).tags.get_at_scope(vm).properties.tags or {})["x"] == "y"


def test_the_limits_themselves_are_allowed(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    tags = {f"t{i}": "v" * 256 for i in range(49)} | {"n" * 512: "v"}

    assert merge(emu, vm, tags, "Replace") == tags


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"properties": {"tags": {"a": "b"}}}, "MissingOperation"),
        ({"operation": "Upsert", "properties": {"tags": {"a": "b"}}}, "InvalidRequestContent"),
        ({"operation": "Merge"}, "InvalidRequestContent"),
        ({"operation": "Merge", "properties": {"tags": {"a": 1}}}, "InvalidRequestContent"),
        (["Merge"], "InvalidRequestContent"),
    ],
)
def test_a_bad_body_is_400(emu: AzureEmulator, body: Any, code: str) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")

    response = patch_tags(emu, vm, body)

    assert (response.status_code, response.json()["error"]["code"]) == (400, code)
    not_json = arm(emu).send_request(HttpRequest("PATCH", tags_url(vm), content=b"{nope"))
    assert not_json.json()["error"]["code"] == "InvalidRequestContent"


def test_injected_failures_strike_tags_and_get_tags(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", tags={"a": "1"})
    other = emu.add_vm(SUB, RG, "vm2")
    emu.fail("tags", vm, status=409, code="Conflict", times=1)
    emu.fail("getTags", vm, status=403, code="AuthorizationFailed")

    with pytest.raises(HttpResponseError) as conflict:
        merge(emu, vm, {"b": "2"})
    assert conflict.value.status_code == 409 and emu.tag_changes() == []
    assert merge(emu, other, {"b": "2"}) == {"b": "2"}
    assert merge(emu, vm, {"b": "2"}) == {"a": "1", "b": "2"}  # the rule struck once
    with pytest.raises(HttpResponseError) as forbidden:
        resources(emu).tags.get_at_scope(vm)
    assert forbidden.value.status_code == 403

    emu.fail("tags", vm, mode="lost-answer", times=1)
    with pytest.raises(ServiceResponseError):
        resources(emu, retry_total=0).tags.begin_update_at_scope(
            vm, {"operation": "Merge", "properties": {"tags": {"c": "3"}}})
    assert emu.find_vm(vm).tags == {"a": "1", "b": "2", "c": "3"}  # applied, then the answer was lost


def test_tags_routes_and_their_throttling_buckets(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1")
    path = f"/{vm.lower()}/providers/microsoft.resources/TAGS/default"

    def route(method: str) -> Any:
        return match(ArmRequest(method, f"{BASE_URL}{path}", path, {"api-version": TAGS_API}, {}, b""))

    patch, get = route("PATCH"), route("GET")
    assert (patch.name, patch.failure_op, patch.resource_id.lower(), patch.arc) == ("tags.patch", "tags", vm.lower(),
                                                                                     False)  # fmt: skip
    assert (get.name, get.failure_op) == ("tags.get", "getTags")
    assert throttle_keys(patch, emu) == [("arm.write", SUB)] and throttle_keys(get, emu) == [("arm.read", SUB)]
    assert route("DELETE") is None
