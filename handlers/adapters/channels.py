"""Sending a notice through each of Azure's channels, with the app's managed identity.

- Event Grid: CloudEvents 1.0 published to a custom topic (azure-eventgrid), role EventGrid
  Data Sender on the topic. Each event's id is derived from the run and milestone, so a
  subscriber can drop a duplicate too.
- E-mail: Azure Communication Services Email (azure-communication-email). The operation id is
  derived from the run and milestone, so the send can be looked up (`az communication email
  status get`); the send is accepted when the service queues it, and its delivery is followed
  for a short while only (`_EMAIL_WAIT_SECONDS`).
- Teams: a Workflows incoming webhook, POSTed a message with an Adaptive Card. Its URL is a
  secret (its signature is in the query): it is never logged or recorded; `scrub` takes it out
  of any error text before the error is.

Each function raises on failure (azure.core's errors); the caller records it and goes on.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest

from handlers.adapters.clients import ClientFactory

_EMAIL_WAIT_SECONDS = 30.0
# What sending e-mail with an Entra identity needs on the Communication Services resource (the ACS
# documentation's custom role; infra/app/email-sender-role.bicep).
EMAIL_SEND = ("Microsoft.Communication/CommunicationServices/Read",
              "Microsoft.Communication/CommunicationServices/Write", "Microsoft.Communication/EmailServices/write")
_NAMESPACE = uuid.UUID("6f0c8f4e-3d1b-4a51-9b8e-1f7a3c2d5e90")  # this toolkit's notices
_SECRETS = re.compile(r"(?i)(sig|sp|sv|code|token)=[^&\s'\"]+")


@dataclass(frozen=True)
class CloudEventNotice:
    type: str
    source: str
    subject: str
    data: Mapping[str, Any]
    time: datetime
    id: str


@dataclass(frozen=True)
class EmailNotice:
    subject: str
    text: str
    html: str


def notice_id(correlation_id: str, milestone: str, channel: str) -> str:
    """The same id for the same run, milestone and channel, whichever attempt sends it."""
    return str(uuid.uuid5(_NAMESPACE, f"{correlation_id.lower()}|{milestone}|{channel}"))


def publish_events(clients: ClientFactory, endpoint: str, events: Sequence[CloudEventNotice]) -> str:
    from azure.core.messaging import CloudEvent

    client = clients.channel("eventgrid", endpoint)
    client.send([CloudEvent(source=e.source, type=e.type, data=dict(e.data), subject=e.subject, time=e.time, id=e.id,
                            datacontenttype="application/json") for e in events])
    return f"published {len(events)} event(s)"


def send_email(clients: ClientFactory, endpoint: str, *, sender: str, to: Sequence[str], notice: EmailNotice,
               operation_id: str) -> str:
    client = clients.channel("email", endpoint)
    message = {
        "senderAddress": sender,
        "recipients": {"to": [{"address": address} for address in to]},
        "content": {"subject": notice.subject, "plainText": notice.text, "html": notice.html},
    }
    poller = client.begin_send(message, operation_id=operation_id, polling_interval=1)
    poller.wait(timeout=_EMAIL_WAIT_SECONDS)  # raises what the operation failed with
    if not poller.done():  # queued by the service; its delivery is not known yet
        return f"accepted (operation {operation_id}; delivery still in progress after {_EMAIL_WAIT_SECONDS:.0f} s)"
    result = poller.result() or {}
    status = str(result.get("status", ""))
    if status.lower() != "succeeded":
        error = result.get("error") or {}
        raise HttpResponseError(message=f"e-mail send {status or 'unknown'}: {error.get('message', error)}")
    return f"sent to {len(to)} recipient(s) (operation {operation_id})"


def post_card(clients: ClientFactory, url: str, card: Mapping[str, Any]) -> str:
    """POST a message carrying the Adaptive Card to a Teams Workflows webhook."""
    pipeline = clients.channel("webhook")
    body = {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": dict(card)}]}
    request = HttpRequest("POST", url, content=json.dumps(body).encode("utf-8"),
                          headers={"Content-Type": "application/json"})
    response = pipeline.send_request(request, connection_timeout=5, read_timeout=20)
    if response.status_code not in (200, 202):
        raise HttpResponseError(message=f"the webhook answered HTTP {response.status_code}", response=response)
    return f"posted (HTTP {response.status_code})"


def scrub(text: str, secret: str | None = None) -> str:
    """Error text without the webhook URL or any signature-like query value."""
    if secret:
        text = text.replace(secret, "<webhook URL>")
        text = text.replace(secret.split("?", 1)[0], "<webhook URL>")
    return _SECRETS.sub(lambda m: f"{m.group(1)}=***", text)
