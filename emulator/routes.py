"""Which emulated API a request is for, and which throttling buckets it draws on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .ids import key
from .messages import ArmRequest
from .state import EmulatorModel

_VM = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.compute"
    r"/virtualmachines/(?P<name>[^/]+)(?:/(?P<verb>instanceview|start|deallocate|poweroff))?/?$",
    re.IGNORECASE,
)
_OPERATION = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.compute/locations/(?P<loc>[^/]+)"
    r"/operations/(?P<op>[^/]+)/?$",
    re.IGNORECASE,
)
_DISK_RP = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.compute"
    r"/(?P<type>disks|snapshots)/(?P<name>[^/]+)/?$",
    re.IGNORECASE,
)
_DISK_OPERATION = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.compute/locations/(?P<loc>[^/]+)"
    r"/diskoperations/(?P<op>[^/]+)/?$",
    re.IGNORECASE,
)
_RUN_COMMAND = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/"
    r"(?P<provider>microsoft\.compute/virtualmachines|microsoft\.hybridcompute/machines)"
    r"/(?P<machine>[^/]+)/runcommands/(?P<name>[^/]+)/?$",
    re.IGNORECASE,
)
_ARC_OPERATION = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.hybridcompute/locations/(?P<loc>[^/]+)"
    r"/operationstatus/(?P<op>[^/]+)/?$",
    re.IGNORECASE,
)
# The Tags API at a machine's scope; the SDK's "/{scope}" may start the path with two slashes.
_TAGS = re.compile(
    r"^/+subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/"
    r"(?P<provider>microsoft\.compute/virtualmachines|microsoft\.hybridcompute/machines)"
    r"/(?P<machine>[^/]+)/providers/microsoft\.resources/tags/default/?$",
    re.IGNORECASE,
)
_TAGS_ROUTES = {"PATCH": ("tags.patch", "tags"), "GET": ("tags.get", "getTags")}
_RUN_COMMAND_ROUTES = {"PUT": ("runCommand.put", "runCommand"), "GET": ("runCommand.get", "getRunCommand"),
                       "DELETE": ("runCommand.delete", "deleteRunCommand")}  # fmt: skip
_GRAPH = re.compile(r"^/providers/microsoft\.resourcegraph/resources/?$", re.IGNORECASE)
_APPLY_UPDATES = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/.+/providers/microsoft\.maintenance/applyupdates/[^/]+/?$", re.IGNORECASE
)
_ACTIONS = {"start": "start", "deallocate": "deallocate", "poweroff": "powerOff"}
# (resource type, method) -> (route name, failure operation)
_DISK_RP_ROUTES = {
    ("disks", "GET"): ("disk.get", "disk"),
    ("snapshots", "GET"): ("snapshot.get", "getSnapshot"),
    ("snapshots", "PUT"): ("snapshot.put", "snapshot"),
    ("snapshots", "DELETE"): ("snapshot.delete", "deleteSnapshot"),
}


@dataclass(frozen=True)
class Route:
    """A recognised request. `failure_op`/`resource_id` are what AzureEmulator.fail matches on (for an
    operation status poll, the serving code matches the operation's VM or snapshot instead)."""

    # vm.get | vm.instanceView | vm.action | operation | graph | cancel | run.get
    # | disk.get | snapshot.get | snapshot.put | snapshot.delete | diskOperation
    # | runCommand.put | runCommand.get | runCommand.delete | arcOperation | tags.patch | tags.get
    name: str
    failure_op: str | None = None
    resource_id: str | None = None
    subscription_id: str = ""
    resource_group: str = ""
    vm_name: str = ""
    action: str = ""
    operation_id: str = ""
    resource_name: str = ""  # the disk's, snapshot's or run command's name
    machine_id: str = ""  # a run command's or tags' VM or Arc machine (canonical provider casing)
    arc: bool = False  # a run command or tags of an Arc machine (Microsoft.HybridCompute)


def match(request: ArmRequest) -> Route | None:
    """The route of `request`, or None (the emulator then answers 404)."""
    method, path = request.method, request.path
    if (m := _VM.match(path)) is not None:
        sub, rg, name, verb = m["sub"], m["rg"], m["name"], (m["verb"] or "").lower()
        rid = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
        base: dict[str, Any] = {"subscription_id": sub, "resource_group": rg, "vm_name": name, "resource_id": rid}
        if method == "GET" and verb == "":
            return Route("vm.get", failure_op="get", **base)
        if method == "GET" and verb == "instanceview":
            return Route("vm.instanceView", failure_op="instanceView", **base)
        if method == "POST" and verb in _ACTIONS:
            action = _ACTIONS[verb]
            return Route("vm.action", failure_op=action, action=action, **base)
        return None
    if (m := _TAGS.match(path)) is not None:
        return _tags_route(method, m)
    if (m := _RUN_COMMAND.match(path)) is not None:
        found = _RUN_COMMAND_ROUTES.get(method)
        if found is None:
            return None
        sub, rg, machine, name = m["sub"], m["rg"], m["machine"], m["name"]
        machine_id, arc = _machine_id(sub, rg, m["provider"], machine)
        return Route(found[0], failure_op=found[1], resource_id=f"{machine_id}/runCommands/{name}",
                     subscription_id=sub, resource_group=rg, vm_name=machine, resource_name=name,
                     machine_id=machine_id, arc=arc)  # fmt: skip
    if method == "GET" and (m := _ARC_OPERATION.match(path)) is not None:
        return Route("arcOperation", failure_op="operationStatus", subscription_id=m["sub"], operation_id=m["op"],
                     arc=True)  # fmt: skip
    if (m := _DISK_RP.match(path)) is not None:
        kind = m["type"].lower()
        found = _DISK_RP_ROUTES.get((kind, method))
        if found is None:
            return None
        sub, rg, name = m["sub"], m["rg"], m["name"]
        rid = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/{kind}/{name}"
        return Route(found[0], failure_op=found[1], resource_id=rid, subscription_id=sub, resource_group=rg,
                     resource_name=name)  # fmt: skip
    if method == "GET" and (m := _DISK_OPERATION.match(path)) is not None:
        return Route("diskOperation", failure_op="operationStatus", subscription_id=m["sub"], operation_id=m["op"])
    if method == "GET" and (m := _OPERATION.match(path)) is not None:
        return Route("operation", failure_op="operationStatus", subscription_id=m["sub"], operation_id=m["op"])
    if method == "POST" and _GRAPH.match(path):
        return Route("graph", failure_op="graph")
    if (m := _APPLY_UPDATES.match(path)) is not None:
        run: dict[str, Any] = {"resource_id": path.rstrip("/"), "subscription_id": m["sub"]}
        if method == "PUT":
            return Route("cancel", failure_op="cancel", **run)
        if method == "GET":
            return Route("run.get", failure_op="getRun", **run)
    return None


def _machine_id(sub: str, rg: str, provider: str, name: str) -> tuple[str, bool]:
    """A VM's or Arc machine's id in canonical provider casing, and whether it is an Arc machine."""
    arc = provider.lower().startswith("microsoft.hybridcompute")
    kind = "Microsoft.HybridCompute/machines" if arc else "Microsoft.Compute/virtualMachines"
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{kind}/{name}", arc


def _tags_route(method: str, m: re.Match[str]) -> Route | None:
    found = _TAGS_ROUTES.get(method)
    if found is None:
        return None
    machine_id, arc = _machine_id(m["sub"], m["rg"], m["provider"], m["machine"])
    return Route(found[0], failure_op=found[1], resource_id=machine_id, subscription_id=m["sub"],
                 resource_group=m["rg"], vm_name=m["machine"], machine_id=machine_id, arc=arc)  # fmt: skip


def throttle_keys(route: Route, model: EmulatorModel) -> list[tuple[str, str]]:
    """(bucket policy, scope) pairs this request consumes a token from."""
    sub = route.subscription_id
    if route.name == "graph":
        return [("graph", "")]
    if route.name in ("cancel", "tags.patch"):
        return [("arm.write", sub)]
    if route.name in ("run.get", "disk.get", "snapshot.get", "tags.get"):
        return [("arm.read", sub)]
    if route.name == "snapshot.put":
        return [("arm.write", sub), ("compute.snapshot.subscription", sub)]
    if route.name == "snapshot.delete":
        return [("arm.delete", sub)]
    if route.name == "diskOperation":
        return [("arm.read", sub), ("compute.operation.subscription", sub)]
    if route.name == "arcOperation":
        return [("arm.read", sub)]
    if route.name == "operation":
        op = model.operations.get(route.operation_id)
        run_op = model.run_command_store.operations.get(route.operation_id)
        vm_key = op.vm_key if op else run_op.machine_key if run_op else None
        keys = [("arm.read", sub), ("compute.operation.subscription", sub)]
        return keys + ([("compute.operation.vm", vm_key)] if vm_key else [])
    if route.name.startswith("runCommand."):
        return _run_command_keys(route)
    vm = key(route.resource_id or "")
    if route.name == "vm.action":
        policy = "compute.delete" if route.action == "deallocate" else "compute.update"
        return [("arm.write", sub), (f"{policy}.subscription", sub), (f"{policy}.vm", vm)]
    return [("arm.read", sub), ("compute.get.subscription", sub), ("compute.get.vm", vm)]


def _run_command_keys(route: Route) -> list[tuple[str, str]]:
    """VM run commands: ARM plus the compute "Update VM" / "Low-cost get" policies; Arc: ARM only."""
    sub, vm = route.subscription_id, key(route.machine_id)
    arm = {"runCommand.put": "arm.write", "runCommand.get": "arm.read", "runCommand.delete": "arm.delete"}[route.name]
    if route.arc:
        return [(arm, sub)]
    policy = "compute.get" if route.name == "runCommand.get" else "compute.update"
    return [(arm, sub), (f"{policy}.subscription", sub), (f"{policy}.vm", vm)]
