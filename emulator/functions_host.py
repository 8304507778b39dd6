"""Drive the app's registered functions the way the Azure Functions host does.

Event Grid deliveries become `func.EventGridEvent` / `func.CloudEvent` objects handed to the
registered function; messages on the Storage queues named in the queue-trigger bindings are
received from the real storage account (Azurite), base64-decoded as the host does by default,
handed to their function, deleted on success, made visible again on failure, and moved to
`<queue>-poison` after `max_dequeue_count` attempts.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueServiceClient

log = logging.getLogger("functions-host")
_FIRST_POLL = 0.05  # seconds between polls of the queues right after a message was found
_INDEXED: dict[int, dict[str, Any]] = {}


def index_functions(app: func.FunctionApp) -> dict[str, Any]:
    """name -> function, once per app: the library refuses to index an app twice in a process."""
    if id(app) not in _INDEXED:
        _INDEXED[id(app)] = {str(f.get_function_name()): f for f in app.get_functions()}
    return _INDEXED[id(app)]


@dataclass
class Invocation:
    function: str
    succeeded: bool
    error: BaseException | None = None
    seconds: float = 0.0


@dataclass
class FunctionsHost:
    app: func.FunctionApp
    connection_string: str
    max_dequeue_count: int = 5
    concurrency: int = 6  # as host.json has it: batchSize 4 + newBatchThreshold 2
    max_polling_interval: float = 2.0  # host.json maxPollingInterval, seconds
    invocations: list[Invocation] = field(default_factory=list)

    @property
    def functions(self) -> dict[str, Any]:
        return index_functions(self.app)

    def queue_triggers(self) -> dict[str, str]:
        """queue name -> function name, from the registered bindings."""
        triggers = {}
        for name, function in self.functions.items():
            for binding in function.get_bindings():
                if binding.type == "queueTrigger":
                    triggers[binding.queue_name] = name
        return triggers

    def deliver_event(self, function_name: str, raw: Mapping[str, Any]) -> None:
        """One Event Grid delivery (either schema) to an Event Grid-triggered function."""
        if "specversion" in raw:
            event: Any = func.CloudEvent(
                id=raw["id"], source=raw.get("source", ""), type=raw.get("type", ""),
                specversion=raw["specversion"], data=raw.get("data"), time=_time(raw.get("time")),
                subject=raw.get("subject"),
            )
        else:
            event = func.EventGridEvent(
                id=raw.get("id", ""), data=raw.get("data") or {}, topic=raw.get("topic", ""),
                subject=raw.get("subject", ""), event_type=raw.get("eventType", ""),
                event_time=_time(raw.get("eventTime")), data_version=raw.get("dataVersion", "1.0"),
            )
        self._invoke(function_name, event)

    def run_queues(self, *, max_messages: int = 10_000) -> int:
        """Process visible queue messages until none is left and none is running; returns how many
        were handled. Like the host, up to `concurrency` at once (host.json's batchSize plus
        newBatchThreshold), fetching more as running ones finish, so messages that running
        functions queue start while those still run. Messages still invisible (sent with a
        delay) are left for a later call."""
        handled = 0
        clients = {name: self.queue(name) for name in self.queue_triggers()}
        idle = _FIRST_POLL
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="host") as pool:
            running: set[Future[None]] = set()
            while True:
                fetched = 0
                for queue_name, function_name in self.queue_triggers().items():
                    room = self.concurrency - len(running)
                    if room <= 0:
                        break
                    client = clients[queue_name]
                    for message in client.receive_messages(messages_per_page=min(32, room), visibility_timeout=600,
                                                           max_messages=min(32, room)):
                        running.add(pool.submit(self._handle, client, queue_name, function_name, message))
                        fetched += 1
                if not running:
                    return handled
                # Like the host, poll an empty queue less and less often (host.json maxPollingInterval).
                idle = _FIRST_POLL if fetched else min(idle * 2, self.max_polling_interval)
                if fetched == 0 or len(running) >= self.concurrency:
                    done, running = wait(running, timeout=idle, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
                    handled += len(done)
                    if handled > max_messages:
                        raise RuntimeError(f"queues still busy after {max_messages} messages")

    def queue(self, name: str) -> QueueClient:
        client = QueueServiceClient.from_connection_string(self.connection_string).get_queue_client(name)
        try:
            client.create_queue()
        except ResourceExistsError:
            pass
        return client

    def _handle(self, client: QueueClient, queue_name: str, function_name: str, message: Any) -> None:
        body = _host_decode(message.content)
        queue_message = func.QueueMessage(id=message.id, body=body, pop_receipt=message.pop_receipt)
        if self._invoke(function_name, queue_message):
            client.delete_message(message)
        elif (message.dequeue_count or 0) >= self.max_dequeue_count:
            self.queue(f"{queue_name}-poison").send_message(message.content)
            client.delete_message(message)
        else:
            client.update_message(message, visibility_timeout=0)

    def _invoke(self, function_name: str, argument: Any) -> bool:
        user_function: Callable[[Any], Any] = self.functions[function_name].get_user_function()
        started = datetime.now(UTC)
        try:
            user_function(argument)
        except Exception as exc:
            log.warning("function %s failed: %s", function_name, exc)
            self.invocations.append(Invocation(function_name, False, exc, _since(started)))
            return False
        self.invocations.append(Invocation(function_name, True, None, _since(started)))
        return True


def _host_decode(content: str | bytes) -> bytes:
    """The host's default `messageEncoding: base64`."""
    raw = content.encode() if isinstance(content, str) else content
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _since(started: datetime) -> float:
    return (datetime.now(UTC) - started).total_seconds()

