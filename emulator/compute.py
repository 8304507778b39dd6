"""Microsoft.Compute virtual machines: GET, instance view, power actions, operation status."""

from __future__ import annotations

import uuid
from typing import Any

from .disks import disk_names, storage_profile
from .messages import ArmError, ArmRequest, Reply, error_reply
from .power import Operation, VirtualMachine
from .state import EmulatorModel

_AGENT_VERSION = "2.10.0.8"
_OS_NAMES = {"Linux": ("ubuntu", "22.04"), "Windows": ("Windows Server 2022 Datacenter Azure Edition", "10.0.20348")}


def vm_not_found(resource_group: str, name: str) -> Reply:
    return error_reply(
        404,
        ArmError(
            "ResourceNotFound",
            f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group "
            f"'{resource_group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        ),
    )


def _status(code: str, display: str, at: str, level: str = "Info", message: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"code": code, "level": level, "displayStatus": display, "time": at}
    if message:
        status["message"] = message
    return status


def instance_view_body(model: EmulatorModel, vm: VirtualMachine) -> dict[str, Any]:
    """A VirtualMachineInstanceView as compute answers it."""
    changed = model.clock.isoformat(vm.history[-1][0])
    state = vm.power_state
    provisioning = (
        _status("ProvisioningState/updating", "Updating", changed)
        if vm.pending
        else _status("ProvisioningState/succeeded", "Provisioning succeeded", changed)
    )
    os_name, os_version = _OS_NAMES[vm.os_type]
    body: dict[str, Any] = {
        "computerName": vm.name,
        "osName": os_name,
        "osVersion": os_version,
        "hyperVGeneration": "V2",
        "disks": [
            {"name": name, "statuses": [_status("ProvisioningState/succeeded", "Provisioning succeeded", changed)]}
            for name in disk_names(vm)
        ],
        "statuses": [provisioning, _status(f"PowerState/{state}", f"VM {state}", changed)],
    }
    # The guest agent only reports from a running VM; a deallocated VM has no agent section at all.
    # A running VM whose agent is down (set_agent_ready(vm, False)) reports it as not ready.
    if state == "running" and vm.agent_ready:
        body["vmAgent"] = {
            "vmAgentVersion": _AGENT_VERSION,
            "statuses": [
                _status(
                    "ProvisioningState/succeeded",
                    "Ready",
                    changed,
                    message="GuestAgent is running and processing the extensions.",
                )
            ],
            "extensionHandlers": [],
        }
    elif state != "deallocated":
        # Unresponsive agent of a running VM, or a VM between states: the portal's "Not Ready".
        down = "VM Agent is unresponsive." if state == "running" else "VM status blob is found but not yet populated."
        body["vmAgent"] = {
            "vmAgentVersion": "Unknown",
            "statuses": [
                _status(
                    "ProvisioningState/Unavailable",
                    "Not Ready",
                    changed,
                    level="Warning",
                    message=down,
                )
            ],
        }
    return body


def vm_body(model: EmulatorModel, vm: VirtualMachine, *, expand_instance_view: bool) -> dict[str, Any]:
    """A VirtualMachine resource as compute answers a GET."""
    properties: dict[str, Any] = {
        "vmId": vm.vm_id,
        "hardwareProfile": {"vmSize": "Standard_B2s"},
        "storageProfile": storage_profile(vm),
        "osProfile": {"computerName": vm.name, "adminUsername": "azureuser", "secrets": []},
        "networkProfile": {"networkInterfaces": []},
        "provisioningState": "Updating" if vm.pending else "Succeeded",
        "timeCreated": model.clock.isoformat(vm.created),
    }
    if expand_instance_view:
        properties["instanceView"] = instance_view_body(model, vm)
    return {
        "name": vm.name,
        "id": vm.id,
        "type": "Microsoft.Compute/virtualMachines",
        "location": vm.location,
        "tags": dict(vm.tags),
        "properties": properties,
    }


def _operation_urls(request: ArmRequest, op: Operation) -> tuple[str, str]:
    """(Azure-AsyncOperation, Location) for `op`, on the host the client called."""
    origin = request.url.split("/subscriptions/", 1)[0]
    api = request.query.get("api-version", "2024-07-01")
    base = (
        f"{origin}/subscriptions/{op.subscription_id}/providers/Microsoft.Compute"
        f"/locations/{op.location}/operations/{op.id}?p={uuid.uuid4()}&api-version={api}"
    )
    return base, base + "&monitor=true"


def poll_retry_after_headers(model: EmulatorModel) -> dict[str, str]:
    # No Retry-After by default so the client's polling_interval decides (Retry-After: 0 would not).
    if model.poll_retry_after is None:
        return {}
    return {"Retry-After": str(max(1, round(model.poll_retry_after)))}


def vm_action(model: EmulatorModel, request: ArmRequest, vm: VirtualMachine, action: str) -> Reply:
    """POST start / deallocate / powerOff: 202 with the operation's status URLs."""
    now = model.clock.now()
    failure = model.take_failure(action, vm.id, "operation")
    error = failure[1] if failure else None
    op = vm.begin(action, str(uuid.uuid4()), now, float(model.operation_durations[action]), error)
    model.operations[op.id] = op
    async_url, location_url = _operation_urls(request, op)
    headers = {"Azure-AsyncOperation": async_url, "Location": location_url, **poll_retry_after_headers(model)}
    return Reply(202, None, headers, fault="operation" if failure else "")


def operation_status(model: EmulatorModel, request: ArmRequest, op: Operation) -> Reply:
    """GET an operation: the Azure-AsyncOperation body, or (monitor=true) the Location semantics."""
    now = model.clock.now()
    vm = model.vms.get(op.vm_key)
    if vm is not None:
        vm.settle(now)
    status = op.status(now)
    if request.query.get("monitor", "").lower() == "true":
        if status == "InProgress":
            return Reply(202, None, {"Location": request.url, **poll_retry_after_headers(model)})
        if status == "Failed" and op.error is not None:
            return error_reply(409, op.error)
        # start/deallocate/powerOff have no result body: the final GET of ARMPolling lands here.
        return Reply(200, None)
    body: dict[str, Any] = {"startTime": model.clock.isoformat(op.started), "status": status, "name": op.id}
    if status != "InProgress":
        body["endTime"] = model.clock.isoformat(op.ends)
    if status == "Failed" and op.error is not None:
        body["error"] = op.error.as_dict()
    headers = poll_retry_after_headers(model) if status == "InProgress" else {}
    return Reply(200, body, headers)
