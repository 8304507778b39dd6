"""A fault-injecting HTTP proxy in front of Azurite's blob, queue and table endpoints.

Requests are forwarded byte for byte (method, path and query, headers, body), so SharedKey
signatures stay valid, and answered with Azurite's status, headers and body. Rules, matched in
order, make requests fail instead: an error answer in the service's own format (`fail`), a dropped
connection (`reset`), no answer at all (`blackhole`), or a port that refuses connections
(`unreachable`); or make them slow: forwarded after a pause (`delay`), as a request that met a
busy partition is.

    with StorageFaultProxy(azurite) as proxy:
        queue = QueueClient.from_connection_string(proxy.connection_string, "work")
        proxy.fail("queue", status=503, times=1)      # the next queue request: 503 ServerBusy
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from .azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from .storage_forwarding import ProxyServer, drop_connection

SERVICES = ("blob", "queue", "table")
# The Storage error codes and messages for the statuses a test usually injects.
_ERRORS = {
    500: ("InternalError", "The server encountered an internal error. Please retry the request."),
    503: ("ServerBusy", "The server is currently unable to receive requests. Please retry your request."),
    504: ("OperationTimedOut", "The operation could not be completed within the permitted time."),
}


@dataclass
class ProxyRule:
    """One fault rule; `fired` counts the requests it struck (not the connections an unreachable port
    refused: the operating system refuses those)."""

    service: str
    action: str  # fail | reset | blackhole | unreachable | delay
    status: int = 503
    code: str = ""
    message: str = ""
    method: str | None = None
    path_contains: str | None = None
    body_contains: bytes | None = None
    pause: float = 0.0  # a delay's pause, in seconds
    times: int | None = None
    deadline: float | None = None  # time.monotonic() at which it ends
    fired: int = 0
    ended: threading.Event = field(default_factory=threading.Event, repr=False)

    def live(self, now: float) -> bool:
        return not self.ended.is_set() and self.times != 0 and (self.deadline is None or now < self.deadline)

    def holds(self, now: float) -> bool:
        """A blackholed request stays held until the rule is cleared or its time is up."""
        return not self.ended.is_set() and (self.deadline is None or now < self.deadline)

    def hold(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the rule to end; True while it still holds."""
        self.ended.wait(timeout)
        return self.holds(time.monotonic())

    def matches(self, service: str, method: str, path: str, body: bytes, now: float) -> bool:
        return (
            self.service == service
            and self.action != "unreachable"
            and self.live(now)
            and (self.method is None or self.method.upper() == method.upper())
            and (self.path_contains is None or self.path_contains.lower() in path.lower())
            and (self.body_contains is None or self.body_contains in body)
        )


@dataclass
class ServiceStats:
    """Requests forwarded to Azurite, and requests a rule struck instead."""

    forwarded: int = 0
    faulted: int = 0


class StorageFaultProxy:
    """Forwards to one Azurite on three loopback ports; see the module docstring."""

    def __init__(self, azurite: Azurite) -> None:
        self.azurite = azurite
        self.upstream = {"blob": azurite.blob_port, "queue": azurite.queue_port, "table": azurite.table_port}
        self.ports: dict[str, int] = {}
        self.stats = {service: ServiceStats() for service in SERVICES}
        self._rules: list[ProxyRule] = []
        self._servers: dict[str, ProxyServer] = {}
        self._connections: dict[str, set[socket.socket]] = {service: set() for service in SERVICES}
        self._lock = threading.RLock()
        self._stopped = threading.Event()

    # ----- lifetime ------------------------------------------------------------------------------

    def start(self) -> StorageFaultProxy:
        """Listen on three free loopback ports."""
        for service in SERVICES:
            self._open(service)
        return self

    def stop(self) -> None:
        """End every rule, close the listeners and every connection."""
        self._stopped.set()
        with self._lock:
            for rule in self._rules:
                rule.ended.set()
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            server.shutdown()
            server.server_close()
        for service in SERVICES:
            self._break_connections(service)

    def __enter__(self) -> StorageFaultProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def connection_string(self) -> str:
        """Azurite's account and key, with endpoints pointing at the proxy."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.ports['blob']}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.ports['queue']}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.ports['table']}/{ACCOUNT};"
        )

    # ----- rules ---------------------------------------------------------------------------------

    def fail(
        self,
        service: str,
        *,
        status: int = 503,
        code: str | None = None,
        message: str | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        times: int | None = None,
        seconds: float | None = None,
    ) -> ProxyRule:
        """Answer `status` with the service's error body (code default: ServerBusy for 503,
        InternalError for 500, OperationTimedOut for 504), without forwarding."""
        default_code, default_message = _ERRORS.get(status, ("InternalError", f"Injected HTTP {status}."))
        rule = ProxyRule(service, "fail", status, code or default_code, message or default_message)
        return self._add(rule, method, path_contains, times, seconds)

    def reset(
        self,
        service: str,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int | None = None,
        seconds: float | None = None,
    ) -> ProxyRule:
        """Close the client's connection (a TCP reset) without answering or forwarding."""
        return self._add(ProxyRule(service, "reset"), method, path_contains, times, seconds)

    def blackhole(
        self,
        service: str,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int | None = None,
        seconds: float | None = None,
    ) -> ProxyRule:
        """Accept and never answer: hold the connection until the rule ends (cleared, `seconds` up)
        or the proxy stops, then close it. `times` limits how many requests it swallows."""
        return self._add(ProxyRule(service, "blackhole"), method, path_contains, times, seconds)

    def delay(
        self,
        service: str,
        pause: float,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        body_contains: str | None = None,
        times: int | None = None,
    ) -> ProxyRule:
        """Forward the matching requests after `pause` seconds (each), answered as Azurite answers
        them; `body_contains` picks them by what they carry (say, the one write of a column)."""
        rule = ProxyRule(service, "delay", pause=pause,
                         body_contains=None if body_contains is None else body_contains.encode())
        return self._add(rule, method, path_contains, times, None)

    def unreachable(self, service: str, *, seconds: float | None = None) -> ProxyRule:
        """Refuse connections to the service's port (its listener closes) and break the open ones,
        until cleared or `seconds` passed."""
        rule = self._add(ProxyRule(service, "unreachable"), None, None, None, seconds)
        self._close(service)
        self._break_connections(service)
        if seconds is not None:
            timer = threading.Timer(seconds, self._end_unreachable, args=(rule,))
            timer.daemon = True
            timer.start()
        return rule

    def clear(self) -> None:
        """End every rule: held requests are closed, unreachable ports listen again."""
        with self._lock:
            rules, self._rules = self._rules, []
            for rule in rules:
                rule.ended.set()
        for service in SERVICES:
            self._reopen_if_reachable(service)

    def _add(
        self, rule: ProxyRule, method: str | None, path_contains: str | None, times: int | None, seconds: float | None
    ) -> ProxyRule:
        if rule.service not in SERVICES:
            raise ValueError(f"service must be one of {', '.join(SERVICES)}, not {rule.service!r}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 (or None: until cleared)")
        rule.method, rule.path_contains, rule.times = method, path_contains, times
        rule.deadline = None if seconds is None else time.monotonic() + seconds
        with self._lock:
            self._rules.append(rule)
        return rule

    def take_rule(self, service: str, method: str, path: str, body: bytes) -> ProxyRule | None:
        """The first live rule for this request, consumed once; None: forward it."""
        now = time.monotonic()
        with self._lock:
            for rule in self._rules:
                if rule.matches(service, method, path, body, now):
                    rule.fired += 1
                    if rule.times is not None:
                        rule.times -= 1
                    self.stats[service].faulted += 1
                    return rule
            return None

    # ----- listeners and connections -----------------------------------------------------------

    def _open(self, service: str) -> None:
        with self._lock:
            if self._stopped.is_set() or service in self._servers:
                return
            server = ProxyServer(self, service, self.ports.get(service, 0))
            self.ports[service] = int(server.server_address[1])
            self._servers[service] = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                         name=f"storage-proxy-{service}").start()  # fmt: skip

    def _close(self, service: str) -> None:
        with self._lock:
            server = self._servers.pop(service, None)
        if server is not None:
            server.shutdown()
            server.server_close()

    def _end_unreachable(self, rule: ProxyRule) -> None:
        rule.ended.set()
        self._reopen_if_reachable(rule.service)

    def _reopen_if_reachable(self, service: str) -> None:
        now = time.monotonic()
        with self._lock:
            if any(r.service == service and r.action == "unreachable" and r.holds(now) for r in self._rules):
                return
        self._open(service)

    def count_forwarded(self, service: str) -> None:
        with self._lock:
            self.stats[service].forwarded += 1

    def register(self, service: str, connection: socket.socket) -> None:
        with self._lock:
            self._connections[service].add(connection)

    def unregister(self, service: str, connection: socket.socket) -> None:
        with self._lock:
            self._connections[service].discard(connection)

    def _break_connections(self, service: str) -> None:
        with self._lock:
            connections = list(self._connections[service])
        for connection in connections:
            drop_connection(connection)
            try:
                connection.shutdown(socket.SHUT_RDWR)  # wakes the thread reading it, which closes it
            except OSError:
                pass

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()
