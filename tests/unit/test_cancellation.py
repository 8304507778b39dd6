"""The cancel call against the emulated ARM, through the app's own client factory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError

from emulator import AzureEmulator
from handlers.adapters.cancellation import CancellationRefusedError, cancel_run
from handlers.adapters.clients import ClientFactory
from handlers.core.events import parse_event
from handlers.core.settings import Settings
from tests.conftest import make_event

ENDPOINT = "https://management.emulator.test"


@pytest.fixture
def emulator() -> AzureEmulator:
    return AzureEmulator(time_scale=0.001)


@pytest.fixture
def factory(emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClientFactory]:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "unit")
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                                  "AZURE_RESOURCE_MANAGER_ENDPOINT": ENDPOINT, "MAINTENANCE_ARM_RETRIES": "2"})
    yield ClientFactory(settings, transport=emulator.transport())




def test_cancel_is_accepted_and_repeating_it_is_harmless(emulator: AzureEmulator, factory: ClientFactory) -> None:
    event = parse_event(make_event("pre"))
    emulator.add_run(event.correlation_id, [])
    now = datetime.now(UTC)
    for _ in range(2):
        result = cancel_run(factory.arm(), event, endpoint=ENDPOINT, api_version="2023-09-01-preview", now=now)
        assert result.status_code in (200, 201) and result.status == "Cancelled"
    assert emulator.run_status(event.correlation_id) == "Cancelled"
    puts = [r for r in emulator.requests if r.method == "PUT"]
    assert len(puts) == 2 and all("api-version=2023-09-01-preview" in r.url for r in puts)
    assert puts[0].path.lower().endswith(event.correlation_id.lower())


def test_cancel_after_the_cutoff_is_never_sent(emulator: AzureEmulator, factory: ClientFactory) -> None:
    event = parse_event(make_event("pre"))
    emulator.add_run(event.correlation_id, [])
    late = event.cancellation_cutoff + timedelta(seconds=1)  # type: ignore[operator]
    with pytest.raises(ValueError, match="cutoff"):
        cancel_run(factory.arm(), event, endpoint=ENDPOINT, api_version="2023-09-01-preview", now=late)
    assert emulator.requests == []


def test_error_answers_raise(emulator: AzureEmulator, factory: ClientFactory) -> None:
    event = parse_event(make_event("pre"))
    emulator.add_run(event.correlation_id, [])
    emulator.fail("cancel", status=403, code="AuthorizationFailed",
                  message="no Microsoft.Maintenance/applyUpdates/write")
    with pytest.raises(HttpResponseError) as raised:
        cancel_run(factory.arm(), event, endpoint=ENDPOINT, api_version="2023-09-01-preview",
                   now=datetime.now(UTC))
    assert raised.value.status_code == 403
    assert not isinstance(raised.value, CancellationRefusedError)


def test_throttled_cancel_is_retried(emulator: AzureEmulator, factory: ClientFactory) -> None:
    event = parse_event(make_event("pre"))
    emulator.add_run(event.correlation_id, [])
    emulator.fail("cancel", status=429, code="TooManyRequests", times=2)
    result = cancel_run(factory.arm(), event, endpoint=ENDPOINT, api_version="2023-09-01-preview",
                        now=datetime.now(UTC))
    assert result.status == "Cancelled"
    assert emulator.count(method="PUT", status=429) == 2
