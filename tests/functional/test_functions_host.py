"""The Functions host stand-in against the real Azurite: what the queue trigger hands a function, the
visibility of messages while and after it runs, several hosts on one queue, and the host process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from emulator.azurite import REPO_ROOT, Azurite
from emulator.functions_host import FunctionsHost
from emulator.storage_faults import StorageFaultProxy

pytestmark = pytest.mark.azurite


def make_app(queue_name: str, handler: Callable[[func.QueueMessage], None]) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.function_name("work")
    @app.queue_trigger(arg_name="message", queue_name=queue_name, connection="AzureWebJobsStorage")
    def work(message: func.QueueMessage) -> None:
        handler(message)

    return app


@pytest.fixture
def queue_name() -> str:
    return f"host-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def sender(azurite: Azurite, queue_name: str) -> Iterator[QueueClient]:
    """The queue, with messages encoded as the app enqueues them (base64, the host's default)."""
    client = QueueClient.from_connection_string(azurite.connection_string, queue_name,
                                                message_encode_policy=TextBase64EncodePolicy())  # fmt: skip
    client.create_queue()
    yield client
    client.delete_queue()


def visible(client: QueueClient) -> list[Any]:
    return list(client.peek_messages(max_messages=32))


def test_the_function_gets_the_message_as_the_worker_builds_it(
    azurite: Azurite, sender: QueueClient, queue_name: str
) -> None:
    seen: list[func.QueueMessage] = []

    def flaky(message: func.QueueMessage) -> None:
        seen.append(message)
        if len(seen) == 1:
            raise RuntimeError("first attempt fails")

    host = FunctionsHost(make_app(queue_name, flaky), azurite.connection_string)
    sender.send_message("payload")

    assert host.run_queues() == 2
    assert [m.dequeue_count for m in seen] == [1, 2]
    assert [i.dequeue_count for i in host.invocations] == [1, 2]
    assert [i.succeeded for i in host.invocations] == [False, True]
    first = seen[0]
    assert isinstance(first, func.QueueMessage)
    assert first.get_body() == b"payload"
    assert first.id == seen[1].id == host.invocations[0].message_id
    assert first.pop_receipt and first.pop_receipt != seen[1].pop_receipt
    assert isinstance(first.insertion_time, datetime) and isinstance(first.expiration_time, datetime)
    assert first.expiration_time > first.insertion_time
    assert isinstance(first.time_next_visible, datetime)
    assert visible(sender) == []


def test_a_failed_message_stays_invisible_for_retry_visibility(
    azurite: Azurite, sender: QueueClient, queue_name: str
) -> None:
    attempts: list[float] = []

    def fails_once(message: func.QueueMessage) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RuntimeError("try again later")

    host = FunctionsHost(make_app(queue_name, fails_once), azurite.connection_string, retry_visibility=2)
    sender.send_message("payload")

    assert host.run_queues() == 1, "the failed message is not visible again at once"
    assert visible(sender) == []
    time.sleep(1.0)
    assert host.run_queues() == 0
    time.sleep(1.3)
    assert host.run_queues() == 1

    assert attempts[1] - attempts[0] >= 2.0
    assert [i.succeeded for i in host.invocations] == [False, True]


def test_renewal_keeps_a_long_invocation_invisible_and_its_delete_counts(
    azurite: Azurite, sender: QueueClient, queue_name: str
) -> None:
    started = threading.Event()

    def slow(message: func.QueueMessage) -> None:
        started.set()
        time.sleep(2.6)

    # Fetched for 1 s and renewed every 0.5 s: without renewal it would reappear after a second.
    host = FunctionsHost(make_app(queue_name, slow), azurite.connection_string, message_visibility=1)
    sender.send_message("payload")
    worker = threading.Thread(target=host.run_queues)
    worker.start()
    assert started.wait(10)
    peeks = []
    while worker.is_alive():
        peeks.append(len(visible(sender)))
        time.sleep(0.2)
    worker.join()

    assert len(peeks) >= 8 and set(peeks) == {0}
    assert [i.succeeded for i in host.invocations] == [True]
    time.sleep(1.5)  # the delete used the renewed pop receipt: nothing comes back
    assert visible(sender) == []


def test_a_killed_hosts_message_reappears_after_message_visibility(
    azurite: Azurite, sender: QueueClient, queue_name: str
) -> None:
    started, release = threading.Event(), threading.Event()
    counts: list[int | None] = []

    def stuck_first_time(message: func.QueueMessage) -> None:
        counts.append(message.dequeue_count)
        if message.dequeue_count == 1:
            started.set()
            release.wait(30)

    app = make_app(queue_name, stuck_first_time)
    doomed = FunctionsHost(app, azurite.connection_string, message_visibility=2)
    sender.send_message("payload")
    received = time.monotonic()
    worker = threading.Thread(target=doomed.run_queues)
    worker.start()
    try:
        assert started.wait(10)
        doomed.kill()
        worker.join(timeout=2)
        assert not worker.is_alive(), "run_queues returns at once after kill()"

        successor = FunctionsHost(app, azurite.connection_string)
        assert successor.run_queues() == 0, "still invisible: the dead host's fetch holds it"
        time.sleep(max(0.0, received + 2.2 - time.monotonic()))
        assert successor.run_queues() == 1
    finally:
        release.set()

    assert counts == [1, 2]
    assert [i.succeeded for i in successor.invocations] == [True]
    time.sleep(0.3)  # the abandoned invocation returns now; a killed host must not touch the queue
    assert visible(sender) == []
    assert doomed.run_queues() == 0


@pytest.mark.parametrize("meddle", ["release", "delete"])
def test_a_message_that_moved_on_is_not_deleted_twice(
    azurite: Azurite, sender: QueueClient, queue_name: str, meddle: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    calls: list[int | None] = []

    def meddling(message: func.QueueMessage) -> None:
        calls.append(message.dequeue_count)
        if len(calls) == 1 and message.id and message.pop_receipt:
            # Someone else takes the message over (new pop receipt) or deletes it while we run.
            if meddle == "release":
                raw.update_message(message.id, message.pop_receipt, visibility_timeout=0)
            else:
                raw.delete_message(message.id, message.pop_receipt)

    host = FunctionsHost(make_app(queue_name, meddling), azurite.connection_string)
    sender.send_message("payload")
    with caplog.at_level(logging.INFO, logger="functions-host"):
        handled = host.run_queues()

    expected_code = "PopReceiptMismatch" if meddle == "release" else "MessageNotFound"
    assert any("delete skipped" in r.getMessage() and expected_code in r.getMessage() for r in caplog.records)
    assert calls == ([1, 2] if meddle == "release" else [1])
    assert handled == len(calls)
    assert visible(sender) == []


def test_a_message_past_max_dequeue_count_goes_to_poison_without_an_invocation(
    azurite: Azurite, sender: QueueClient, queue_name: str
) -> None:
    raw = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    sender.send_message("payload")
    for _ in range(3):  # three hosts died holding it
        message = raw.receive_message(visibility_timeout=30)
        assert message is not None
        raw.update_message(message.id, message.pop_receipt, visibility_timeout=0)
    host = FunctionsHost(make_app(queue_name, lambda m: None), azurite.connection_string, max_dequeue_count=2)

    assert host.run_queues() == 1

    assert host.invocations == []
    assert visible(sender) == []
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{queue_name}-poison")
    assert [m.content for m in poison.peek_messages()] == [raw_content(sender, "payload")]
    poison.delete_queue()


def raw_content(sender: QueueClient, text: str) -> str:
    """What the queue stores for `text` sent through `sender` (base64)."""
    import base64

    return base64.b64encode(text.encode()).decode()


def test_two_hosts_on_one_queue_share_the_work(azurite: Azurite, sender: QueueClient, queue_name: str) -> None:
    seen: list[bytes] = []
    lock = threading.Lock()

    def record(message: func.QueueMessage) -> None:
        time.sleep(0.05)
        with lock:
            seen.append(message.get_body())

    app = make_app(queue_name, record)
    hosts = [FunctionsHost(app, azurite.connection_string) for _ in range(2)]
    for i in range(24):
        sender.send_message(f"m{i}")
    handled: list[int] = []
    errors: list[BaseException] = []

    def run(host: FunctionsHost) -> None:
        try:
            handled.append(host.run_queues())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(host,)) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sorted(seen) == sorted(f"m{i}".encode() for i in range(24)), "each message once"
    assert sum(handled) == 24
    assert all(len(host.invocations) > 0 for host in hosts), "both hosts took part"


def test_messages_are_fetched_in_batches_as_host_json_sets_them(
    azurite: Azurite, sender: QueueClient, queue_name: str
) -> None:
    # batchSize 4, newBatchThreshold 2: four at once, the next four once only two still run.
    release, lock = threading.Event(), threading.Lock()
    running: list[int] = []
    started: list[int] = []  # how many ran (this one included) as each began

    def hold(message: func.QueueMessage) -> None:
        with lock:
            running.append(1)
            started.append(len(running))
        release.wait(timeout=20)
        with lock:
            running.pop()

    host = FunctionsHost(make_app(queue_name, hold), azurite.connection_string)
    with open(REPO_ROOT / "host.json") as handle:
        queues = json.load(handle)["extensions"]["queues"]
    assert (host.batch_size, host.new_batch_threshold) == (queues["batchSize"], queues["newBatchThreshold"])
    for i in range(6):
        sender.send_message(f"m{i}")
    runner = threading.Thread(target=host.run_queues)
    runner.start()
    deadline = time.monotonic() + 10
    while len(started) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # more than the host's polling interval: a greedy host would fetch the rest now
    assert len(started) == 4 and len(visible(sender)) == 2, "one batch of four, the rest left on the queue"
    release.set()
    runner.join(timeout=30)
    assert len(started) == 6 and max(started) <= 4


def test_a_failed_delete_means_the_message_is_delivered_again(
    azurite: Azurite, sender: QueueClient, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    counts: list[int | None] = []
    with StorageFaultProxy(azurite) as proxy:
        host = FunctionsHost(make_app(queue_name, lambda m: counts.append(m.dequeue_count)), proxy.connection_string,
                             message_visibility=1, storage_retries=0)  # fmt: skip
        sender.send_message("payload")
        rule = proxy.fail("queue", method="DELETE", path_contains="/messages/", times=1)
        with caplog.at_level(logging.ERROR, logger="functions-host"):
            assert host.run_queues() == 1
        time.sleep(1.2)
        assert host.run_queues() == 1

    assert rule.fired == 1
    assert counts == [1, 2], "at least once: the function runs again"
    assert any("delete failed, it will be delivered again" in r.getMessage() for r in caplog.records)
    assert visible(sender) == []


def test_the_host_keeps_polling_through_a_queue_outage(
    azurite: Azurite, sender: QueueClient, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bytes] = []
    with StorageFaultProxy(azurite) as proxy:
        host = FunctionsHost(make_app(queue_name, lambda m: seen.append(m.get_body())), proxy.connection_string,
                             storage_retries=0)  # fmt: skip
        sender.send_message("payload")
        proxy.unreachable("queue")
        with caplog.at_level(logging.WARNING, logger="functions-host"):
            assert host.run_queues() == 0
        proxy.clear()
        assert host.run_queues() == 1

    assert seen == [b"payload"]
    assert any("receiving messages failed" in r.getMessage() for r in caplog.records)


# ----- the host process ----------------------------------------------------------------------------

_TINY_APP = '''
"""A stand-in app for the host process: stuck on a first delivery, quick on a second."""
import time

import azure.functions as func

app = func.FunctionApp()


@app.function_name("work")
@app.queue_trigger(arg_name="message", queue_name="{queue}", connection="AzureWebJobsStorage")
def work(message: func.QueueMessage) -> None:
    if message.dequeue_count == 1 and message.get_body() == b"stuck":
        time.sleep(60)
    if message.get_body() == b"broken":
        raise ValueError("cannot read it")
'''


def host_process(cwd: Path, connection_string: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "emulator.functions_host", "--connection-string", connection_string, *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)


def invocation_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("functions-host: invocation ")]


def test_the_host_process_exits_0_when_idle(azurite: Azurite, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    queues = {"MAINTENANCE_WORK_QUEUE": f"idle-work-{suffix}", "MAINTENANCE_EVENTS_QUEUE": f"idle-ev-{suffix}"}
    env = {**os.environ, **queues}
    command = [sys.executable, "-m", "emulator.functions_host", "--connection-string", azurite.connection_string,
               "--idle-exit", "0.5", "--max-seconds", "60"]  # fmt: skip

    started = time.monotonic()
    finished = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert finished.returncode == 0, finished.stderr
    assert time.monotonic() - started < 30
    [started_line] = [line for line in finished.stderr.splitlines() if line.startswith("functions-host: started")]
    indexed = set(started_line.split("queues=")[1].split(","))
    assert {f"idle-ev-{suffix}", f"idle-work-{suffix}"} <= indexed, "it indexed the real function_app"
    assert "idle for" in finished.stderr
    assert invocation_lines(finished.stderr) == []


def test_the_host_process_logs_each_invocation(
    azurite: Azurite, sender: QueueClient, queue_name: str, tmp_path: Path
) -> None:
    (tmp_path / "function_app.py").write_text(textwrap.dedent(_TINY_APP).replace("{queue}", queue_name))
    sender.send_message("fine")
    sender.send_message("broken")

    process = host_process(tmp_path, azurite.connection_string, "--idle-exit", "0.5", "--max-seconds", "60")
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr
    lines = invocation_lines(stderr)
    assert len(lines) == 6, stderr
    assert sum("function=work succeeded=true" in line for line in lines) == 1
    failed = [line for line in lines if "succeeded=false" in line]
    assert [line.split("dequeue_count=")[1].split()[0] for line in failed] == ["1", "2", "3", "4", "5"]
    assert all(line.endswith("error='ValueError: cannot read it'") for line in failed)
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{queue_name}-poison")
    assert len(list(poison.peek_messages())) == 1
    poison.delete_queue()


def test_the_host_process_stops_at_max_seconds(azurite: Azurite, tmp_path: Path, queue_name: str) -> None:
    (tmp_path / "function_app.py").write_text(textwrap.dedent(_TINY_APP).replace("{queue}", queue_name))

    process = host_process(tmp_path, azurite.connection_string, "--idle-exit", "60", "--max-seconds", "1")
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 3, stderr
    assert "--max-seconds 1 passed" in stderr


def test_a_killed_host_process_leaves_its_message_to_the_next(
    azurite: Azurite, sender: QueueClient, queue_name: str, tmp_path: Path
) -> None:
    (tmp_path / "function_app.py").write_text(textwrap.dedent(_TINY_APP).replace("{queue}", queue_name))
    sender.send_message("stuck")
    first = host_process(tmp_path, azurite.connection_string, "--message-visibility", "2", "--idle-exit", "30",
                         "--max-seconds", "60")  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while visible(sender) and time.monotonic() < deadline:
            time.sleep(0.05)  # until the first host holds the message
        assert visible(sender) == []
        time.sleep(0.3)
    finally:
        first.send_signal(signal.SIGKILL)
        _, first_stderr = first.communicate(timeout=10)
    assert visible(sender) == [], "the dead host's fetch still hides it"

    second = host_process(tmp_path, azurite.connection_string, "--idle-exit", "2.5", "--max-seconds", "60")
    _, stderr = second.communicate(timeout=60)

    assert first.returncode == -signal.SIGKILL
    assert invocation_lines(first_stderr) == [], "it died inside the invocation"
    assert second.returncode == 0, stderr
    [line] = invocation_lines(stderr)
    assert "succeeded=true" in line and "dequeue_count=2" in line
    assert visible(sender) == []
