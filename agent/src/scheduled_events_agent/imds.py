"""HTTP client for the Instance Metadata Service: Scheduled Events, approvals, the VM's name.

Every request carries `Metadata: true` (without it IMDS answers 400) and ignores proxy
variables: IMDS is link-local and must never go through a proxy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import requests

from .document import Document, parse_document

INSTANCE_API_VERSION = "2021-02-01"
_BODY_LIMIT = 2000


class EndpointError(Exception):
    """IMDS could not answer (down, slow, 5xx) or refused the request (4xx, with its body)."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        self.status = status
        self.body = body
        super().__init__(message)

    @property
    def is_bad_request(self) -> bool:
        return self.status is not None and 400 <= self.status < 500


class ImdsClient:
    """Scheduled Events GET/POST and instance name lookups, with explicit timeouts."""

    def __init__(
        self,
        scheduled_events_url: str,
        instance_metadata_url: str,
        *,
        api_version: str = "2020-07-01",
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self._events_url = scheduled_events_url.rstrip("/")
        self._instance_url = instance_metadata_url.rstrip("/")
        self._api_version = api_version
        self._timeout = timeout
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no HTTP(S)_PROXY for a link-local address
        self._session = session

    def get_document(self, *, timeout: float | None = None) -> Document:
        """The current Scheduled Events document; raises EndpointError or MalformedDocumentError."""
        response = self._request("GET", self._events_url, params={"api-version": self._api_version},
                                 timeout=timeout)
        return parse_document(response.content)

    def approve(self, event_ids: Iterable[str]) -> None:
        """Start the events now (POST StartRequests). 200 also when already approved."""
        body = {"StartRequests": [{"EventId": event_id} for event_id in event_ids]}
        self._request("POST", self._events_url, params={"api-version": self._api_version},
                      data=json.dumps(body), headers={"Content-Type": "application/json"})

    def get_vm_name(self) -> str:
        name = self._compute_text("name")
        if not name:
            raise EndpointError("instance metadata returned an empty VM name")
        return name

    def get_resource_id(self) -> str | None:
        """The VM's ARM id, or None when IMDS does not give one (older platforms)."""
        try:
            return self._compute_text("resourceId") or None
        except EndpointError:
            return None

    def close(self) -> None:
        self._session.close()

    def _compute_text(self, name: str) -> str:
        response = self._request("GET", f"{self._instance_url}/compute/{name}",
                                 params={"api-version": INSTANCE_API_VERSION, "format": "text"})
        return response.text.strip()

    def _request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str],
        timeout: float | None = None,
        data: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        seconds = timeout or self._timeout
        try:
            response = self._session.request(
                method, url, params=params, data=data, headers={"Metadata": "true", **(headers or {})},
                timeout=(seconds, seconds), allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise EndpointError(f"{method} {url}: no answer within {seconds:g} s") from exc
        except requests.RequestException as exc:
            raise EndpointError(f"{method} {url}: {_reason(exc)}") from exc
        if response.status_code != 200:
            body = response.text[:_BODY_LIMIT]
            raise EndpointError(f"{method} {url}: HTTP {response.status_code}: {body or '(empty body)'}",
                                status=response.status_code, body=body)
        return response


def _reason(exc: requests.RequestException) -> str:
    # requests nests the useful part ("Connection refused") several exceptions deep.
    text = str(exc)
    marker = "Errno"
    return text[text.index(marker) - 1:].rstrip(")'\"") if marker in text else text[:300]
