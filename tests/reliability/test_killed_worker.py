"""A worker process killed mid-send is resumed, not cancelled: its message comes back, waits for the
dead worker's lease to run out (a live worker would have renewed it), takes the phase over and
starts the machines the dead worker had not reached, each exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from emulator import AzureEmulator
from emulator.azurite import REPO_ROOT, Azurite
from emulator.functions_host import FunctionsHost
from emulator.https_server import LoopbackEndpoints, serve_on_loopback
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, make_event
from tests.reliability.conftest import run_of

VMS = 16
LEASE = 6  # seconds: MAINTENANCE_LEASE_SECONDS for both workers


@pytest.fixture
def emulator() -> AzureEmulator:
    # 1 real second = 20 simulated: a start (60 simulated s) takes 3 real seconds.
    return AzureEmulator(time_scale=0.05)


@pytest.fixture
def loopback(emulator: AzureEmulator) -> Iterator[LoopbackEndpoints]:
    endpoints = serve_on_loopback(emulator)
    yield endpoints
    endpoints.close()


def worker_process(azurite: Azurite, loopback: LoopbackEndpoints) -> subprocess.Popen[str]:
    """The Functions host with the app, as its own process: its own transport, credential and TLS
    against the emulator over loopback HTTPS, the ledger and queues in Azurite. It fetches messages
    invisible for 4 s and renews that while a function runs, as the real host does (10 minutes)."""
    env = {**os.environ, **loopback.environment(), "PYTHONPATH": str(REPO_ROOT),
           "MAINTENANCE_PARALLELISM": "1", "MAINTENANCE_SNAPSHOT_DISKS": "none",
           "MAINTENANCE_LEASE_SECONDS": str(LEASE)}
    command = [sys.executable, "-m", "emulator.functions_host", "--connection-string", azurite.connection_string,
               "--message-visibility", "4", "--idle-exit", "60", "--log-level", "WARNING"]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)


def accepted_starts(emulator: AzureEmulator) -> int:
    return sum(1 for r in emulator.requests if r.method == "POST" and r.path.lower().endswith("/start")
               and r.status == 202)


def test_a_worker_killed_after_5_of_16_starts_is_taken_over_and_every_vm_started_once(
    host: FunctionsHost, emulator: AzureEmulator, azurite: Azurite, loopback: LoopbackEndpoints,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAINTENANCE_SNAPSHOT_DISKS", "none")
    monkeypatch.setenv("MAINTENANCE_LEASE_SECONDS", str(LEASE))
    vms = [emulator.add_vm(SUB_A, "rg-kill", f"vm{i:02d}", power_state="deallocated") for i in range(VMS)]
    pre = make_event("pre", subscriptions=(SUB_A,), cutoff_in=timedelta(minutes=10))
    emulator.add_run(run_of(pre), vms)
    host.deliver_event("pre_maintenance", pre)

    emulator.latency = 0.4 / emulator.clock.time_scale  # 0.4 real seconds a request, one start at a time
    worker = worker_process(azurite, loopback)
    try:
        deadline = time.monotonic() + 60
        while accepted_starts(emulator) < 5:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker never got to its fifth start"
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    sent_by_the_dead = accepted_starts(emulator)
    assert 5 <= sent_by_the_dead < VMS, "killed mid-send"
    emulator.latency = 0.0
    phase = get_runtime().ledger.get_phase(run_of(pre), "pre")
    assert phase is not None and phase["Status"] == "running", "the dead worker's claim is still there"

    # The message comes back once its visibility (4 s, no longer renewed) runs out, with dequeue
    # count 2; it finds the claim still leased, waits for the lease to end, and takes over.
    finish_by = time.monotonic() + 90
    while (get_runtime().ledger.get_phase(run_of(pre), "pre") or {}).get("Status") != "completed":
        assert time.monotonic() < finish_by, "the phase was never taken over"
        host.run_queues()
        time.sleep(0.5)

    assert all(emulator.vm_power_state(vm) == "PowerState/running" for vm in vms)
    assert {vm: emulator.actions(vm) for vm in vms} == {vm: ["start"] for vm in vms}, (
        "every VM started exactly once: the dead worker's starts were read back, not sent again")
    assert emulator.run_status(run_of(pre)) != "Cancelled"
    ledger = get_runtime().ledger
    assert ledger.get_run(run_of(pre))["Verdict"] == "ready"  # type: ignore[index]
    phase = ledger.get_phase(run_of(pre), "pre")
    assert phase is not None and phase["Attempts"] == 2
    worker_runs = [i for i in host.invocations if i.function == "maintenance_worker"]
    assert [i.dequeue_count for i in worker_runs][:1] == [2], "the dead worker's own message came back"
    assert any(i.message_id != worker_runs[0].message_id for i in worker_runs), "a copy waited for the lease"
