"""Loopback stand-ins for what the agent talks to: IMDS (Scheduled Events and instance name)
and an Event Grid custom topic. Real HTTP on 127.0.0.1, free ports; both can go down and up.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class _Server:
    """A ThreadingHTTPServer on a fixed loopback port that can be stopped and started again."""

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self.port = 0
        self.lock = threading.Lock()
        self.up()

    def up(self) -> None:
        if self._server is not None:
            return
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._server = server

    def down(self) -> None:
        """Stop listening and drop kept-alive connections: clients get 'connection refused'."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    close = down

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with owner.lock:
                    owner._connections.add(self.connection)

            def finish(self) -> None:
                with owner.lock:
                    owner._connections.discard(self.connection)
                super().finish()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, content_type, content = owner.answer(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _serve  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
                return None

        return Handler

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        raise NotImplementedError


def rfc1123(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC), usegmt=True)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""


class ScheduledEventsServer(_Server):
    """IMDS as the agent sees it: /metadata/scheduledevents and /metadata/instance/compute/*."""

    def __init__(self, vm_name: str = "vm-a", resource_id: str = "") -> None:
        self.vm_name = vm_name
        self.resource_id = resource_id
        self.incarnation = 1
        self.events: dict[str, dict[str, Any]] = {}
        self.requests: list[Request] = []
        self.approvals: list[Any] = []  # parsed POST bodies
        self.override: tuple[int, bytes] | None = None  # answer every scheduled-events call with this
        self.instance_status = 200  # e.g. 500: the VM-name lookup fails
        self.delay = 0.0
        super().__init__()

    @property
    def url(self) -> str:
        return f"{self.base}/metadata/scheduledevents"

    @property
    def instance_url(self) -> str:
        return f"{self.base}/metadata/instance"

    def add_event(self, event_type: str = "Reboot", *, resources: list[str] | None = None,
                  not_before: timedelta = timedelta(minutes=15), status: str = "Scheduled",
                  event_id: str | None = None, duration: int = -1, source: str = "Platform") -> str:
        event_id = event_id or str(uuid.uuid4()).upper()
        with self.lock:
            self.events[event_id] = {
                "EventId": event_id,
                "EventType": event_type,
                "ResourceType": "VirtualMachine",
                "Resources": resources if resources is not None else [self.vm_name],
                "EventStatus": status,
                "NotBefore": rfc1123(datetime.now(UTC) + not_before) if status == "Scheduled" else "",
                "Description": f"{event_type} planned by the platform",
                "EventSource": source,
                "DurationInSeconds": duration,
            }
            self.incarnation += 1
        return event_id

    def update(self, event_id: str, *, drop: tuple[str, ...] = (), **fields: Any) -> None:
        """Change an event's fields (`drop` removes keys), as a new incarnation."""
        with self.lock:
            event = self.events[event_id]
            event.update(fields)
            for name in drop:
                event.pop(name, None)
            self.incarnation += 1

    def document(self) -> dict[str, Any]:
        with self.lock:
            return {"DocumentIncarnation": self.incarnation, "Events": [dict(e) for e in self.events.values()]}

    def instance_requests(self) -> int:
        return sum(1 for r in self.requests if r.path.startswith("/metadata/instance/"))

    def start(self, event_id: str) -> None:
        with self.lock:
            self.events[event_id].update(EventStatus="Started", NotBefore="")
            self.incarnation += 1

    def remove(self, event_id: str) -> None:
        with self.lock:
            del self.events[event_id]
            self.incarnation += 1

    def gets(self) -> int:
        return sum(1 for r in self.requests if r.method == "GET" and r.path.endswith("/scheduledevents"))

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        with self.lock:
            self.requests.append(Request(method, parts.path, query, headers, body))
        if self.delay:
            time.sleep(self.delay)
        if headers.get("Metadata") != "true":
            return 400, "application/json", b'{"error":"Bad request. Required metadata header not specified"}'
        if parts.path == "/metadata/scheduledevents":
            if query.get("api-version") != ["2020-07-01"]:
                return 400, "application/json", b'{"error":"Bad request. api-version is invalid"}'
            if self.override is not None:
                return self.override[0], "application/json", self.override[1]
            if method == "POST":
                return self._approve(body)
            with self.lock:
                document = {"DocumentIncarnation": self.incarnation, "Events": list(self.events.values())}
            return 200, "application/json", json.dumps(document).encode()
        if parts.path.startswith("/metadata/instance/") and self.instance_status != 200:
            return self.instance_status, "application/json", b'{"error":"Internal server error"}'
        if parts.path.startswith("/metadata/instance/compute/") and query.get("format") == ["text"]:
            value = {"name": self.vm_name, "resourceId": self.resource_id}.get(parts.path.rsplit("/", 1)[-1])
            if value:
                return 200, "text/plain", value.encode()
        return 404, "application/json", b'{"error":"Not found"}'

    def _approve(self, body: bytes) -> tuple[int, str, bytes]:
        try:
            parsed = json.loads(body)
            ids = [item["EventId"] for item in parsed["StartRequests"]]
        except (ValueError, KeyError, TypeError):
            return 400, "application/json", b'{"error":"Bad request"}'
        with self.lock:
            self.approvals.append(parsed)
            for event_id in ids:
                event = self.events.get(event_id)
                if event is not None and event["EventStatus"] == "Scheduled":
                    event.update(EventStatus="Started", NotBefore="")
                    self.incarnation += 1
        return 200, "application/json", b""


class EventGridServer(_Server):
    """A custom topic's publish endpoint (CloudEvents schema) with an access key."""

    def __init__(self, key: str = "test-topic-key") -> None:
        self.key = key
        self.received: list[dict[str, Any]] = []
        self.posts = 0
        self.status = 200  # answer every publish with this (e.g. 503, 400)
        super().__init__()

    @property
    def endpoint(self) -> str:
        return f"{self.base}/api/events"

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        with self.lock:
            self.posts += 1
        if method != "POST" or not path.startswith("/api/events"):
            return 404, "application/json", b"{}"
        if headers.get("aeg-sas-key") != self.key:
            return 401, "application/json", b'{"error":{"code":"Unauthorized","message":"bad key"}}'
        if self.status != 200:
            return self.status, "application/json", b'{"error":{"code":"BadRequest","message":"refused by test"}}'
        events = json.loads(body)
        with self.lock:
            self.received.extend(events)
        return 200, "application/json", b""

    def types(self) -> list[tuple[str, str]]:
        """(subject, type) of every CloudEvent received, in order."""
        with self.lock:
            return [(event["subject"], event["type"].rsplit(".", 1)[-1]) for event in self.received]
