"""Publishing CloudEvents to an Event Grid custom topic with azure-eventgrid.

Two things about `EventGridPublisherClient` (azure-eventgrid 4.2x) shape this module:
- for a basic custom topic it builds its pipeline from the endpoint and credential only,
  dropping keyword options such as `transport`, `retry_total` and `connection_timeout`;
  per-call options on `send()` do reach the pipeline, so timeouts are passed there;
- those per-call options also reach the legacy CloudEvent model, which logs a WARNING per
  event and option ("... is not a known attribute ... will be ignored"): filtered below.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from azure.core.credentials import AzureKeyCredential, TokenCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient

from .config import ConfigError, ForwardingConfig

TYPE_PREFIX = "Azure.ScheduledEvents."
_SERIALIZATION_LOGGER = "azure.eventgrid._legacy._generated._serialization"


class Publisher(Protocol):
    """Sends a batch of CloudEvents in order, or raises (azure.core.exceptions.AzureError)."""

    def send(self, events: Sequence[CloudEvent]) -> None: ...

    def close(self) -> None: ...


class EventGridPublisher:
    """One attempt per `send()`: the forwarder's persisted backlog does the retrying."""

    def __init__(self, endpoint: str, credential: AzureKeyCredential | TokenCredential, *,
                 timeout_seconds: float = 10.0) -> None:
        _quiet_per_call_option_warnings()
        self._client = EventGridPublisherClient(endpoint, credential)
        self._timeout = timeout_seconds

    def send(self, events: Sequence[CloudEvent]) -> None:
        self._client.send(list(events), connection_timeout=self._timeout, read_timeout=self._timeout,
                          retry_total=0)

    def close(self) -> None:
        self._client.close()


def build_publisher(config: ForwardingConfig) -> EventGridPublisher:
    return EventGridPublisher(config.endpoint, build_credential(config), timeout_seconds=config.timeout_seconds)


def build_credential(config: ForwardingConfig) -> AzureKeyCredential | TokenCredential:
    """The topic's access key (read from a file), or an Entra ID credential for the VM."""
    if config.auth == "key":
        if config.key_file is None:  # parse_config refuses this; one built by hand may not
            raise ConfigError("forwarding.key_file", "required when forwarding.auth is 'key'")
        try:
            key = Path(config.key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError("forwarding.key_file", f"cannot read {config.key_file}: {exc.strerror}") from exc
        if not key:
            raise ConfigError("forwarding.key_file", f"{config.key_file} is empty")
        return AzureKeyCredential(key)
    # Imported here so a key-only agent never loads the identity stack.
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if config.auth == "default":
        return DefaultAzureCredential(managed_identity_client_id=config.client_id)
    return ManagedIdentityCredential(client_id=config.client_id)


def to_cloud_event(record: Mapping[str, Any]) -> CloudEvent:
    """A backlog record (see `forwarder.change_record`) as an azure-core CloudEvent."""
    return CloudEvent(
        source=record["source"],
        type=record["type"],
        id=record["id"],
        time=datetime.fromisoformat(record["time"]),
        subject=record.get("subject"),
        data=record.get("data"),
        datacontenttype="application/json",
    )


class _DropUnknownAttributeWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "is not a known attribute of class" not in record.getMessage()


def _quiet_per_call_option_warnings() -> None:
    logger = logging.getLogger(_SERIALIZATION_LOGGER)
    if not any(isinstance(f, _DropUnknownAttributeWarnings) for f in logger.filters):
        logger.addFilter(_DropUnknownAttributeWarnings())
