"""The app with nothing injected: its own transport, TLS verification and managed-identity
credential, against the emulator served over real HTTPS on loopback (as a deployed app meets ARM)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator import AzureEmulator
from emulator.azurite import Azurite
from emulator.functions_host import FunctionsHost
from emulator.https_server import LoopbackEndpoints, serve_on_loopback
from tests.conftest import SUB_A, make_event


@pytest.fixture
def loopback(emulator: AzureEmulator) -> Iterator[LoopbackEndpoints]:
    endpoints = serve_on_loopback(emulator)
    yield endpoints
    endpoints.close()


@pytest.fixture
def real_host(
    app_env: dict[str, str], azurite: Azurite, loopback: LoopbackEndpoints, monkeypatch: pytest.MonkeyPatch
) -> FunctionsHost:
    import function_app
    from handlers import runtime

    for name, value in loopback.environment().items():
        monkeypatch.setenv(name, value)
    runtime.configure()  # no transport, no credential: the production defaults
    host = FunctionsHost(function_app.app, azurite.connection_string)
    for queue_name in host.queue_triggers():
        host.queue(queue_name).clear_messages()
    return host




def test_pre_and_post_over_real_sockets(real_host: FunctionsHost, emulator: AzureEmulator) -> None:
    emulator.operation_durations.update({"start": 0.2, "deallocate": 0.2, "powerOff": 0.2})
    stopped = emulator.add_vm(SUB_A, "rg-tls", "vm-stopped", power_state="stopped")
    running = emulator.add_vm(SUB_A, "rg-tls", "vm-running", power_state="running")
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(pre["data"]["correlationId"], [stopped, running])

    real_host.deliver_event("pre_maintenance", pre)
    real_host.run_queues()
    assert emulator.vm_power_state(stopped) == "PowerState/running"

    real_host.deliver_event("post_maintenance", make_event("post", subscriptions=(SUB_A,)))
    real_host.run_queues()

    assert all(i.succeeded for i in real_host.invocations), [i.error for i in real_host.invocations]
    assert emulator.actions(stopped) == ["start", "powerOff"]
    assert emulator.actions(running) == []
    assert emulator.token_requests >= 1, "tokens came from the managed identity endpoint"
    assert all(r.url.startswith("https://127.0.0.1:") for r in emulator.requests)
