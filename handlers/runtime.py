"""The composition root: settings, clients and ledger, built once per worker process.

`function_app.py` asks `get_runtime()` on every invocation. The first call reads and validates
the settings, starts the telemetry when APPLICATIONINSIGHTS_CONNECTION_STRING is set
(`handlers.adapters.monitor`) and builds nothing else until a client is needed; later calls reuse
it (and so the warm connection pools and cached tokens) for as long as the app settings stay the
same. Tools that run the functions outside the Functions host (the demo, the tests, the
rehearsal CLI) call `configure()` first to plug in their own transport or credential.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport
from azure.storage.queue import QueueClient

from handlers.adapters.clients import ClientFactory
from handlers.adapters.operations import Progress
from handlers.core.clock import Clock, Ticker
from handlers.core.settings import Settings
from handlers.core.telemetry import invocation
from handlers.ledger import Ledger

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

# `invocation(context)` is the scope each function of function_app.py runs its handler in.
__all__ = ["Runtime", "configure", "get_runtime", "invocation", "reset"]

# Environment variables that feed Settings, the credential chain or the telemetry.
_WATCHED_PREFIXES = ("MAINTENANCE_", "AZURE_", "AzureWebJobsStorage", "AzureFunctionsJobHost__", "IDENTITY_", "MSI_",
                     "WEBSITE_HOSTNAME", "APPLICATIONINSIGHTS_")


class Runtime:
    """Everything an invocation needs, shared across invocations of one worker process."""

    def __init__(self, settings: Settings, clients: ClientFactory) -> None:
        self.settings = settings
        self.clients = clients
        self.clock: Clock = clients.clock
        # Tools that show a progress display (the rehearsal CLI) set this; the app leaves it None.
        self.progress: Progress | None = None

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.clients.ledger_table(), clock=self.clock.utcnow)

    def work_queue(self) -> QueueClient:
        return self.clients.queue(self.settings.work_queue)

    def handoff_container(self) -> ContainerClient:
        """Where a split run's coordinator hands its groups their machines (quick retries: a
        group without its hand-off asks Resource Graph)."""
        return self.clients.blob_container(self.settings.handoff_container, quick=True)


_lock = threading.Lock()
_current: Runtime | None = None
_current_env: tuple[tuple[str, str], ...] = ()
_transport: HttpTransport | None = None
_credential: TokenCredential | None = None
_clock: Clock | None = None


def get_runtime() -> Runtime:
    """The process's runtime, (re)built from the environment when the app settings change.

    The Functions host restarts the worker when app settings change, so in Azure this builds
    once; a long-lived process that edits its own environment gets fresh settings too.
    """
    global _current, _current_env
    env = _watched_environment()
    with _lock:
        if _current is None or env != _current_env:
            env_map = dict(env)
            settings = Settings.from_env(env_map)
            # The SDKs log every request and response at INFO: thousands of lines per run, and
            # CPU spent formatting them. Our own log lines say what was done.
            logging.getLogger("azure").setLevel(settings.sdk_log_level.upper())
            if env_map.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
                # Only then: the OpenTelemetry SDK and the distro are no part of a run without it.
                from handlers.adapters.monitor import start_telemetry

                start_telemetry(env_map)
            clients = ClientFactory(settings, transport=_transport, credential=_credential, clock=_clock)
            _current = Runtime(settings, clients)
            _current_env = env
        return _current


def configure(
    *, transport: HttpTransport | None = None, credential: TokenCredential | None = None,
    clock: Ticker | None = None, wall: Callable[[], datetime] | None = None,
) -> Runtime:
    """Use this transport, credential and/or clock for every client from now on; rebuild the runtime.

    `clock` ticks the monotonic seconds that pace requests, schedule status polls and time the
    waits: an emulator with simulated time passes its own, so they run on the time it simulates.
    `wall` gives the wall time deadlines and records are measured on (default: the system's).
    """
    global _current, _transport, _credential, _clock
    with _lock:
        _transport, _credential, _current = transport, credential, None
        _clock = Clock(clock, wall) if clock is not None or wall is not None else None
    return get_runtime()


def reset() -> None:
    """Forget the runtime and any injected transport or credential (back to production defaults)."""
    global _current, _transport, _credential, _clock
    with _lock:
        _transport, _credential, _clock, _current = None, None, None, None


def _watched_environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_WATCHED_PREFIXES)))
