"""The azure-core HttpTransport that hands every request to the emulator, in process."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import requests
from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import HttpResponse as LegacyHttpResponse
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest as RestHttpRequest

# azure-core's own transports build on this class; there is no public equivalent.
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from .clock import EmulatorClock
from .messages import ArmRequest, DroppedConnection, Reply


class Server(Protocol):
    """What a transport needs from the emulator."""

    clock: EmulatorClock

    def serve(self, request: ArmRequest) -> Reply: ...


class _NoConnection:
    """Stands in for the socket a real response would close."""

    def close(self) -> None:
        return None


def _download(response: Any, pipeline: Any = None, decompress: bool = True, **kwargs: Any) -> Iterator[bytes]:
    yield response.content


class EmulatorResponse(HttpResponseImpl):
    """An `azure.core.rest.HttpResponse` whose body is already in memory."""

    def __init__(self, request: Any, status: int, headers: CaseInsensitiveDict, content: bytes) -> None:
        super().__init__(
            request=request,
            internal_response=_NoConnection(),
            status_code=status,
            reason=http.client.responses.get(status, ""),
            content_type=headers.get("Content-Type"),
            headers=headers,
            stream_download_generator=_download,
        )
        self._content = content


class LegacyEmulatorResponse(LegacyHttpResponse):
    """An `azure.core.pipeline.transport.HttpResponse`, for callers still on the legacy HttpRequest."""

    def __init__(self, request: Any, status: int, headers: CaseInsensitiveDict, content: bytes) -> None:
        super().__init__(request, _NoConnection())
        self.status_code = status
        self.headers = headers
        self.reason = http.client.responses.get(status, "")
        self.content_type = headers.get("Content-Type")
        self._content = content

    def body(self) -> bytes:
        return self._content

    def stream_download(self, pipeline: Any, **kwargs: Any) -> Iterator[bytes]:
        return iter([self._content])


def _body_bytes(raw: Any) -> bytes:
    if raw is None:
        return b""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8")
    if isinstance(raw, dict):
        return urlencode(raw).encode("utf-8")
    if hasattr(raw, "read"):
        data = raw.read()
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return b"".join(chunk if isinstance(chunk, bytes) else str(chunk).encode("utf-8") for chunk in raw)


def to_arm_request(request: Any) -> ArmRequest:
    """Read method, URL, headers and body from either kind of azure-core request."""
    raw = request.content if isinstance(request, RestHttpRequest) else request.data
    url = str(request.url)
    parts = urlsplit(url)
    return ArmRequest(
        method=request.method.upper(),
        url=url,
        path=unquote(parts.path),
        query={k.lower(): v for k, v in parse_qsl(parts.query, keep_blank_values=True)},
        headers={k.lower(): v for k, v in request.headers.items()},
        body=_body_bytes(raw),
    )


class EmulatorTransport(HttpTransport[Any, Any]):
    """Answers from the emulator's state; every instance of one emulator shares that state."""

    def __init__(self, server: Server) -> None:
        self._server = server

    def __enter__(self) -> EmulatorTransport:
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def send(self, request: Any, **kwargs: Any) -> Any:
        """Serve `request`; the response type matches the request's (rest or legacy)."""
        try:
            reply = self._server.serve(to_arm_request(request))
        except DroppedConnection as drop:
            raise connection_error(drop.kind, str(request.url)) from None
        content = reply.content()
        headers = CaseInsensitiveDict(reply.headers)
        if content and "Content-Type" not in headers:
            headers["Content-Type"] = "application/json; charset=utf-8"
        headers["Content-Length"] = str(len(content))
        if isinstance(request, RestHttpRequest):
            return EmulatorResponse(request, reply.status, headers, content)
        return LegacyEmulatorResponse(request, reply.status, headers, content)

    def sleep(self, duration: float) -> None:
        """Every SDK retry and LRO polling wait goes through here: scale it to simulated time."""
        self._server.clock.sleep(duration)


def connection_error(kind: str, url: str) -> AzureError:
    """What azure-core's RequestsTransport raises when the connection fails this way.

    A reset or a lost answer: requests' ConnectionError around urllib3's ProtocolError, raised as
    ServiceResponseError (the request may have been applied). Refused: ConnectionError around
    MaxRetryError(NewConnectionError), raised as ServiceRequestError (nothing was sent).
    """
    if kind == "refused":
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host, port = parts.hostname or "localhost", parts.port or (443 if https else 80)
        pool = HTTPSConnectionPool(host, port) if https else HTTPConnectionPool(host, port)
        connection = HTTPSConnection(host, port) if https else HTTPConnection(host, port)
        reason = NewConnectionError(connection, "Failed to establish a new connection: [Errno 111] Connection refused")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        refused = requests.exceptions.ConnectionError(MaxRetryError(pool, path, reason))
        return ServiceRequestError(refused, error=refused)
    reset = requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
    )
    return ServiceResponseError(reset, error=reset)
