"""Drive the app's registered functions the way the Azure Functions host does.

Event Grid deliveries become `func.EventGridEvent` / `func.CloudEvent` objects handed to the
registered function; messages on the Storage queues named in the queue-trigger bindings are
received from the real storage account (Azurite), base64-decoded as the host does by default,
handed to their function as the Python worker builds them, kept invisible while it runs (renewed
at half of `message_visibility`), deleted on success, made visible again `retry_visibility` seconds
after a failure, and moved to `<queue>-poison` after `max_dequeue_count` attempts. Storage errors
of the host's own calls are logged, not raised, as the host's listener does: a message whose delete
failed is delivered again once its visibility timeout ends. Each call is made as the Python
worker makes it (`emulator.invocations`): a function that declares a `context` gets one, and the
calling thread's invocation id is set for the call.

Also a process: `python -m emulator.functions_host --connection-string CS` (see `main`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import logging
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.functions.queue import QueueMessage as WorkerQueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import ExponentialRetry, QueueClient, QueueServiceClient

from .invocations import invoking
from .message_lease import MessageLease, error_code, message_lost, whole_seconds

log = logging.getLogger("functions-host")
_FIRST_POLL = 0.05  # seconds between polls of the queues right after a message was found
_INDEXED: dict[int, tuple[func.FunctionApp, dict[str, Any]]] = {}
_INDEX_LOCK = threading.Lock()


def index_functions(app: func.FunctionApp) -> dict[str, Any]:
    """name -> function, once per app: the library refuses to index an app twice in a process."""
    with _INDEX_LOCK:
        if id(app) not in _INDEXED:
            # Holding the app keeps its id from being reused by another app.
            _INDEXED[id(app)] = (app, {str(f.get_function_name()): f for f in app.get_functions()})
        return _INDEXED[id(app)][1]


class HostRetry(ExponentialRetry):
    """The retry of the host's own storage calls: Azure.Storage's default in .NET (exponential from
    0.8 s, at most a minute apart), not the Python SDK's 15 s start."""

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        delay = min(60.0, 0.8 * 2 ** max(0, int(settings["count"]) - 1))
        return random.uniform(0.8 * delay, 1.2 * delay)


@dataclass
class Invocation:
    """One call of a function: how it ended and, for a queue trigger, which message it was."""

    function: str
    succeeded: bool
    error: BaseException | None = None
    seconds: float = 0.0
    message_id: str | None = None  # queue-triggered invocations only
    dequeue_count: int | None = None
    invocation_id: str = ""


@dataclass
class FunctionsHost:
    """The host for one app. Several may run `run_queues()` at once, in threads, on the same queues."""

    app: func.FunctionApp
    connection_string: str
    max_dequeue_count: int = 5
    # As host.json has them: each queue's listener fetches `batch_size` messages, and another batch
    # once no more than `new_batch_threshold` of its messages still run (so at most 6 at once).
    batch_size: int = 4
    new_batch_threshold: int = 2
    max_polling_interval: float = 2.0  # host.json maxPollingInterval, seconds
    invocations: list[Invocation] = field(default_factory=list)
    # host.json visibilityTimeout: how long a message whose invocation failed stays invisible.
    retry_visibility: float = 0.0
    # The visibility a message is fetched with, renewed at half that interval while its function runs
    # (the WebJobs SDK's 10 minutes): a host that dies leaves its messages invisible that long.
    message_visibility: float = 600.0
    on_invocation: Callable[[Invocation], None] | None = None
    # How often the host retries a failed storage call (Azure.Storage's default: 3, see HostRetry).
    storage_retries: int = 3
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _killed: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _leases: set[MessageLease] = field(default_factory=set, init=False, repr=False)
    _wakers: set[Future[None]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.message_visibility <= 0:
            raise ValueError(f"message_visibility must be > 0 seconds, not {self.message_visibility!r}")
        if self.retry_visibility < 0:
            raise ValueError(f"retry_visibility must be >= 0 seconds, not {self.retry_visibility!r}")

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

    def fire_timer(self, function_name: str, *, past_due: bool = False) -> bool:
        """One tick of a timer-triggered function, as the host's scheduler fires it (the worker
        passes a TimerRequest); whether the invocation succeeded."""
        bindings = {b.type for b in self.functions[function_name].get_bindings()}
        if "timerTrigger" not in bindings:
            raise ValueError(f"{function_name} is not timer-triggered (its bindings: {sorted(bindings)})")
        return self._invoke(function_name, TimerRequest(past_due=past_due))

    def call_http(self, method: str, url: str, *, body: bytes = b"",
                  headers: Mapping[str, str] | None = None) -> func.HttpResponse:
        """One HTTP request to the HTTP-triggered function whose route matches the URL's path after
        `/api/` (the host's default prefix), as the host hands it over: method, query, route
        parameters, headers, body. An unhandled exception is the host's 500; no route, its 404."""
        parts = urlsplit(url)
        path = parts.path.removeprefix("/api/").strip("/")
        for name, function in self.functions.items():
            for binding in function.get_bindings():
                if binding.type != "httpTrigger":
                    continue
                methods = [str(getattr(m, "value", m)).upper() for m in (binding.methods or ())]
                route_params = _match_route(str(binding.route or name), path)
                if route_params is None or (methods and method.upper() not in methods):
                    continue
                request = func.HttpRequest(
                    method=method.upper(), url=url, headers=dict(headers or {}),
                    params=dict(parse_qsl(parts.query)), route_params=route_params, body=body)
                response: list[func.HttpResponse] = []
                if self._invoke(name, request, result=response) and response:
                    return response[0]
                return func.HttpResponse("Internal Server Error", status_code=500)
        return func.HttpResponse("Not Found", status_code=404)

    def run_queues(self, *, max_messages: int = 10_000) -> int:
        """Process visible queue messages until none is left and none is running; returns how many
        were handled. Like the host's queue listener, per queue: a batch of `batch_size` messages,
        another once no more than `new_batch_threshold` of them still run (host.json), so messages
        that running functions queue start while those still run, and several hosts on the same
        queues share out what is there. Messages still invisible (sent with a delay) are left for a
        later call. Returns at once after `kill()`."""
        handled = 0
        triggers = self.queue_triggers()
        clients = {name: self._listen(name) for name in triggers}
        idle = _FIRST_POLL
        visibility = whole_seconds(self.message_visibility, 1)
        waker: Future[None] = Future()
        with self._lock:
            self._wakers.add(waker)
        per_queue = self.batch_size + self.new_batch_threshold
        pool = ThreadPoolExecutor(max_workers=per_queue * max(1, len(triggers)), thread_name_prefix="host")
        running: dict[Future[None], str] = {}
        try:
            while not self._killed.is_set():
                fetched, full = 0, True
                for queue_name, function_name in triggers.items():
                    if sum(1 for name in running.values() if name == queue_name) > self.new_batch_threshold:
                        continue
                    full = False
                    client = clients[queue_name]
                    for message in self._receive(client, self.batch_size, visibility):
                        future = pool.submit(self._handle, client, queue_name, function_name, message)
                        running[future] = queue_name
                        fetched += 1
                if not running:
                    return handled
                # Like the host, poll an empty queue less and less often (host.json maxPollingInterval).
                idle = _FIRST_POLL if fetched else min(idle * 2, self.max_polling_interval)
                if fetched == 0 or full:
                    done, _ = wait({*running, waker}, timeout=idle, return_when=FIRST_COMPLETED)
                    done.discard(waker)
                    for future in done:
                        del running[future]
                        future.result()
                    handled += len(done)
                    if handled > max_messages:
                        raise RuntimeError(f"queues still busy after {max_messages} messages")
            return handled
        finally:
            with self._lock:
                self._wakers.discard(waker)
            # A killed host abandons what runs; otherwise (an error) let the others finish first.
            killed = self._killed.is_set()
            pool.shutdown(wait=not killed, cancel_futures=killed)

    def kill(self) -> None:
        """Stop as a killed process would: no more renewals, deletes or releases, no new messages;
        `run_queues` returns at once. The messages it held reappear after `message_visibility`."""
        self._killed.set()
        with self._lock:
            leases, wakers = list(self._leases), list(self._wakers)
        for lease in leases:
            lease.cancel()
        for waker in wakers:
            if not waker.done():
                waker.set_result(None)

    def queue(self, name: str) -> QueueClient:
        """A client of the named queue, which is created if need be."""
        client = self._service().get_queue_client(name)
        try:
            client.create_queue()
        except ResourceExistsError:
            pass
        return client

    def _service(self) -> QueueServiceClient:
        retry = HostRetry(retry_total=self.storage_retries)
        return QueueServiceClient.from_connection_string(self.connection_string, retry_policy=retry)

    def _listen(self, name: str) -> QueueClient:
        """The client run_queues polls; like the host's listener, it outlives a storage outage."""
        try:
            return self.queue(name)
        except AzureError as exc:
            log.warning("queue %s could not be created, polling it anyway: %s", name, exc)
            return self._service().get_queue_client(name)

    @staticmethod
    def _receive(client: QueueClient, count: int, visibility: int) -> list[Any]:
        try:
            return list(client.receive_messages(messages_per_page=count, visibility_timeout=visibility,
                                                max_messages=count))  # fmt: skip
        except AzureError as exc:
            # The host's listener logs and polls again later: an outage is an empty poll.
            log.warning("queue %s: receiving messages failed: %s", client.queue_name, exc)
            return []

    def _handle(self, client: QueueClient, queue_name: str, function_name: str, message: Any) -> None:
        if self._killed.is_set():
            return
        dequeue_count = message.dequeue_count or 0
        if dequeue_count > self.max_dequeue_count:
            # Its host died before it could move it (the WebJobs SDK checks before invoking).
            self._poison(client, queue_name, message, message.pop_receipt)
            return
        lease = MessageLease(client, message.id, message.pop_receipt, self.message_visibility)
        with self._lock:
            self._leases.add(lease)
        try:
            succeeded = self._invoke(function_name, _queue_message(message), message)
        finally:
            receipt = lease.stop()
            with self._lock:
                self._leases.discard(lease)
        if self._killed.is_set():
            return
        if succeeded:
            self._settle("delete", message.id, lambda: client.delete_message(message.id, receipt))
        elif dequeue_count >= self.max_dequeue_count:
            self._poison(client, queue_name, message, receipt)
        else:
            seconds = whole_seconds(self.retry_visibility)
            self._settle("release", message.id,
                         lambda: client.update_message(message.id, receipt, visibility_timeout=seconds))  # fmt: skip

    def _poison(self, client: QueueClient, queue_name: str, message: Any, receipt: str) -> None:
        log.warning("message %s has reached MaxDequeueCount of %d: moving it to queue '%s-poison'",
                    message.id, self.max_dequeue_count, queue_name)  # fmt: skip
        try:
            self.queue(f"{queue_name}-poison").send_message(message.content)
        except AzureError as exc:
            # Not deleted either: it reappears, past MaxDequeueCount, and is moved on its next receipt.
            log.error("message %s could not be moved to '%s-poison': %s", message.id, queue_name, exc)
            return
        self._settle("delete", message.id, lambda: client.delete_message(message.id, receipt))

    @staticmethod
    def _settle(what: str, message_id: str, call: Callable[[], object]) -> None:
        """Delete or release a message. If another receiver has it now, or it is gone, let it be (as
        the WebJobs SDK does); if storage fails, log it: the message reappears after its visibility
        timeout and is delivered again."""
        try:
            call()
        except AzureError as exc:
            if isinstance(exc, HttpResponseError) and message_lost(exc):
                log.info("message %s: %s skipped, the message moved on: %s", message_id, what, error_code(exc))
                return
            log.error("message %s: %s failed, it will be delivered again: %s", message_id, what, exc)

    def call(self, function_name: str, argument: Any) -> Any:
        """Call one function with its trigger's value as the worker does (its `context`, the
        invocation id of the calling thread), outside the queues; raises what it raises."""
        user_function: Callable[..., Any] = self.functions[function_name].get_user_function()
        with invoking(user_function, function_name) as (_, kwargs):
            return user_function(argument, **kwargs)

    def _invoke(self, function_name: str, argument: Any, message: Any = None, *,
                result: list[Any] | None = None) -> bool:
        user_function: Callable[..., Any] = self.functions[function_name].get_user_function()
        started = datetime.now(UTC)
        error: Exception | None = None
        with invoking(user_function, function_name) as (invocation_id, kwargs):
            try:
                returned = user_function(argument, **kwargs)
                if result is not None:
                    result.append(returned)
            except Exception as exc:
                log.warning("function %s failed: %s", function_name, exc)
                error = exc
        invocation = Invocation(
            function_name, error is None, error, _since(started),
            message_id=getattr(message, "id", None), dequeue_count=getattr(message, "dequeue_count", None),
            invocation_id=invocation_id,
        )  # fmt: skip
        with self._lock:
            self.invocations.append(invocation)
        if self.on_invocation is not None:
            self.on_invocation(invocation)
        return error is None


def _match_route(route: str, path: str) -> dict[str, str] | None:
    """The route's parameters when `path` matches its template (`maintenance/{action}`), else None."""
    pattern = re.sub(r"\\{(\w+)(?::\w+)?\\}", r"(?P<\1>[^/]+)", re.escape(route.strip("/")))
    match = re.fullmatch(pattern, path, flags=re.IGNORECASE)
    return {k: unquote(v) for k, v in match.groupdict().items()} if match else None


def _queue_message(message: Any) -> func.QueueMessage:
    """The message as the Python worker hands it to a function (azure.functions.queue.QueueMessage)."""
    return WorkerQueueMessage(
        id=message.id, body=_host_decode(message.content), pop_receipt=message.pop_receipt,
        dequeue_count=message.dequeue_count, expiration_time=message.expires_on, insertion_time=message.inserted_on,
        time_next_visible=message.next_visible_on,
    )  # fmt: skip


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


# ----- the process ---------------------------------------------------------------------------------

EXIT_IDLE = 0
EXIT_MAX_SECONDS = 3


def _print_invocation(invocation: Invocation) -> None:
    error = "" if invocation.error is None else f"{type(invocation.error).__name__}: {invocation.error}"
    print(
        f"functions-host: invocation function={invocation.function} "
        f"succeeded={str(invocation.succeeded).lower()} seconds={invocation.seconds:.3f} "
        f"message_id={invocation.message_id or ''} dequeue_count={invocation.dequeue_count or ''} "
        f"error={error!r}",
        file=sys.stderr, flush=True,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app's queue triggers (`function_app.app`, from the working directory) until idle.

    Exits 0 once no message has been handled for `--idle-exit` seconds, 3 when `--max-seconds`
    passed first (abandoning what runs, as a host torn down would). One stderr line per invocation:
    `functions-host: invocation function=NAME succeeded=true|false seconds=S message_id=ID
    dequeue_count=N error='...'`. The app's settings come from the environment.
    """
    parser = argparse.ArgumentParser(prog="python -m emulator.functions_host", description=main.__doc__)
    parser.add_argument("--connection-string", default=os.environ.get("AzureWebJobsStorage"),
                        help="the storage account the queue triggers use (default: $AzureWebJobsStorage)")
    parser.add_argument("--message-visibility", type=float, default=600.0, metavar="S")
    parser.add_argument("--retry-visibility", type=float, default=0.0, metavar="S")
    parser.add_argument("--idle-exit", type=float, default=10.0, metavar="S")
    parser.add_argument("--max-seconds", type=float, default=None, metavar="S")
    parser.add_argument("--log-level", default="WARNING", help="for the app's own log lines on stderr")
    args = parser.parse_args(argv)
    if not args.connection_string:
        parser.error("--connection-string is required (or set AzureWebJobsStorage)")
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import function_app

    host = FunctionsHost(function_app.app, args.connection_string, message_visibility=args.message_visibility,
                         retry_visibility=args.retry_visibility, on_invocation=_print_invocation)  # fmt: skip
    if args.max_seconds is not None:
        watchdog = threading.Timer(args.max_seconds, _give_up, args=(args.max_seconds,))
        watchdog.daemon = True
        watchdog.start()
    print(f"functions-host: started pid={os.getpid()} queues={','.join(sorted(host.queue_triggers()))}",
          file=sys.stderr, flush=True)  # fmt: skip
    last_seen = time.monotonic()
    while True:
        if host.run_queues():
            last_seen = time.monotonic()
        idle = time.monotonic() - last_seen
        if idle >= args.idle_exit:
            print(f"functions-host: idle for {idle:.1f} s, exiting", file=sys.stderr, flush=True)
            return EXIT_IDLE
        time.sleep(min(0.2, args.idle_exit - idle))


def _give_up(seconds: float) -> None:
    print(f"functions-host: --max-seconds {seconds:g} passed, exiting", file=sys.stderr, flush=True)
    # Running invocations are abandoned, not awaited: their messages reappear after their visibility.
    os._exit(EXIT_MAX_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
