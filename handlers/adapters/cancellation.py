"""Cancelling a maintenance run: the applyUpdates PUT with status "Cancel".

No released SDK offers this call (azure-mgmt-maintenance 2.1.0 has none, and its
apply-updates create calls *install* updates instead), so the request goes through a bare ARM
pipeline that carries the same credential, retry and logging policies as every other client.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient

from handlers.core.errors import InvalidEventError
from handlers.core.events import MaintenanceEvent


@dataclass(frozen=True)
class CancelResult:
    status_code: int
    status: str  # properties.status as the service answered ("Cancelled")


class CancellationRefusedError(HttpResponseError):
    """The service answered, but did not confirm the run as cancelled."""


def cancel_run(
    arm: ARMPipelineClient, event: MaintenanceEvent, *, endpoint: str, api_version: str, now: datetime,
    **options: Any,
) -> CancelResult:
    """Cancel the run the event belongs to. Repeating it is harmless. `options` go to the
    pipeline (e.g. `timeout`: how long the retry policy may keep trying, in seconds).

    Refuses (ValueError) once the cancellation cutoff has passed: the service ignores a late
    cancel, and an operator must not believe one was made.
    """
    cutoff = event.cancellation_cutoff
    if cutoff is None:
        raise InvalidEventError("data.cancellationCutOffDateTime", "required to cancel a run")
    if now >= cutoff:
        raise ValueError(f"cancellation cutoff {cutoff.isoformat()} has passed; a cancel would not be honoured")
    # correlation_id was validated against the applyUpdates id shape when the event was parsed,
    # so it is a plain ARM path with nothing that could leave the endpoint or add a query.
    request = HttpRequest(
        "PUT",
        f"{endpoint}{event.correlation_id}",
        params={"api-version": api_version},
        json={"properties": {"status": "Cancel"}},
    )
    response = arm.send_request(request, **options)
    body: dict[str, Any] = {}
    try:
        parsed = response.json()
        body = parsed if isinstance(parsed, dict) else {}
    except ValueError:
        body = {}
    status = str((body.get("properties") or {}).get("status") or "")
    if response.status_code not in (200, 201):
        raise HttpResponseError(response=response)
    if status.lower() not in ("cancelled", "canceled"):
        raise CancellationRefusedError(
            message=f"cancel answered {response.status_code} with status {status or 'missing'!r}, not Cancelled",
            response=response,
        )
    return CancelResult(response.status_code, status)
