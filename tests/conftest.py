"""Shared fixtures: a real Azurite for the session, a fresh Azure emulator per test, and a
Functions host stand-in that calls the registered functions as the real host does."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from emulator import AzureEmulator
from emulator.azurite import Azurite, AzuriteUnavailableError, start_azurite
from emulator.functions_host import FunctionsHost

ARM = "https://management.emulator.test"
SUB_A = "00000000-0000-0000-0000-00000000000a"
SUB_B = "00000000-0000-0000-0000-00000000000b"
CONFIG_ID = (
    f"/subscriptions/{SUB_A}/resourceGroups/rg-maintenance/providers/Microsoft.Maintenance/"
    "maintenanceConfigurations/mc-weekly"
)
# Variables that could make DefaultAzureCredential pick something other than the emulator's
# managed identity endpoint on a developer's machine.
_CREDENTIAL_ENV = (
    "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_TENANT_ID", "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_CLIENT_ID",
)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    try:
        instance = start_azurite()
    except AzuriteUnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Azurite is required in CI: {exc}")
        pytest.skip(f"Azurite unavailable on this machine, functional tests skipped: {exc}")
    yield instance
    instance.stop()


@pytest.fixture
def emulator() -> AzureEmulator:
    return AzureEmulator(time_scale=0.0005)


@pytest.fixture
def app_env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """App settings as a deployment would have them, pointed at Azurite and the emulator."""
    for name in _CREDENTIAL_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("MAINTENANCE_"):
            monkeypatch.delenv(name)
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "AZURE_RESOURCE_MANAGER_ENDPOINT": ARM,
        "IDENTITY_ENDPOINT": "http://127.0.0.1:41741/msi/token",
        "IDENTITY_HEADER": "emulator-identity-header",
        # A table per test keeps runs of different tests apart.
        "MAINTENANCE_LEDGER_TABLE": f"Runs{uuid.uuid4().hex[:12]}",
        "MAINTENANCE_POLL_INTERVAL_SECONDS": "1",
        # Most tests seed no patch results: without this each post phase would wait the default 15
        # (simulated) minutes for results nobody writes. Tests of patch results set their own wait.
        "MAINTENANCE_PATCH_RESULTS_WAIT_SECONDS": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def host(app_env: dict[str, str], azurite: Azurite, emulator: AzureEmulator) -> Iterator[FunctionsHost]:
    """The app as the Functions host runs it, its Azure calls answered by the emulator."""
    import function_app
    from handlers import runtime

    runtime.configure(transport=emulator.transport(), clock=emulator.clock)
    functions_host = FunctionsHost(function_app.app, azurite.connection_string)
    for queue_name in functions_host.queue_triggers():
        for name in (queue_name, f"{queue_name}-poison"):
            functions_host.queue(name).clear_messages()
    yield functions_host
    runtime.reset()


def make_event(
    kind: str,
    *,
    run: str = "20261122020000",
    subscriptions: tuple[str, ...] = (SUB_A, SUB_B),
    cutoff_in: timedelta = timedelta(minutes=30),
    status: str = "Succeeded",
    config_id: str = CONFIG_ID,
) -> dict[str, Any]:
    """An Event Grid-schema event with times relative to now (so the cutoff is ahead)."""
    now = datetime.now(UTC)
    cutoff = now + cutoff_in
    start = cutoff + timedelta(minutes=10)
    correlation = f"{config_id}/providers/Microsoft.Maintenance/applyUpdates/{run}"
    data: dict[str, Any] = {
        "correlationId": correlation,
        "maintenanceConfigurationId": config_id,
        "startDateTime": start.isoformat().replace("+00:00", "Z"),
        "endDateTime": (start + timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
        "resourceSubscriptionIds": list(subscriptions),
    }
    if kind == "pre":
        data["cancellationCutOffDateTime"] = cutoff.isoformat().replace("+00:00", "Z")
        event_type = "Microsoft.Maintenance.PreMaintenanceEvent"
    else:
        data["status"] = status
        event_type = "Microsoft.Maintenance.PostMaintenanceEvent"
    return {
        "id": correlation,  # as in Microsoft's samples: a redelivery carries the same id
        "topic": config_id,
        "subject": config_id.rsplit("/", 1)[-1],
        "eventType": event_type,
        "eventTime": now.isoformat().replace("+00:00", "Z"),
        "dataVersion": "1.0",
        "data": data,
    }


def wait_for_fallback_verdict(event: dict[str, Any], safety_seconds: int) -> None:
    """Sleep until the fallback verdict the pre phase queued is visible: half the safety margin
    (at most a minute) after the deadline, the cutoff minus MAINTENANCE_CUTOFF_SAFETY_SECONDS."""
    cutoff = datetime.fromisoformat(str(event["data"]["cancellationCutOffDateTime"]))
    visible = cutoff - timedelta(seconds=safety_seconds) + timedelta(seconds=min(60.0, safety_seconds / 2))
    time.sleep(max(0.0, (visible - datetime.now(UTC)).total_seconds()) + 1)


@pytest.fixture
def probe_server() -> Iterator[dict[str, Any]]:
    """A loopback application endpoint answering the statuses in `answers`, one per request (the
    last one for every request after them)."""
    state: dict[str, Any] = {"answers": [200], "requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            answers = state["answers"]
            self.send_response(answers[min(state["requests"], len(answers) - 1)])
            state["requests"] += 1
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/health"
    yield state
    server.shutdown()
    server.server_close()
