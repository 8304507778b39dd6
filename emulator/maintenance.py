"""Microsoft.Maintenance applyUpdates: the cancel PUT (and a GET), nothing that could install updates."""

from __future__ import annotations

from typing import Any

from .ids import key
from .messages import ArmError, ArmRequest, Reply, error_reply
from .state import EmulatorModel, MaintenanceRun


def _is_cancel(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    properties = body.get("properties")
    return isinstance(properties, dict) and str(properties.get("status", "")).lower() == "cancel"


def _run_body(model: EmulatorModel, run: MaintenanceRun) -> dict[str, Any]:
    return {
        "id": run.correlation_id,
        "name": run.correlation_id.rstrip("/").rsplit("/", 1)[-1],
        "type": "Microsoft.Maintenance/applyUpdates",
        "properties": {
            "status": run.status,
            "resourceId": run.maintenance_configuration_id,
            "lastUpdateTime": model.clock.isoformat(run.last_update),
        },
    }


def _not_found(request: ArmRequest) -> Reply:
    return error_reply(404, ArmError("ResourceNotFound", f"The maintenance run '{request.path}' was not found."))


def get_run(model: EmulatorModel, request: ArmRequest) -> Reply:
    """GET {correlationId}: the run with its current status."""
    run = model.runs.get(key(request.path))
    return _not_found(request) if run is None else Reply(200, _run_body(model, run))


def cancel(model: EmulatorModel, request: ArmRequest) -> Reply:
    """PUT {correlationId} with {"properties": {"status": "Cancel"}}: 200 Cancelled, idempotently."""
    run = model.runs.get(key(request.path))
    if run is None:
        return _not_found(request)
    try:
        body = request.json()
    except ValueError:
        body = None
    if not _is_cancel(body):
        # Anything but a cancel would be a request to install updates now: refuse it loudly.
        return error_reply(
            400, ArmError("InvalidRequestContent", 'Only {"properties": {"status": "Cancel"}} is accepted here.')
        )
    run.cancel_requests += 1
    if run.status != "Cancelled":
        run.status = "Cancelled"
        run.last_update = model.clock.now()
    return Reply(200, _run_body(model, run))
