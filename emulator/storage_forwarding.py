"""One client connection of the storage fault proxy: forward each request to Azurite as it came, or
strike it as the proxy's rules say (an error answer in the service's format, or a dropped connection).

Kept apart from the rules (storage_faults.py), which it sees only through the `Faults` protocol.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import struct
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

log = logging.getLogger("storage-faults")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})
_SERVER = {"blob": "Windows-Azure-Blob/1.0", "queue": "Windows-Azure-Queue/1.0", "table": "Windows-Azure-Table/1.0"}


class Fault(Protocol):
    """A rule that struck a request: fail (answer `status`), reset, blackhole, or delay (forward
    after `pause` seconds)."""

    action: str
    status: int
    code: str
    message: str
    pause: float

    def hold(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the rule to end; True while it still holds."""
        ...


class Faults(Protocol):
    """What a connection needs from the proxy."""

    upstream: dict[str, int]

    @property
    def stopped(self) -> bool: ...

    def take_rule(self, service: str, method: str, path: str, body: bytes) -> Fault | None: ...

    def count_forwarded(self, service: str) -> None: ...

    def register(self, service: str, connection: socket.socket) -> None: ...

    def unregister(self, service: str, connection: socket.socket) -> None: ...


def drop_connection(connection: socket.socket) -> None:
    """Make the close a TCP reset (linger 0), as a broken connection is."""
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: Faults, service: str, port: int) -> None:
        self.proxy = proxy
        self.service = service
        super().__init__(("127.0.0.1", port), ProxyHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        # Connections this proxy breaks on purpose end in socket errors; they are not news.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ProxyServer
    _upstream: http.client.HTTPConnection | None = None

    def setup(self) -> None:
        super().setup()
        self.server.proxy.register(self.server.service, self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy.unregister(self.server.service, self.connection)
            if self._upstream is not None:
                self._upstream.close()

    def _serve(self) -> None:
        proxy, service = self.server.proxy, self.server.service
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        body = self._read_chunked() if chunked else self.rfile.read(int(self.headers.get("Content-Length") or 0))
        rule = proxy.take_rule(service, self.command, self.path, body)
        if rule is not None and rule.action == "delay":
            rule.hold(rule.pause)  # a clear (or the proxy stopping) ends the pause early
            rule = None
        if rule is None:
            self._forward(body, chunked)
        elif rule.action == "fail":
            self._answer_error(rule)
        else:
            while rule.action == "blackhole" and not proxy.stopped and rule.hold(0.05):
                pass
            self._drop()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_MERGE = do_OPTIONS = _serve  # noqa: N815

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _forward(self, body: bytes, chunked: bool) -> None:
        service = self.server.service
        answer = self._exchange(body, chunked)
        if answer is None:
            self._drop()
            return
        response, content = answer
        self.server.proxy.count_forwarded(service)
        self.send_response_only(response.status, response.reason)
        has_length = False
        for name, value in response.getheaders():
            if name.lower() in _HOP_BY_HOP:
                continue  # the body is whole now: it goes out with a Content-Length
            has_length = has_length or name.lower() == "content-length"
            self.send_header(name, value)
        if not has_length and self.command != "HEAD" and response.status not in (204, 304):
            self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def _exchange(self, body: bytes, chunked: bool) -> tuple[http.client.HTTPResponse, bytes] | None:
        """Send the request upstream as it came; the response and its whole body, or None."""
        for attempt in (1, 2):
            if self._upstream is None:
                port = self.server.proxy.upstream[self.server.service]
                self._upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            upstream = self._upstream
            reused = upstream.sock is not None
            try:
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    upstream.putheader(name, value)
                upstream.endheaders(body if body or chunked else None, encode_chunked=chunked)
                response = upstream.getresponse()
                return response, response.read()
            except (http.client.HTTPException, OSError) as exc:
                upstream.close()
                self._upstream = None
                # A kept-alive connection Azurite closed meanwhile: try once on a new one, as urllib3 does.
                if reused and attempt == 1:
                    continue
                log.warning("%s %s: Azurite did not answer: %s", self.command, self.path, exc)
        return None

    def _answer_error(self, rule: Fault) -> None:
        service = self.server.service
        request_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        detail = f"{rule.message}\nRequestId:{request_id}\nTime:{now.strftime('%Y-%m-%dT%H:%M:%S.%f')}0Z"
        if service == "table":
            error = {"odata.error": {"code": rule.code, "message": {"lang": "en-US", "value": detail}}}
            content = json.dumps(error).encode()
            content_type = "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
        else:
            content = (
                f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{rule.code}</Code>'
                f"<Message>{detail}</Message></Error>"
            ).encode()
            content_type = "application/xml"
        self.send_response_only(rule.status, http.client.responses.get(rule.status, ""))
        self.send_header("Server", f"{_SERVER[service]} Microsoft-HTTPAPI/2.0")
        self.send_header("x-ms-request-id", request_id)
        self.send_header("x-ms-version", self.headers.get("x-ms-version") or "2021-02-12")
        if service != "table":
            self.send_header("x-ms-error-code", rule.code)
        self.send_header("Date", self.date_time_string())
        if self.command == "HEAD":
            content = b""  # a HEAD error has its code in the header only
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def _drop(self) -> None:
        self.close_connection = True
        drop_connection(self.connection)
        self.rfile.close()  # the socket only really closes once its file is closed too
        self.connection.close()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        return None
