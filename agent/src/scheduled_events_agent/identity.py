"""This VM's name and ARM id, from the config or looked up in instance metadata with backoff.

The lookup failing must not stop polling Scheduled Events (the service switches itself off
after a day without calls, and the agent must notice events as soon as it can act on them);
until the name is known the agent runs no hooks and approves nothing, because only the name
says which events are for this VM.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .backoff import Backoff, OutageLog
from .imds import EndpointError, ImdsClient

log = logging.getLogger("scheduled_events_agent")


class VmIdentity:
    """`name` is None until known; call `refresh()` every tick (a no-op once it is)."""

    def __init__(self, imds: ImdsClient, *, vm_name: str | None, resource_id: str | None,
                 backoff: Backoff, monotonic: Callable[[], float]) -> None:
        self._imds = imds
        self.name = vm_name
        self.resource_id = resource_id
        self._backoff = backoff
        self._outage = OutageLog("instance metadata endpoint (VM name)", log, monotonic=monotonic)

    def refresh(self) -> str | None:
        if self.name is not None or not self._backoff.ready():
            return self.name
        try:
            name = self._imds.get_vm_name()
        except EndpointError as exc:
            level = logging.ERROR if exc.is_bad_request else logging.WARNING
            self._outage.failed(f"{exc}; no hooks run and nothing is approved until this VM's name is known",
                                retry_in=self._backoff.failed(), level=level)
            return None
        self.resource_id = self.resource_id or self._imds.get_resource_id()
        self.name = name
        self._backoff.succeeded()
        self._outage.recovered()
        log.info("VM name %s, resource id %s (from instance metadata)", name, self.resource_id or "unknown")
        return name
