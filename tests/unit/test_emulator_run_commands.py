"""Managed Run Command (VMs and Arc machines) in the Azure emulator, through the real SDK clients."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.policies import RequestIdPolicy
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy
from azure.mgmt.hybridcompute import HybridComputeManagementClient
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest

from emulator import AzureEmulator
from emulator.messages import ArmRequest
from emulator.routes import match, throttle_keys

BASE_URL = "https://management.emulator.test"
SCOPE = f"{BASE_URL}/.default"
SUB = "00000000-0000-0000-0000-000000000001"
RG = "rg-app"
VMS = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines"
ARCS = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.HybridCompute/machines"
FAST = 0.001  # time_scale for tests that let SDK pollers run: 1 simulated second = 1 real ms
Captured = tuple[int, dict[str, str], Any]


class FakeCredential:
    """A TokenCredential the emulator accepts (it checks only that a bearer token is sent)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("emulator-test-token", int(time.time()) + 3600)


@pytest.fixture
def emu(request: pytest.FixtureRequest) -> AzureEmulator:
    # Simulated time runs at real speed by default: the tests move it with clock.advance.
    return AzureEmulator(time_scale=getattr(request, "param", 1.0))


def compute(emu: AzureEmulator) -> ComputeManagementClient:
    return ComputeManagementClient(FakeCredential(), SUB, base_url=BASE_URL, transport=emu.transport(),
                                   polling_interval=1, credential_scopes=[SCOPE])  # fmt: skip


def hybrid(emu: AzureEmulator) -> HybridComputeManagementClient:
    return HybridComputeManagementClient(FakeCredential(), SUB, base_url=BASE_URL, transport=emu.transport(),
                                         polling_interval=1, credential_scopes=[SCOPE])  # fmt: skip


def arm(emu: AzureEmulator) -> ARMPipelineClient:
    policies = [RequestIdPolicy(), ARMChallengeAuthenticationPolicy(FakeCredential(), SCOPE)]
    return ARMPipelineClient(base_url=BASE_URL, policies=policies, transport=emu.transport())


def capture(pipeline_response: Any, deserialized: Any, headers: Any) -> Captured:
    response = pipeline_response.http_response
    return response.status_code, dict(response.headers), deserialized


def body(script: str = "echo hello", **properties: Any) -> dict[str, Any]:
    return {"location": "westeurope", "properties": {"source": {"script": script}, **properties}}


def put_vm(emu: AzureEmulator, name: str = "rc1", vm: str = "vm1", **kwargs: Any) -> Captured:
    poller = compute(emu).virtual_machine_run_commands.begin_create_or_update(
        RG, vm, name, kwargs.pop("run_command", None) or body(**kwargs), polling=False, cls=capture
    )
    return poller.result()  # type: ignore[no-any-return]


def put_arc(emu: AzureEmulator, name: str = "rc1", machine: str = "arc1", **kwargs: Any) -> Captured:
    poller = hybrid(emu).machine_run_commands.begin_create_or_update(
        RG, machine, name, body(**kwargs), polling=False, cls=capture
    )
    return poller.result()  # type: ignore[no-any-return]


def view(emu: AzureEmulator, name: str = "rc1", vm: str = "vm1") -> dict[str, Any]:
    """The raw JSON of a VM run command GET with $expand=instanceView."""
    url = f"{BASE_URL}{VMS}/{vm}/runCommands/{name}?api-version=2024-07-01&$expand=instanceView"
    response = arm(emu).send_request(HttpRequest("GET", url))
    assert response.status_code == 200, response.text()
    return response.json()  # type: ignore[no-any-return]


def get_url(emu: AzureEmulator, url: str) -> Any:
    return arm(emu).send_request(HttpRequest("GET", url))


# ----- create, re-run, instance view -------------------------------------------------------


def test_create_is_201_and_a_re_put_is_200_that_runs_again(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    params = [{"name": "pkg", "value": "curl"}]

    status, headers, created = put_vm(emu, script="apt-get install $pkg", parameters=params, timeoutInSeconds=600)
    emu.clock.advance(12)
    again, again_headers, updated = put_vm(emu, script="apt-get install $pkg", parameters=params)

    assert status == 201 and again == 200
    assert created.id == f"{vm}/runCommands/rc1" and created.name == "rc1"
    assert created.type == "Microsoft.Compute/virtualMachines/runCommands" and created.location == "westeurope"
    assert (created.provisioning_state, updated.provisioning_state) == ("Creating", "Updating")
    assert created.source.script == "apt-get install $pkg" and created.timeout_in_seconds == 600
    assert [(p.name, p.value) for p in created.parameters] == [("pkg", "curl")]
    assert created.async_execution is False and created.instance_view is None
    async_url = headers["Azure-AsyncOperation"]
    assert async_url.startswith(f"{BASE_URL}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/"
                                "operations/")  # fmt: skip
    assert headers["Location"].startswith(async_url.split("?")[0]) and "monitor=true" in headers["Location"]
    assert again_headers["Azure-AsyncOperation"] != async_url
    runs = emu.run_command_executions(vm)
    assert [(r.run_command, r.script, dict(r.parameters)) for r in runs] == [("rc1", "apt-get install $pkg",
                                                                               {"pkg": "curl"})] * 2  # fmt: skip
    assert [r.state for r in runs] == ["Succeeded", "Pending"]
    assert runs[1].put_at - runs[0].put_at == pytest.approx(12, abs=0.5)
    [info] = emu.run_commands(vm)
    assert (info.name, info.executions, info.provisioning_state, info.deleting) == ("rc1", 2, "Updating", False)
    assert emu.count("PUT", "/runCommands/rc1") == 2


def test_instance_view_goes_pending_running_succeeded(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.script_behaviour(vm, duration=30, output="patched\n", contains="patch")
    put_vm(emu, script="sudo patch-all")
    [run] = emu.run_command_executions(vm)

    pending = view(emu)["properties"]
    emu.clock.advance(1.5)
    running = view(emu)["properties"]
    emu.clock.advance(30)
    done = view(emu)["properties"]
    plain = compute(emu).virtual_machine_run_commands.get_by_virtual_machine(RG, "vm1", "rc1")

    assert pending["provisioningState"] == "Creating"
    assert pending["instanceView"]["executionState"] == "Pending" and "startTime" not in pending["instanceView"]
    assert "exitCode" not in pending["instanceView"] and "endTime" not in pending["instanceView"]
    assert running["instanceView"]["executionState"] == "Running" and running["provisioningState"] == "Creating"
    assert running["instanceView"]["startTime"] == emu.clock.isoformat(run.put_at + 1)
    assert running["instanceView"]["output"] == "" and "endTime" not in running["instanceView"]
    iv = done["instanceView"]
    assert (iv["executionState"], iv["exitCode"], iv["output"], iv["error"]) == ("Succeeded", 0, "patched\n", "")
    assert iv["endTime"] == emu.clock.isoformat(run.put_at + 31) and iv["statuses"] == []
    assert done["provisioningState"] == "Succeeded"
    assert plain.instance_view is None and plain.provisioning_state == "Succeeded"
    [final] = emu.run_command_executions(vm)
    assert (final.started_at, final.ended_at, final.exit_code) == (run.put_at + 1, run.put_at + 31, 0)


def test_a_non_zero_exit_code_fails_the_execution_only(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    other = emu.add_vm(SUB, RG, "vm2", power_state="running")
    rule = emu.script_behaviour(vm, duration=5, exit_code=3, output="half", error="E: broken", contains="apt")
    put_vm(emu, script="apt-get upgrade")
    put_vm(emu, "rc2", script="echo fine")  # no "apt": the default behaviour
    put_vm(emu, vm="vm2", script="apt-get upgrade")  # another machine
    emu.clock.advance(20)

    iv = view(emu)["properties"]["instanceView"]
    assert (iv["executionState"], iv["exitCode"], iv["output"], iv["error"]) == ("Failed", 3, "half", "E: broken")
    assert view(emu)["properties"]["provisioningState"] == "Succeeded"  # not treated as a deployment failure
    assert view(emu, "rc2")["properties"]["instanceView"]["executionState"] == "Succeeded"
    assert [r.state for r in emu.run_command_executions(other)] == ["Succeeded"]
    assert rule.fired == 1


def test_times_counts_a_rule_down(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.script_behaviour(vm, duration=1, exit_code=7, times=1)
    put_vm(emu)
    put_vm(emu, "rc2")
    emu.clock.advance(15)
    assert [(r.state, r.exit_code) for r in emu.run_command_executions(vm)] == [("Failed", 7), ("Succeeded", 0)]


def test_a_script_longer_than_its_timeout_times_out(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.script_behaviour(duration=100, output="still going")
    put_vm(emu, timeoutInSeconds=30)
    [run] = emu.run_command_executions(vm)

    emu.clock.advance(30.5)  # started at +1, times out at +31
    before = view(emu)["properties"]["instanceView"]
    emu.clock.advance(1)
    after = view(emu)["properties"]["instanceView"]

    assert before["executionState"] == "Running"
    assert after["executionState"] == "TimedOut" and after["endTime"] == emu.clock.isoformat(run.put_at + 31)
    assert "exitCode" not in after
    [timed_out] = emu.run_command_executions(vm)
    assert (timed_out.state, timed_out.ended_at, timed_out.timeout_in_seconds) == ("TimedOut", run.put_at + 31, 30)


# ----- the long-running operation ---------------------------------------------------------


def test_operation_ends_with_the_execution_or_after_provisioning_when_async(emu: AzureEmulator) -> None:
    emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.script_behaviour(duration=20)
    _, sync_headers, _ = put_vm(emu, "sync")
    _, async_headers, _ = put_vm(emu, "async", asyncExecution=True)

    emu.clock.advance(2.5)
    sync_mid, async_done = (get_url(emu, h["Azure-AsyncOperation"]).json() for h in (sync_headers, async_headers))
    async_monitor = get_url(emu, async_headers["Location"])
    sync_monitor = get_url(emu, sync_headers["Location"])
    async_resource = view(emu, "async")["properties"]
    emu.clock.advance(19)
    sync_done = get_url(emu, sync_headers["Azure-AsyncOperation"]).json()

    assert sync_mid["status"] == "InProgress" and "endTime" not in sync_mid
    assert sync_monitor.status_code == 202
    assert async_done["status"] == "Succeeded" and async_monitor.status_code == 200
    assert async_monitor.json()["name"] == "async"
    assert async_resource["provisioningState"] == "Succeeded"
    assert async_resource["instanceView"]["executionState"] == "Running"
    assert sync_done["status"] == "Succeeded"
    assert sync_done["endTime"] == view(emu, "sync")["properties"]["instanceView"]["endTime"]


@pytest.mark.parametrize("emu", [FAST], indirect=True)
def test_sdk_poller_returns_once_the_execution_ended(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.script_behaviour(duration=5, output="ok", times=1)
    client = compute(emu).virtual_machine_run_commands

    result = client.begin_create_or_update(RG, "vm1", "rc1", body()).result(timeout=10)
    emu.script_behaviour(duration=3600)
    async_result = client.begin_create_or_update(RG, "vm1", "rc2", body(asyncExecution=True)).result(timeout=10)

    assert result.provisioning_state == "Succeeded" and async_result.provisioning_state == "Succeeded"
    assert [r.state for r in emu.run_command_executions(vm)] == ["Succeeded", "Running"]


@pytest.mark.parametrize("emu", [FAST], indirect=True)
def test_treat_failure_as_deployment_failure_fails_the_operation(emu: AzureEmulator) -> None:
    emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.script_behaviour(duration=2, exit_code=1, error="no space left")
    client = compute(emu).virtual_machine_run_commands

    with pytest.raises(HttpResponseError) as failed:
        client.begin_create_or_update(RG, "vm1", "strict", body(treatFailureAsDeploymentFailure=True)).result(10)
    lenient = client.begin_create_or_update(RG, "vm1", "lenient", body()).result(timeout=10)
    fire_and_forget = body(treatFailureAsDeploymentFailure=True, asyncExecution=True)
    async_strict = client.begin_create_or_update(RG, "vm1", "async", fire_and_forget).result(timeout=10)

    assert failed.value.error is not None and failed.value.error.code == "VMExtensionProvisioningError"
    assert "no space left" in str(failed.value)
    strict = client.get_by_virtual_machine(RG, "vm1", "strict", expand="instanceView")
    assert strict.provisioning_state == "Failed" and strict.instance_view.execution_state == "Failed"
    assert lenient.provisioning_state == "Succeeded"
    assert async_strict.provisioning_state == "Succeeded"  # async: provisioning ends before the script does


def test_failed_operation_status_has_an_error_body(emu: AzureEmulator) -> None:
    emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.script_behaviour(duration=1, exit_code=2)
    _, headers, _ = put_vm(emu, treatFailureAsDeploymentFailure=True)
    emu.clock.advance(3)

    status = get_url(emu, headers["Azure-AsyncOperation"]).json()
    monitor = get_url(emu, headers["Location"])

    assert status["status"] == "Failed" and status["error"]["code"] == "VMExtensionProvisioningError"
    assert "exit code 2" in status["error"]["message"]
    assert monitor.status_code == 409 and monitor.json()["error"]["code"] == "VMExtensionProvisioningError"


def test_poll_retry_after_is_sent_while_in_progress(emu: AzureEmulator) -> None:
    emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.poll_retry_after = 7
    _, headers, _ = put_vm(emu)
    assert headers["Retry-After"] == "7"
    assert get_url(emu, headers["Azure-AsyncOperation"]).headers["Retry-After"] == "7"


# ----- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["deallocated", "stopped", "starting"])
def test_a_vm_that_is_not_running_is_refused(emu: AzureEmulator, state: str) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state=state)
    with pytest.raises(HttpResponseError) as refused:
        put_vm(emu)
    assert refused.value.status_code == 409 and refused.value.error is not None
    assert refused.value.error.code == "OperationNotAllowed" and f"PowerState/{state}" in refused.value.error.message
    assert emu.run_command_executions(vm) == [] and emu.run_commands(vm) == []


def test_unknown_machine_and_absent_run_command_are_404(emu: AzureEmulator) -> None:
    emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.add_arc_machine(SUB, RG, "arc1")
    with pytest.raises(ResourceNotFoundError) as no_vm:
        put_vm(emu, vm="ghost")
    with pytest.raises(ResourceNotFoundError) as no_arc:
        put_arc(emu, machine="ghost")
    with pytest.raises(ResourceNotFoundError) as no_command:
        compute(emu).virtual_machine_run_commands.get_by_virtual_machine(RG, "vm1", "nothing")
    with pytest.raises(ResourceNotFoundError) as no_arc_command:
        hybrid(emu).machine_run_commands.get(RG, "arc1", "nothing")

    assert no_vm.value.error is not None and no_vm.value.error.code == "ResourceNotFound"
    assert "Microsoft.Compute/virtualMachines/ghost" in no_vm.value.error.message
    assert no_arc.value.error is not None and "Microsoft.HybridCompute/machines/ghost" in no_arc.value.error.message
    assert no_command.value.error is not None and no_command.value.error.code == "ResourceNotFound"
    assert "runCommands/nothing" in no_command.value.error.message
    assert no_arc_command.value.error is not None and no_arc_command.value.error.code == "ResourceNotFound"


@pytest.mark.parametrize(
    ("run_command", "needle"),
    [
        ({"properties": {"source": {"script": "echo"}}}, "location"),
        ({"location": "westeurope", "properties": {}}, "source"),
        ({"location": "westeurope", "properties": {"source": {"script": "a", "commandId": "b"}}}, "source"),
        ({"location": "eastus", "properties": {"source": {"script": "echo"}}}, "location"),
        ({"location": "westeurope", "properties": {"source": {"script": "a"}, "timeoutInSeconds": -1}}, "timeout"),
    ],
)
def test_invalid_bodies_are_400(emu: AzureEmulator, run_command: dict[str, Any], needle: str) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    with pytest.raises(HttpResponseError) as bad:
        put_vm(emu, run_command=run_command)
    assert bad.value.status_code == 400 and bad.value.error is not None
    assert bad.value.error.code == "InvalidParameter" and needle in bad.value.error.message
    assert emu.run_command_executions(vm) == []


# ----- Arc machines -----------------------------------------------------------------------


def test_arc_run_command_needs_a_connected_machine(emu: AzureEmulator) -> None:
    arc = emu.add_arc_machine(SUB, RG, "arc1", status="Disconnected")
    with pytest.raises(HttpResponseError) as refused:
        put_arc(emu)
    emu.set_arc_status(arc, "Connected")
    status, headers, created = put_arc(emu, script="Get-HotFix")
    fetched = hybrid(emu).machine_run_commands.get(RG, "arc1", "rc1")

    assert refused.value.status_code == 409 and refused.value.error is not None
    assert refused.value.error.code == "OperationNotAllowed" and "Disconnected" in refused.value.error.message
    assert status == 201 and created.type == "Microsoft.HybridCompute/machines/runCommands"
    assert created.id == f"{arc}/runCommands/rc1" and created.properties.provisioning_state == "Creating"
    assert headers["Azure-AsyncOperation"].startswith(
        f"{BASE_URL}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/locations/westeurope/operationStatus/"
    )
    # Arc's GET has no $expand: the instance view is always there.
    assert fetched.properties.instance_view is not None
    assert fetched.properties.instance_view.execution_state == "Pending"
    assert [r.script for r in emu.run_command_executions(arc)] == ["Get-HotFix"]


@pytest.mark.parametrize("emu", [FAST], indirect=True)
def test_arc_poller_and_delete_run_to_the_end(emu: AzureEmulator) -> None:
    arc = emu.add_arc_machine(SUB, RG, "arc1", os_type="Windows")
    emu.script_behaviour(arc, duration=3, exit_code=0, output="done")
    client = hybrid(emu).machine_run_commands

    result = client.begin_create_or_update(RG, "arc1", "rc1", body()).result(timeout=10)
    client.begin_delete(RG, "arc1", "rc1").result(timeout=10)

    assert result.properties.provisioning_state == "Succeeded"
    assert result.properties.instance_view.output == "done"
    assert emu.run_commands(arc) == []
    with pytest.raises(ResourceNotFoundError):
        client.get(RG, "arc1", "rc1")


# ----- delete ----------------------------------------------------------------------------


def test_delete_is_202_then_gone_and_a_second_delete_is_204(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.script_behaviour(duration=1)
    put_vm(emu)
    emu.clock.advance(5)
    client = compute(emu).virtual_machine_run_commands

    status, headers, _ = client.begin_delete(RG, "vm1", "rc1", polling=False, cls=capture).result()
    deleting = view(emu)["properties"]["provisioningState"]
    listed = emu.run_commands(vm)
    emu.clock.advance(2.5)
    with pytest.raises(ResourceNotFoundError):
        client.get_by_virtual_machine(RG, "vm1", "rc1")
    again, _, _ = client.begin_delete(RG, "vm1", "rc1", polling=False, cls=capture).result()

    assert status == 202 and "/providers/Microsoft.Compute/locations/westeurope/operations/" in headers[
        "Azure-AsyncOperation"]  # fmt: skip
    assert "Location" in headers and deleting == "Deleting"
    assert [(i.name, i.deleting) for i in listed] == [("rc1", True)]
    assert get_url(emu, headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded"
    assert again == 204 and emu.run_commands(vm) == []
    assert [r.state for r in emu.run_command_executions(vm)] == ["Succeeded"]  # the record stays


def test_deleting_a_running_command_cancels_its_execution(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.script_behaviour(duration=600)
    _, put_headers, _ = put_vm(emu)
    emu.clock.advance(10)
    compute(emu).virtual_machine_run_commands.begin_delete(RG, "vm1", "rc1", polling=False).result()
    [run] = emu.run_command_executions(vm)
    emu.clock.advance(3)

    assert run.state == "Canceled" and run.exit_code is None
    assert run.ended_at == pytest.approx(run.put_at + 10, abs=0.5) and run.started_at == run.put_at + 1
    assert get_url(emu, put_headers["Azure-AsyncOperation"]).json()["status"] == "Canceled"


def test_a_re_put_cancels_the_execution_still_running(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.script_behaviour(duration=600)
    put_vm(emu, script="first")
    emu.clock.advance(5)
    put_vm(emu, script="second")
    runs = emu.run_command_executions(vm)
    assert [(r.script, r.state) for r in runs] == [("first", "Canceled"), ("second", "Pending")]


# ----- injected failures and throttling ------------------------------------------------------


def test_injected_request_failure_runs_nothing(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    rule = emu.fail("runCommand", vm, status=503, code="ServiceUnavailable", times=1)
    client = ComputeManagementClient(FakeCredential(), SUB, base_url=BASE_URL, transport=emu.transport(),
                                     credential_scopes=[SCOPE], retry_total=0)  # fmt: skip
    with pytest.raises(HttpResponseError) as failed:
        client.virtual_machine_run_commands.begin_create_or_update(RG, "vm1", "rc1", body(), polling=False)
    assert failed.value.status_code == 503 and rule.fired == 1
    assert emu.run_command_executions(vm) == []
    assert put_vm(emu)[0] == 201  # the rule is spent


@pytest.mark.parametrize("emu", [FAST], indirect=True)
def test_injected_operation_failure_fails_the_poller_and_the_execution(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    emu.fail("runCommand", vm, mode="operation", code="VMAgentStatusCommunicationError", message="Agent gone.")
    client = compute(emu).virtual_machine_run_commands
    with pytest.raises(HttpResponseError) as failed:
        client.begin_create_or_update(RG, "vm1", "rc1", body()).result(timeout=10)
    fetched = client.get_by_virtual_machine(RG, "vm1", "rc1", expand="instanceView")
    [run] = emu.run_command_executions(vm)

    assert failed.value.error is not None and failed.value.error.code == "VMAgentStatusCommunicationError"
    assert fetched.provisioning_state == "Failed" and fetched.instance_view.execution_state == "Failed"
    assert fetched.instance_view.execution_message == "Agent gone."
    assert (run.state, run.started_at, run.exit_code) == ("Failed", None, None)


def test_get_and_delete_failures_and_faults_apply(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    put_vm(emu)
    emu.fail("getRunCommand", f"{vm}/runCommands/rc1", status=500, times=1)
    emu.fail("deleteRunCommand", vm, mode="reset", times=1)
    client = ComputeManagementClient(FakeCredential(), SUB, base_url=BASE_URL, transport=emu.transport(),
                                     credential_scopes=[SCOPE], retry_total=0)  # fmt: skip
    with pytest.raises(HttpResponseError):
        client.virtual_machine_run_commands.get_by_virtual_machine(RG, "vm1", "rc1")
    with pytest.raises(Exception, match="(?i)connection|reset|aborted"):
        client.virtual_machine_run_commands.begin_delete(RG, "vm1", "rc1", polling=False)
    assert [i.name for i in emu.run_commands(vm)] == ["rc1"]  # the reset struck before ARM
    assert [r.fault for r in emu.requests if "/runCommands/" in r.path] == ["", "request", "reset"]


def _keys(emu: AzureEmulator, method: str, path: str) -> list[tuple[str, str]]:
    request = ArmRequest(method, f"{BASE_URL}{path}", path, {"api-version": "1"}, {}, b"")
    route = match(request)
    assert route is not None
    return throttle_keys(route, emu)


def test_throttle_keys_of_run_command_routes(emu: AzureEmulator) -> None:
    vm = emu.add_vm(SUB, RG, "vm1", power_state="running")
    arc = emu.add_arc_machine(SUB, RG, "arc1")
    _, vm_headers, _ = put_vm(emu)
    _, arc_headers, _ = put_arc(emu)
    vm_key = vm.lower()
    op_path = vm_headers["Azure-AsyncOperation"].split(BASE_URL, 1)[1].split("?")[0]
    arc_op_path = arc_headers["Azure-AsyncOperation"].split(BASE_URL, 1)[1].split("?")[0]

    assert _keys(emu, "PUT", f"{vm}/runCommands/x") == [
        ("arm.write", SUB), ("compute.update.subscription", SUB), ("compute.update.vm", vm_key)]  # fmt: skip
    assert _keys(emu, "GET", f"{vm}/runCommands/x") == [
        ("arm.read", SUB), ("compute.get.subscription", SUB), ("compute.get.vm", vm_key)]  # fmt: skip
    assert _keys(emu, "DELETE", f"{vm}/runCommands/x") == [
        ("arm.delete", SUB), ("compute.update.subscription", SUB), ("compute.update.vm", vm_key)]  # fmt: skip
    assert _keys(emu, "GET", op_path) == [
        ("arm.read", SUB), ("compute.operation.subscription", SUB), ("compute.operation.vm", vm_key)]  # fmt: skip
    assert _keys(emu, "PUT", f"{arc}/runCommands/x") == [("arm.write", SUB)]
    assert _keys(emu, "GET", f"{arc}/runCommands/x") == [("arm.read", SUB)]
    assert _keys(emu, "DELETE", f"{arc}/runCommands/x") == [("arm.delete", SUB)]
    assert _keys(emu, "GET", arc_op_path) == [("arm.read", SUB)]


def test_vm_run_commands_are_throttled_by_the_update_vm_policy() -> None:
    emu = AzureEmulator(throttling=True, buckets={"compute.update.vm": (2, 0)})
    emu.add_vm(SUB, RG, "vm1", power_state="running")
    client = ComputeManagementClient(FakeCredential(), SUB, base_url=BASE_URL, transport=emu.transport(),
                                     credential_scopes=[SCOPE], retry_total=0)  # fmt: skip
    for name in ("a", "b"):
        client.virtual_machine_run_commands.begin_create_or_update(RG, "vm1", name, body(), polling=False)
    with pytest.raises(HttpResponseError) as throttled:
        client.virtual_machine_run_commands.begin_create_or_update(RG, "vm1", "c", body(), polling=False)
    assert throttled.value.status_code == 429 and throttled.value.response is not None
    assert throttled.value.response.headers["Retry-After"] == "3600"
    assert client.virtual_machine_run_commands.get_by_virtual_machine(RG, "vm1", "a").name == "a"  # a get policy


# ----- OS type in Resource Graph -----------------------------------------------------------


def test_os_type_of_vms_and_arc_machines_in_resource_graph(emu: AzureEmulator) -> None:
    emu.add_vm(SUB, RG, "win", os_type="Windows")
    emu.add_vm(SUB, RG, "tux")
    arc = emu.add_arc_machine(SUB, RG, "arc-win", os_type="windows")
    emu.add_arc_machine(SUB, RG, "arc-tux", status="Expired")
    client = ResourceGraphClient(FakeCredential(), base_url=BASE_URL, transport=emu.transport(),
                                 credential_scopes=[SCOPE])  # fmt: skip
    query = (
        "resources | where type in~ ('microsoft.compute/virtualmachines', 'microsoft.hybridcompute/machines') "
        "| project id, name, osType = tostring(properties.storageProfile.osDisk.osType), "
        "arcOsType = tostring(properties.osType), arcStatus = tostring(properties.status)"
    )

    def rows() -> dict[str, tuple[Any, Any, Any]]:
        data = cast(list[dict[str, Any]], client.resources(QueryRequest(subscriptions=[SUB], query=query)).data)
        return {r["name"]: (r["osType"], r["arcOsType"], r["arcStatus"]) for r in data}

    before = rows()
    emu.set_arc_status(arc, "disconnected")
    after = rows()
    win = compute(emu).virtual_machines.get(RG, "win")

    assert before == {"win": ("Windows", None, None), "tux": ("Linux", None, None),
                      "arc-win": (None, "windows", "Connected"), "arc-tux": (None, "linux", "Expired")}  # fmt: skip
    assert after["arc-win"] == (None, "windows", "Disconnected")
    assert win.storage_profile.os_disk.os_type == "Windows"
    assert win.storage_profile.image_reference.publisher == "MicrosoftWindowsServer"
    assert compute(emu).disks.get(RG, "win-osdisk").os_type == "Windows"


def test_seeding_validates_os_type_and_status(emu: AzureEmulator) -> None:
    with pytest.raises(ValueError, match="os_type"):
        emu.add_vm(SUB, RG, "vm1", os_type="BeOS")
    with pytest.raises(ValueError, match="status"):
        emu.add_arc_machine(SUB, RG, "arc1", status="Sleeping")
    arc = emu.add_arc_machine(SUB, RG, "arc1")
    with pytest.raises(ValueError, match="status"):
        emu.set_arc_status(arc, "Gone")
