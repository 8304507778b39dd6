"""The baseline: what the documented sample does, with the real SDK against a fresh emulator.

An instance-view GET per VM, one after another; then the VMs found stopped or deallocated are
started with at most `in_flight` (5) at a time, each start waited on to completion before that
slot sends the next. No snapshots. `ComputeManagementClient` with azure-core's default
RetryPolicy, the emulator's transport and the same polling interval as the app.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError
from azure.mgmt.compute import ComputeManagementClient

from bench.bound import Work, lower_bound
from bench.fleet import ARM_ENDPOINT, Machine, Profile, build_fleet
from bench.measure import Stopwatch, ThreadWatcher, completion, peak_rss_mb, request_stats
from bench.scenario import make_emulator
from emulator import EmulatorClock

STARTABLE = frozenset({"stopped", "deallocated", "stopping", "deallocating"})
# The sequential instance-view GETs are CPU-heavy per simulated second (one request per 0.1 s):
# they run at this scale, at least, so that their latency, not the harness's CPU, paces them.
READ_PHASE_TIME_SCALE = 0.01


class RescalableClock(EmulatorClock):
    """An EmulatorClock whose time scale can change between phases; simulated time stays continuous."""

    def rescale(self, time_scale: float) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        with self._lock:
            now_real = time.monotonic()
            self._offset += (now_real - self._t0) / self.time_scale
            self._t0 = now_real
            self.time_scale = time_scale


class StaticCredential:
    """A TokenCredential handing out one long-lived token (the emulator only checks for a bearer)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("bench-baseline-token", int(time.time()) + 24 * 3600)


def baseline_bound(fleet: list[Machine], profile: Profile) -> dict[str, Any]:
    """The same throttling model for the baseline's work: one instance-view GET per VM (reads)
    and one start per VM that is off; no Resource Graph, no snapshots."""
    work: dict[str, Work] = defaultdict(Work)
    for m in fleet:
        w = work[m.subscription]
        work[m.subscription] = Work(starts=w.starts + (m.power_state != "running"), extra_reads=w.extra_reads + 1)
    return lower_bound(work, machines=len(fleet), vms=len(fleet), snapshots=0, start_seconds=profile.start,
                       snapshot_seconds=profile.snapshot, latency=profile.latency, graph=False).to_dict()


def strategy_floor(fleet: list[Machine], profile: Profile, in_flight: int) -> float:
    """What the sample's own strategy cannot beat, throttling aside: the GETs one after another,
    then ceil(starts / in_flight) rounds of a start."""
    starts = sum(m.power_state != "running" for m in fleet)
    rounds = -(-starts // in_flight)
    return len(fleet) * profile.latency + rounds * (profile.start + profile.latency)


def run_baseline(size: int, profile: Profile, time_scale: float, *, in_flight: int = 5) -> dict[str, Any]:
    fleet = build_fleet(size, profile.off_fraction, subscriptions=profile.subscriptions)
    clock = RescalableClock(max(time_scale, READ_PHASE_TIME_SCALE))
    emulator, ids = make_emulator(fleet, profile, time_scale, clock=clock)
    credential = StaticCredential()
    transport = emulator.transport()
    clients = {
        sub: ComputeManagementClient(credential, sub, base_url=ARM_ENDPOINT, transport=transport,
                                     credential_scopes=[f"{ARM_ENDPOINT}/.default"],
                                     polling_interval=profile.poll_interval)
        for sub in sorted({m.subscription for m in fleet})
    }
    errors: list[str] = []

    def start(machine: Machine) -> None:
        try:
            clients[machine.subscription].virtual_machines.begin_start(machine.resource_group, machine.name).result()
        except AzureError as exc:
            errors.append(f"{machine.name}: {type(exc).__name__}: {exc}")

    with ThreadWatcher() as threads, Stopwatch(emulator) as total:
        since = emulator.clock.now()
        with Stopwatch(emulator) as reads:
            off: list[Machine] = []
            for machine in fleet:
                try:
                    view = clients[machine.subscription].virtual_machines.instance_view(
                        machine.resource_group, machine.name)
                except AzureError as exc:
                    errors.append(f"{machine.name}: {type(exc).__name__}: {exc}")
                    continue
                codes = [s.code or "" for s in view.statuses or [] if (s.code or "").startswith("PowerState/")]
                if codes and codes[0].split("/", 1)[1].lower() in STARTABLE:
                    off.append(machine)
        clock.rescale(time_scale)
        with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="baseline") as pool:
            list(pool.map(start, off))
    done = completion(emulator, ids, since)
    return {
        "mode": "baseline",
        "size": size,
        "time_scale": time_scale,
        "in_flight": in_flight,
        "bound": baseline_bound(fleet, profile),
        "strategy_floor": strategy_floor(fleet, profile, in_flight),
        "completion": done,
        "requests": request_stats(emulator.requests, since),
        "read_phase": {"simulated": reads.simulated, "wall": reads.wall, "cpu": reads.cpu,
                       "time_scale": max(time_scale, READ_PHASE_TIME_SCALE)},
        "errors": errors[:20],
        "error_count": len(errors),
        "wall": total.wall,
        "cpu": total.cpu,
        "threads_peak": threads.peak,
        "peak_rss_mb": peak_rss_mb(),
    }
