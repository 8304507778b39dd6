"""Managed Run Command endpoints of VMs (Microsoft.Compute) and Arc machines (Microsoft.HybridCompute).

PUT …/runCommands/{name}: 201 (new) or 200 (existing name), each accepted PUT starting a new
execution, with `Azure-AsyncOperation` and `Location`; GET (a VM's `properties.instanceView` only
with `$expand=instanceView`, an Arc machine's always); DELETE: 202 + async operation, or 204 when
there is nothing to delete. Status codes are those azure-mgmt-compute 39 and azure-mgmt-hybridcompute
10 accept. See run_command_model.py for the executions and operations in simulated time.
"""

from __future__ import annotations

import uuid
from typing import Any

from .compute import poll_retry_after_headers, vm_not_found
from .ids import key
from .messages import ArmError, ArmRequest, Reply, error_reply
from .power import ArcMachine, VirtualMachine
from .routes import Route
from .run_command_model import Execution, RunCommand, RunCommandOperation, plan_execution, run_command_body
from .snapshots import normalize_location
from .state import EmulatorModel

_BAD_CONTENT = ArmError("InvalidRequestContent", "The request content was invalid and could not be deserialized.")
_SOURCES = ("script", "scriptUri", "commandId")
# Optional properties echoed back as given (protectedParameters and runAsPassword never are).
_ECHOED = ("runAsUser", "outputBlobUri", "errorBlobUri")


def _bad(message: str, code: str = "InvalidParameter", status: int = 400) -> Reply:
    return error_reply(status, ArmError(code, message))


def _not_found(type_name: str, resource_group: str, name: str) -> Reply:
    return _bad(
        f"The Resource '{type_name}/{name}' under resource group '{resource_group}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        "ResourceNotFound",
        404,
    )


def _machine(model: EmulatorModel, route: Route) -> tuple[VirtualMachine | ArcMachine | None, Reply]:
    """The route's VM or Arc machine, or None and the 404 to answer."""
    if route.arc:
        arc = model.arc_machines.get(key(route.machine_id))
        return arc, _not_found("Microsoft.HybridCompute/machines", route.resource_group, route.vm_name)
    return model.vms.get(key(route.machine_id)), vm_not_found(route.resource_group, route.vm_name)


def _absent(route: Route) -> Reply:
    parent = "Microsoft.HybridCompute/machines" if route.arc else "Microsoft.Compute/virtualMachines"
    return _not_found(f"{parent}/{route.vm_name}/runCommands", route.resource_group, route.resource_name)


def _parse_put(body: Any, machine_location: str) -> tuple[dict[str, Any], Reply | None]:
    """The echoed properties and the execution's inputs of a PUT body, or the 400 to answer."""
    if not isinstance(body, dict):
        return {}, error_reply(400, _BAD_CONTENT)
    location = body.get("location")
    if not isinstance(location, str) or not location.strip():
        return {}, _bad("Required parameter 'location' is missing (null).")
    if normalize_location(location) != normalize_location(machine_location):
        return {}, _bad(f"The run command location '{location}' must be the machine's location '{machine_location}'.")
    properties = body.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    source = properties.get("source")
    source = source if isinstance(source, dict) else {}
    given = [name for name in _SOURCES if isinstance(source.get(name), str) and source[name]]
    if len(given) != 1:
        return {}, _bad("Exactly one of 'source.script', 'source.scriptUri' or 'source.commandId' is required.")
    timeout = properties.get("timeoutInSeconds", 0) or 0
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
        return {}, _bad(f"The value '{timeout}' of parameter 'timeoutInSeconds' is not a valid number of seconds.")
    raw_parameters = properties.get("parameters") or []
    if not isinstance(raw_parameters, list) or not all(
        isinstance(p, dict) and isinstance(p.get("name"), str) for p in raw_parameters
    ):
        return {}, _bad("Parameter 'parameters' must be a list of {name, value} objects.")
    tags = body.get("tags") or {}
    if not isinstance(tags, dict):
        return {}, error_reply(400, _BAD_CONTENT)
    echoed: dict[str, Any] = {
        "source": {given[0]: source[given[0]]},
        "parameters": [{"name": p["name"], "value": str(p.get("value", ""))} for p in raw_parameters],
        "asyncExecution": bool(properties.get("asyncExecution", False)),
        "timeoutInSeconds": timeout,
        "treatFailureAsDeploymentFailure": bool(properties.get("treatFailureAsDeploymentFailure", False)),
    }
    echoed.update({name: properties[name] for name in _ECHOED if properties.get(name)})
    fields = {"properties": echoed, "script": source[given[0]], "tags": {str(k): str(v) for k, v in tags.items()}}
    return fields, None


def _not_ready(model: EmulatorModel, machine: VirtualMachine | ArcMachine, now: float) -> Reply | None:
    """The 409 for a machine that cannot run a command now (a VM not running, an Arc machine not
    Connected), or None."""
    if isinstance(machine, ArcMachine):
        if machine.status == "Connected":
            return None
        message = (f"The machine '{machine.name}' is {machine.status}: run commands need the Connected Machine agent "
                   "to be connected.")  # fmt: skip
        return _bad(message, "OperationNotAllowed", 409)
    machine.settle(now)
    if machine.power_state == "running":
        return None
    message = (f"Cannot modify extensions in the VM when the VM is not running: VM '{machine.name}' is in power "
               f"state 'PowerState/{machine.power_state}'.")  # fmt: skip
    return _bad(message, "OperationNotAllowed", 409)


def _operation_headers(request: ArmRequest, model: EmulatorModel, op: RunCommandOperation) -> dict[str, str]:
    """Azure-AsyncOperation and Location for `op`, on the host the client called."""
    origin = request.url.split("/subscriptions/", 1)[0]
    api = request.query.get("api-version", "")
    arc = ("Microsoft.HybridCompute", "operationStatus")
    provider, segment = arc if op.arc else ("Microsoft.Compute", "operations")
    url = (
        f"{origin}/subscriptions/{op.subscription_id}/providers/{provider}/locations/{op.location}"
        f"/{segment}/{op.id}?p={uuid.uuid4()}&api-version={api}"
    )
    return {"Azure-AsyncOperation": url, "Location": url + "&monitor=true", **poll_retry_after_headers(model)}


def put_run_command(model: EmulatorModel, request: ArmRequest, route: Route) -> Reply:
    """PUT: validate, then start a new execution and the operation that tracks it."""
    machine, missing = _machine(model, route)
    if machine is None:
        return missing
    try:
        body = request.json()
    except ValueError:
        return error_reply(400, _BAD_CONTENT)
    fields, refusal = _parse_put(body, machine.location)
    if refusal is not None:
        return refusal
    now = model.clock.now()
    store = model.run_command_store
    store.settle(now)
    rid = f"{machine.id}/runCommands/{route.resource_name}"
    existing = store.resources.get(key(rid))
    if existing is not None and existing.deleting is not None:
        message = f"Run command '{existing.name}' is being deleted; retry when the deletion has completed."
        return _bad(message, "OperationNotAllowed", 409)
    not_ready = _not_ready(model, machine, now)
    if not_ready is not None:
        return not_ready
    execution, op, failed = _start(model, route, machine, existing.name if existing else route.resource_name,
                                   fields, now)  # fmt: skip
    if existing is None:
        rc = RunCommand(rid, route.resource_name, machine.id, route.arc, machine.location, fields["tags"],
                        fields["properties"], now, execution, op)  # fmt: skip
        store.resources[key(rid)] = rc
    else:
        existing.execution.cancel(now)  # a newer execution supersedes one still under way
        rc = existing
        rc.execution, rc.operation, rc.properties, rc.tags = execution, op, fields["properties"], fields["tags"]
        rc.updated, rc.puts = True, rc.puts + 1
    body_out = run_command_body(model.clock, rc, now, expand=False)
    headers = _operation_headers(request, model, op)
    return Reply(200 if existing else 201, body_out, headers, fault="operation" if failed else "")


def _start(
    model: EmulatorModel, route: Route, machine: VirtualMachine | ArcMachine, name: str, fields: dict[str, Any],
    now: float,
) -> tuple[Execution, RunCommandOperation, bool]:  # fmt: skip
    """A new execution (as the script rules decide) and its PUT operation; True when made to fail."""
    store = model.run_command_store
    properties, script = fields["properties"], fields["script"]
    rule = store.behaviour(machine.id, script)
    duration = rule.duration if rule else float(model.run_command_default_seconds)
    exit_code, output, error = (rule.exit_code, rule.output, rule.error) if rule else (0, "", "")
    start = now + float(model.run_command_start_delay)
    timeout = properties["timeoutInSeconds"]
    ends, state, code = plan_execution(start, timeout, duration, exit_code)
    parameters = {p["name"]: p["value"] for p in properties["parameters"]}
    execution = Execution(machine.id, name, script, parameters, timeout, properties["asyncExecution"],
                          properties["treatFailureAsDeploymentFailure"], now, start, ends, state, code, output,
                          error)  # fmt: skip
    failure = model.take_failure("runCommand", f"{machine.id}/runCommands/{name}", "operation")
    fixed_end = now + float(model.run_command_provisioning_seconds)
    if failure is not None:
        # The extension never ran the script: the execution fails when it would have started.
        execution.starts, execution.ends, execution.final_state, execution.exit_code = None, start, "Failed", None
        execution.output, execution.error, execution.message = "", "", failure[1].message
        fixed_end = start
    store.executions.append(execution)
    op = RunCommandOperation(str(uuid.uuid4()), "runCommand", key(machine.id), key(f"{machine.id}/runCommands/{name}"),
                             route.subscription_id, machine.location, route.arc, now, fixed_end, execution,
                             failure[1] if failure else None)  # fmt: skip
    store.operations[op.id] = op
    return execution, op, failure is not None


def get_run_command(model: EmulatorModel, request: ArmRequest, route: Route) -> Reply:
    """GET: the resource; its instanceView with `$expand=instanceView` (always for Arc)."""
    machine, missing = _machine(model, route)
    if machine is None:
        return missing
    now = model.clock.now()
    store = model.run_command_store
    store.settle(now)
    rc = store.resources.get(key(f"{machine.id}/runCommands/{route.resource_name}"))
    if rc is None:
        return _absent(route)
    expand = route.arc or request.query.get("$expand", "").lower() == "instanceview"
    return Reply(200, run_command_body(model.clock, rc, now, expand=expand))


def delete_run_command(model: EmulatorModel, request: ArmRequest, route: Route) -> Reply:
    """DELETE: 202 + async operation (an execution still under way ends Canceled now); 204 when absent."""
    now = model.clock.now()
    store = model.run_command_store
    store.settle(now)
    rc = store.resources.get(key(route.resource_id or ""))
    if rc is None:
        return Reply(204)
    op = rc.deleting
    failure = None
    if op is None:  # a delete already in flight is joined
        failure = model.take_failure("deleteRunCommand", rc.id, "operation")
        duration = float(model.operation_durations["deleteRunCommand"])
        op = RunCommandOperation(str(uuid.uuid4()), "deleteRunCommand", key(rc.machine_id), key(rc.id),
                                 route.subscription_id, rc.location, rc.arc, now, now + duration,
                                 error=failure[1] if failure else None)  # fmt: skip
        store.operations[op.id] = op
        rc.deleting = op
        if failure is None:
            rc.execution.cancel(now)
    return Reply(202, None, _operation_headers(request, model, op), fault="operation" if failure else "")


def operation_status(model: EmulatorModel, request: ArmRequest, op: RunCommandOperation) -> Reply:
    """GET an operation: the Azure-AsyncOperation body, or (monitor=true) the Location semantics."""
    now = model.clock.now()
    store = model.run_command_store
    store.settle(now)
    status = op.status(now)
    error = op.failure()
    rc = store.resources.get(op.resource_key) if op.kind == "runCommand" else None
    if request.query.get("monitor", "").lower() == "true":
        if status == "InProgress":
            return Reply(202, None, {"Location": request.url, **poll_retry_after_headers(model)})
        if status != "Succeeded" and error is not None:
            return error_reply(409, error)
        return Reply(200, run_command_body(model.clock, rc, now, expand=False) if rc else None)
    body: dict[str, Any] = {"name": op.id, "status": status, "startTime": model.clock.isoformat(op.started)}
    if status != "InProgress":
        body["endTime"] = model.clock.isoformat(op.ends())
    if status != "Succeeded" and status != "InProgress" and error is not None:
        body["error"] = error.as_dict()
    return Reply(200, body, poll_retry_after_headers(model) if status == "InProgress" else {})


def find_operation(model: EmulatorModel, route: Route) -> RunCommandOperation | None:
    """The run command operation a status route names (None: not one of these, or another subscription's)."""
    op = model.run_command_store.operations.get(route.operation_id)
    if op is None or op.arc != (route.name == "arcOperation"):
        return None
    return op if op.subscription_id.lower() == route.subscription_id.lower() else None
