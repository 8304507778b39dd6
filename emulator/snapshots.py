"""The disk resource provider's endpoints: GET a disk; PUT, GET, DELETE a snapshot; DiskOperations.

Status codes are those azure-mgmt-compute 39 accepts (and the disk RP sends): snapshot PUT 202
(new) or 200 (an update), never 201, which `_create_or_update_initial` refuses; DELETE 202, or 204
when there is nothing to delete. A 202 carries `Azure-AsyncOperation` and `Location`; ARMPolling
polls the former and, for a PUT, finishes with a GET of the snapshot itself.
"""

from __future__ import annotations

import uuid
from typing import Any

from .compute import poll_retry_after_headers
from .disks import disk_body, disk_state, resource_not_found
from .ids import key
from .messages import ArmError, ArmRequest, Reply, error_reply
from .routes import Route
from .snapshot_model import SNAPSHOT_SKUS, DiskOperation, Snapshot, invalid_name, snapshot_body
from .state import EmulatorModel

_BAD_CONTENT = ArmError("InvalidRequestContent", "The request content was invalid and could not be deserialized.")


def _bad(code: str, message: str, status: int = 400) -> Reply:
    return error_reply(status, ArmError(code, message))


def normalize_location(value: str) -> str:
    """'West Europe' and 'westeurope' are the same region to ARM."""
    return value.replace(" ", "").lower()


def get_disk(model: EmulatorModel, request: ArmRequest, route: Route) -> Reply:
    """GET …/disks/{name}: a managed disk (an ephemeral OS disk is no resource: 404)."""
    disk = model.disks.get(key(route.resource_id or ""))
    if disk is None or disk.ephemeral:
        return resource_not_found("disks", route.resource_group, route.resource_name)
    vm = model.vms.get(disk.vm_key)
    if vm is not None:
        vm.settle(model.clock.now())
    state = disk_state(vm, vm.power_state if vm else None)
    return Reply(200, disk_body(disk, vm, state, model.clock.isoformat(disk.created)))


def get_snapshot(model: EmulatorModel, request: ArmRequest, route: Route) -> Reply:
    now = model.clock.now()
    model.settle_snapshots(now)
    snapshot = model.snapshot_records.get(key(route.resource_id or ""))
    if snapshot is None:
        return resource_not_found("snapshots", route.resource_group, route.resource_name)
    return Reply(200, snapshot_body(model.clock, snapshot, now))


def _operation_headers(model: EmulatorModel, request: ArmRequest, op: DiskOperation) -> dict[str, str]:
    origin = request.url.split("/subscriptions/", 1)[0]
    api = request.query.get("api-version", "2024-03-02")
    url = (
        f"{origin}/subscriptions/{op.subscription_id}/providers/Microsoft.Compute/locations/{op.location}"
        f"/DiskOperations/{op.id}?p={uuid.uuid4()}&api-version={api}"
    )
    return {"Azure-AsyncOperation": url, "Location": url + "&monitor=true", **poll_retry_after_headers(model)}


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _parse_put(body: Any) -> tuple[dict[str, Any], Reply | None]:
    """The fields of a snapshot PUT body, or the 400 to answer."""
    if not isinstance(body, dict):
        return {}, error_reply(400, _BAD_CONTENT)
    location = body.get("location")
    if not isinstance(location, str) or not location.strip():
        return {}, _bad("LocationRequired", "The location property is required for this definition.")
    properties = _object(body.get("properties"))
    creation = _object(properties.get("creationData"))
    option = creation.get("createOption")
    if not option:
        return {}, _bad("InvalidParameter", "Required parameter 'creationData.createOption' is missing (null).")
    if str(option).lower() != "copy":
        return {}, _bad("InvalidParameter", f"createOption '{option}' is not emulated for snapshots; use 'Copy'.")
    source = creation.get("sourceResourceId")
    if not isinstance(source, str) or not source:
        return {}, _bad("InvalidParameter", "Required parameter 'creationData.sourceResourceId' is missing (null).")
    sku = _object(body.get("sku")).get("name")
    if sku is not None and sku not in SNAPSHOT_SKUS:
        return {}, _bad("InvalidParameter", f"The value '{sku}' of parameter 'sku.name' is not allowed.")
    tags = body.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        return {}, error_reply(400, _BAD_CONTENT)
    fields = {
        "location": location,
        "source": source,
        "incremental": bool(properties.get("incremental", False)),
        "sku": sku,
        "tags": {str(k): v for k, v in tags.items()},
    }
    return fields, None


def _update(model: EmulatorModel, snapshot: Snapshot, fields: dict[str, Any], now: float) -> Reply:
    """A PUT on an existing snapshot: only tags (and sku) may change; no new copy is made."""
    if snapshot.deleting is not None:
        message = f"Snapshot '{snapshot.name}' is being deleted; retry when the deletion has completed."
        return _bad("OperationNotAllowed", message, 409)
    if key(fields["source"]) != key(snapshot.source_id):
        return _bad("PropertyChangeNotAllowed", "Changing property 'sourceResourceId' is not allowed.", 409)
    if fields["incremental"] != snapshot.incremental:
        return _bad("PropertyChangeNotAllowed", "Changing property 'incremental' is not allowed.", 409)
    if normalize_location(fields["location"]) != normalize_location(snapshot.location):
        message = (
            f"The resource '{snapshot.name}' already exists in location '{snapshot.location}' in resource group "
            f"'{snapshot.resource_group}'. A resource with the same name cannot be created in location "
            f"'{fields['location']}'. Please select a new resource name."
        )
        return _bad("InvalidResourceLocation", message, 409)
    snapshot.tags = fields["tags"]
    if fields["sku"]:
        snapshot.sku = fields["sku"]
    return Reply(200, snapshot_body(model.clock, snapshot, now))


def put_snapshot(model: EmulatorModel, request: ArmRequest, route: Route) -> Reply:
    """PUT …/snapshots/{name}: 202 + async operation for a new snapshot, 200 for an update."""
    name_error = invalid_name(route.resource_name)
    if name_error is not None:
        return error_reply(400, name_error)
    try:
        body = request.json()
    except ValueError:
        return error_reply(400, _BAD_CONTENT)
    fields, refusal = _parse_put(body)
    if refusal is not None:
        return refusal
    now = model.clock.now()
    model.settle_snapshots(now)
    rid = route.resource_id or ""
    existing = model.snapshot_records.get(key(rid))
    if existing is not None and existing.state_at(now) != "Failed":
        return _update(model, existing, fields, now)
    # Absent, or Failed: a PUT (re)creates the snapshot.
    disk = model.disks.get(key(fields["source"]))
    if disk is None:
        # What the disk RP answers for a source it cannot find.
        name = fields["source"].rstrip("/").rsplit("/", 1)[-1]
        return _bad("NotFound", f"Resource {name} is not found.", 404)
    if disk.ephemeral:
        return _bad("OperationNotAllowed", f"Snapshots of ephemeral OS disks are not supported (disk '{disk.name}').")
    if normalize_location(fields["location"]) != normalize_location(disk.location):
        message = (
            f"The snapshot location '{fields['location']}' is invalid: a snapshot must be in the same region as "
            f"the source disk '{disk.id}' ({disk.location})."
        )
        return _bad("InvalidParameter", message)
    failure = model.take_failure("snapshot", rid, "operation")
    duration = float(model.operation_durations["snapshot"])
    snapshot = Snapshot(
        rid, route.subscription_id, route.resource_group, route.resource_name, disk.location, fields["tags"],
        source_id=disk.id, incremental=fields["incremental"], created=now, ready_at=now + duration,
        size_gb=disk.size_gb, os_type=disk.os_type if disk.is_os else None, sku=fields["sku"] or "Standard_LRS",
        error=failure[1] if failure else None, source_unique_id=disk.unique_id,
    )  # fmt: skip
    model.snapshot_records[key(rid)] = snapshot
    op = DiskOperation(str(uuid.uuid4()), "snapshot", key(rid), route.subscription_id, disk.location, now,
                       snapshot.ready_at, snapshot.error)  # fmt: skip
    model.disk_operations[op.id] = op
    return Reply(202, snapshot_body(model.clock, snapshot, now), _operation_headers(model, request, op),
                 fault="operation" if failure else "")


def delete_snapshot(model: EmulatorModel, request: ArmRequest, route: Route) -> Reply:
    """DELETE …/snapshots/{name}: 202 + async operation; 204 when there is no such snapshot."""
    now = model.clock.now()
    model.settle_snapshots(now)
    rid = route.resource_id or ""
    snapshot = model.snapshot_records.get(key(rid))
    if snapshot is None:
        return Reply(204)
    op = snapshot.deleting
    failure = None
    if op is None:  # a delete already in flight is joined
        failure = model.take_failure("deleteSnapshot", rid, "operation")
        duration = float(model.operation_durations["deleteSnapshot"])
        op = DiskOperation(str(uuid.uuid4()), "deleteSnapshot", key(rid), route.subscription_id, snapshot.location,
                           now, now + duration, failure[1] if failure else None)  # fmt: skip
        snapshot.deleting = op
        model.deleting_snapshots[key(rid)] = snapshot
        model.disk_operations[op.id] = op
    return Reply(202, None, _operation_headers(model, request, op), fault="operation" if failure else "")


def disk_operation_status(model: EmulatorModel, request: ArmRequest, route: Route) -> Reply:
    """GET …/DiskOperations/{id}: the Azure-AsyncOperation body, or (monitor=true) the Location semantics."""
    op = model.disk_operations.get(route.operation_id)
    if op is None or op.subscription_id.lower() != route.subscription_id.lower():
        return error_reply(404, ArmError("NotFound", f"Operation {route.operation_id} was not found."))
    now = model.clock.now()
    model.settle_snapshots(now)
    status = op.status(now)
    snapshot = model.snapshot_records.get(op.resource_key) if op.kind == "snapshot" else None
    output = snapshot_body(model.clock, snapshot, now) if snapshot is not None and status == "Succeeded" else None
    if request.query.get("monitor", "").lower() == "true":
        if status == "InProgress":
            return Reply(202, None, {"Location": request.url, **poll_retry_after_headers(model)})
        if status == "Failed" and op.error is not None:
            return error_reply(409, op.error)
        return Reply(200, output)
    body: dict[str, Any] = {"startTime": model.clock.isoformat(op.started), "status": status, "name": op.id}
    if status != "InProgress":
        body["endTime"] = model.clock.isoformat(op.ends)
    if status == "Failed" and op.error is not None:
        body["error"] = op.error.as_dict()
    if output is not None:
        body["properties"] = {"output": output}
    return Reply(200, body, poll_retry_after_headers(model) if status == "InProgress" else {})
