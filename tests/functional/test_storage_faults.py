"""The storage fault proxy in front of the real Azurite, driven with the real Storage SDK clients."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient
from azure.storage.queue import LinearRetry, QueueClient

from emulator.azurite import ACCOUNT, Azurite
from emulator.storage_faults import StorageFaultProxy

pytestmark = pytest.mark.azurite


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[StorageFaultProxy]:
    with StorageFaultProxy(azurite) as running:
        yield running


def queue(connection_string: str, name: str, *, retries: int = 0, **kwargs: Any) -> QueueClient:
    retry = LinearRetry(backoff=0, random_jitter_range=0, retry_total=retries)
    return QueueClient.from_connection_string(connection_string, name, retry_policy=retry, **kwargs)


def table(connection_string: str, name: str, *, retries: int = 0) -> TableClient:
    return TableClient.from_connection_string(connection_string, name, retry_total=retries, retry_backoff_factor=0.01)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def test_queue_and_table_round_trips_through_the_proxy(azurite: Azurite, proxy: StorageFaultProxy) -> None:
    work = queue(proxy.connection_string, unique("proxy-"))
    work.create_queue()
    work.send_message("hello")
    [message] = list(work.receive_messages(visibility_timeout=30))
    work.update_message(message, visibility_timeout=0)
    [again] = list(work.receive_messages(visibility_timeout=30))
    work.delete_message(again)
    ledger = table(proxy.connection_string, unique("Proxy"))
    ledger.create_table()
    ledger.upsert_entity({"PartitionKey": "p", "RowKey": "r", "value": 1})
    entity = ledger.get_entity("p", "r")

    assert (message.content, again.dequeue_count) == ("hello", 2)
    assert entity["value"] == 1
    assert table(azurite.connection_string, ledger.table_name).get_entity("p", "r")["value"] == 1, "really in Azurite"
    assert proxy.stats["queue"].forwarded >= 6 and proxy.stats["queue"].faulted == 0
    assert proxy.stats["table"].forwarded >= 3


def test_blob_requests_are_forwarded_unchanged(azurite: Azurite, proxy: StorageFaultProxy) -> None:
    def answer(port: int) -> tuple[int, str | None, str | None, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", f"/{ACCOUNT}?comp=list", headers={"x-ms-version": "2021-08-06"})
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, response.getheader("x-ms-error-code"), response.getheader("Server"), body

    direct, proxied = answer(azurite.blob_port), answer(proxy.ports["blob"])
    proxy.fail("blob", times=1)
    failed = answer(proxy.ports["blob"])

    # An unsigned request: Azurite's own 403, through the proxy as it came (but for its request id).
    assert proxied[:3] == direct[:3] and proxied[0] == 403
    assert proxied[3].split(b"RequestId")[0] == direct[3].split(b"RequestId")[0]
    assert failed[:2] == (503, "ServerBusy")
    assert failed[3].startswith(b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>')


def test_a_503_rule_is_seen_by_the_sdk_in_each_services_format(proxy: StorageFaultProxy) -> None:
    work = queue(proxy.connection_string, unique("proxy-"))
    work.create_queue()
    ledger = table(proxy.connection_string, unique("Proxy"))
    ledger.create_table()
    proxy.fail("queue", status=503)
    proxy.fail("table", status=503)

    with pytest.raises(HttpResponseError) as queue_error:
        work.send_message("x")
    with pytest.raises(HttpResponseError) as table_error:
        ledger.get_entity("p", "r")

    assert (queue_error.value.status_code, queue_error.value.error_code) == (503, "ServerBusy")
    assert (table_error.value.status_code, table_error.value.error_code) == (503, "ServerBusy")
    assert "unable to receive requests" in str(table_error.value)
    assert proxy.stats["queue"].faulted == 1 and proxy.stats["table"].faulted == 1


def test_a_503_once_is_retried_by_the_sdk(azurite: Azurite, proxy: StorageFaultProxy) -> None:
    name = unique("proxy-")
    work = queue(proxy.connection_string, name, retries=2)
    work.create_queue()
    rule = proxy.fail("queue", method="POST", times=1)

    work.send_message("once")

    assert rule.fired == 1
    assert [m.content for m in queue(azurite.connection_string, name).peek_messages(max_messages=5)] == ["once"]


def test_rules_match_method_and_path_in_order_and_expire(proxy: StorageFaultProxy) -> None:
    work = queue(proxy.connection_string, unique("proxy-"))
    work.create_queue()
    deletes = proxy.fail("queue", status=500, method="DELETE", path_contains="/messages/")
    proxy.fail("queue", status=503, path_contains="/messages", seconds=0.5)

    with pytest.raises(HttpResponseError) as busy:
        work.send_message("x")
    time.sleep(0.6)
    work.send_message("x")
    [message] = list(work.receive_messages(visibility_timeout=30))
    with pytest.raises(HttpResponseError) as internal:
        work.delete_message(message)

    assert busy.value.status_code == 503
    assert (internal.value.status_code, internal.value.error_code) == (500, "InternalError")
    assert deletes.fired == 1


def test_a_reset_is_a_connection_error_and_nothing_is_forwarded(azurite: Azurite, proxy: StorageFaultProxy) -> None:
    name = unique("proxy-")
    work = queue(proxy.connection_string, name)
    work.create_queue()
    ledger = table(proxy.connection_string, unique("Proxy"))
    ledger.create_table()
    proxy.reset("queue", times=1)
    proxy.reset("table", times=1)

    with pytest.raises(ServiceResponseError, match="Connection aborted"):
        work.send_message("lost")
    with pytest.raises((ServiceResponseError, ServiceRequestError)):
        ledger.upsert_entity({"PartitionKey": "p", "RowKey": "r"})
    work.send_message("kept")

    assert [m.content for m in queue(azurite.connection_string, name).peek_messages(max_messages=5)] == ["kept"]
    assert list(table(azurite.connection_string, ledger.table_name).list_entities()) == []


def test_unreachable_fails_fast_and_comes_back(azurite: Azurite, proxy: StorageFaultProxy) -> None:
    name = unique("proxy-")
    work = queue(proxy.connection_string, name)
    work.create_queue()  # a kept-alive connection the proxy must break too
    proxy.unreachable("queue")

    started = time.monotonic()
    with pytest.raises(ServiceRequestError, match="Connection refused"):
        work.send_message("x")
    assert time.monotonic() - started < 2.0
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", proxy.ports["queue"])) != 0, "the port refuses connections"

    proxy.clear()
    work.send_message("back")
    proxy.unreachable("queue", seconds=0.3)
    time.sleep(0.6)
    work.send_message("back by itself")

    contents = [m.content for m in queue(azurite.connection_string, name).peek_messages(max_messages=5)]
    assert contents == ["back", "back by itself"]


def test_a_blackhole_never_answers_until_the_rule_ends(proxy: StorageFaultProxy) -> None:
    work = queue(proxy.connection_string, unique("proxy-"), read_timeout=1)
    work.create_queue()
    rule = proxy.blackhole("queue", times=1)

    started = time.monotonic()
    # A read timeout (azure-core names it ServiceResponseTimeoutError from 1.37, a
    # ServiceResponseError before: the floor of requirements.txt is older).
    with pytest.raises(ServiceResponseError, match="(?i)timed out"):
        work.peek_messages()
    waited = time.monotonic() - started

    work.send_message("after")  # `times` spent: later requests pass while the first is still held
    proxy.clear()
    assert 0.9 <= waited < 3.0
    assert rule.fired == 1 and rule.ended.is_set()
    assert [m.content for m in work.peek_messages()] == ["after"]


def test_stop_closes_everything(azurite: Azurite) -> None:
    proxy = StorageFaultProxy(azurite).start()
    work = queue(proxy.connection_string, unique("proxy-"), read_timeout=5)
    work.create_queue()
    proxy.blackhole("queue")
    outcome: list[Exception] = []

    def peek() -> None:
        try:
            work.peek_messages()
        except Exception as exc:
            outcome.append(exc)

    held = threading.Thread(target=peek)
    held.start()
    time.sleep(0.2)

    proxy.stop()
    held.join(timeout=3)

    assert not held.is_alive(), "the held request was closed, not left to time out"
    assert [type(e) for e in outcome] == [ServiceResponseError]
    for port in proxy.ports.values():
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


class _ChunkedUpstream(BaseHTTPRequestHandler):
    """An upstream that answers chunked and closes each connection after one answer, silently."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, str, bytes]] = []

    def do_PUT(self) -> None:  # noqa: N802 - the base's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, self.headers.get("Authorization") or "", body))
        self.send_response_only(201, "Created")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-ms-request-id", "up-1")
        self.end_headers()
        for chunk in (b"hello ", b"world"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        return None


def test_chunked_answers_and_closed_upstream_connections_on_a_kept_alive_client() -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _ChunkedUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = int(upstream.server_address[1])
    fake = Azurite(process=cast(Any, None), blob_port=port, queue_port=port, table_port=port, workdir="")
    _ChunkedUpstream.seen = []
    try:
        with StorageFaultProxy(fake) as proxy:
            client = http.client.HTTPConnection("127.0.0.1", proxy.ports["blob"], timeout=5)
            answers = []
            for i in range(3):  # one client connection; upstream closes after each answer
                client.request("PUT", f"/{ACCOUNT}/c/b{i}?comp=block", body=b"data",
                               headers={"Authorization": f"SharedKey {ACCOUNT}:sig{i}"})  # fmt: skip
                response = client.getresponse()
                answers.append((response.status, response.read(), response.getheader("Content-Length"),
                                response.getheader("Transfer-Encoding"), response.getheader("x-ms-request-id")))
            client.close()
    finally:
        upstream.shutdown()
        upstream.server_close()

    assert answers == [(201, b"hello world", "11", None, "up-1")] * 3
    assert _ChunkedUpstream.seen == [("PUT", f"/{ACCOUNT}/c/b{i}?comp=block", f"SharedKey {ACCOUNT}:sig{i}", b"data")
                                     for i in range(3)]  # fmt: skip
