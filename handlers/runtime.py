"""The composition root: settings, clients and ledger, built once per worker process.

`function_app.py` asks `get_runtime()` on every invocation; the first call reads and validates
the settings and builds nothing else until a client is needed. Tools that run the functions
outside the Functions host (the demo, the tests, the rehearsal CLI) call `configure()` first to
plug in their own transport or credential.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import cached_property

from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport
from azure.storage.queue import QueueClient

from handlers.clients import ClientFactory
from handlers.ledger import Ledger
from handlers.settings import Settings


class Runtime:
    """Everything an invocation needs, shared across invocations of one worker process."""

    def __init__(self, settings: Settings, clients: ClientFactory) -> None:
        self.settings = settings
        self.clients = clients

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.clients.ledger_table())

    def work_queue(self) -> QueueClient:
        return self.clients.queue(self.settings.work_queue)


_lock = threading.Lock()
_current: Runtime | None = None


def get_runtime() -> Runtime:
    """The process's runtime, built from the environment on first use."""
    global _current
    with _lock:
        if _current is None:
            settings = Settings.from_env()
            _current = Runtime(settings, ClientFactory(settings))
        return _current


def configure(
    *,
    environ: Mapping[str, str] | None = None,
    transport: HttpTransport | None = None,
    credential: TokenCredential | None = None,
) -> Runtime:
    """Replace the process's runtime: settings from `environ` (default: the environment)."""
    global _current
    settings = Settings.from_env(environ)
    runtime = Runtime(settings, ClientFactory(settings, transport=transport, credential=credential))
    with _lock:
        _current = runtime
    return runtime
