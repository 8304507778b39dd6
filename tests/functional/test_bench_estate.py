"""The benchmark's estate run, small: the emulator in a process of its own serving ARM over HTTPS,
two Functions host processes sharing Azurite, the run split into a queue message per subscription."""

from __future__ import annotations

import pytest

from bench.estate import run_estate
from bench.fleet import Profile, build_fleet
from emulator.azurite import Azurite

pytestmark = pytest.mark.azurite


def test_a_run_scaled_out_over_host_processes_starts_and_snapshots_every_machine(azurite: Azurite) -> None:
    profile = Profile(start=20.0, snapshot=10.0, poll_interval=5)
    result = run_estate(48, 8, 3, 2, 0.1, profile, azurite.connection_string, timeout=240.0)

    assert "error" not in result, result.get("error")
    assert result["verdict"] == "ready"
    done = result["completion"]
    off = sum(1 for m in build_fleet(48, profile.off_fraction, 0.0, 8, 3) if m.power_state != "running")
    assert done["complete"] and done["vms_started"] == off and done["snapshots"] == 48
    # The verdict follows the work (queued by the last group), in the simulated time every process
    # shares; the fallback's would come at the deadline, 1200 s or later. How closely it follows is
    # the benchmark's figure: with several host processes on a busy machine the harness lags here.
    assert done["makespan"] <= result["verdict_at"] <= done["makespan"] + 12 * profile.poll_interval
    workers = [p["invocations"].count("maintenance_worker") for p in result["processes"]]
    # The event's message, one per subscription, the verdict (twice when two groups end together).
    assert sum(workers) in (1 + 8 + 1, 1 + 8 + 2)
    assert all(n > 0 for n in workers), f"both hosts ran messages: {workers}"
    assert result["requests"]["throttled"] == 0
    assert result["emulator_process"]["requests_served"] > 0
