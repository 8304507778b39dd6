"""The benchmark's world: the timing profile, the fleets, the event, the default time scales."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

ARM_ENDPOINT = "https://management.bench.local"
SUBSCRIPTIONS = tuple(f"00000000-0000-0000-0000-0000000000{suffix}" for suffix in ("a1", "b2", "c3", "d4"))
REGIONS = ("westeurope", "northeurope", "swedencentral")  # a fleet spans the first two unless told
CONFIG_ID = (f"/subscriptions/{SUBSCRIPTIONS[0]}/resourceGroups/rg-patching/providers/"
             "Microsoft.Maintenance/maintenanceConfigurations/bench-weekly")
GROUPS_PER_SUBSCRIPTION = 5


@dataclass(frozen=True)
class Profile:
    """Simulated seconds: per-call latency and how long each long-running operation takes."""

    latency: float = 0.1
    start: float = 60.0
    deallocate: float = 90.0
    power_off: float = 30.0
    snapshot: float = 30.0
    delete_snapshot: float = 10.0
    poll_interval: int = 15  # MAINTENANCE_POLL_INTERVAL_SECONDS, simulated (the transport scales sleeps)
    off_fraction: float = 0.6  # half stopped, half deallocated
    guest_fraction: float = 0.0  # share of the fleet tagged maintenance-stop-services (the in-guest run: 0.3)
    script_seconds: float = 45.0  # how long each stop-services script runs in the guest
    subscriptions: int = 0  # how many subscriptions the fleet spans (0: by size, subscription_count)

    def durations(self) -> dict[str, float]:
        """The emulator's `operation_durations`."""
        return {"start": self.start, "deallocate": self.deallocate, "powerOff": self.power_off,
                "snapshot": self.snapshot, "deleteSnapshot": self.delete_snapshot}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Machine:
    name: str
    subscription: str
    resource_group: str
    location: str
    power_state: str  # running | stopped | deallocated
    stop_services: str = ""  # the maintenance-stop-services tag, "" for none


def subscription_count(size: int, chosen: int = 0) -> int:
    """`chosen` when given; else 10 -> 1, 100 -> 2, 1000 and up -> 4."""
    if chosen:
        return chosen
    if size <= 10:
        return 1
    if size <= 100:
        return 2
    return 4


def _every(index: int, fraction: float) -> bool:
    """Bresenham: whether machine `index` is one of the `fraction` spread evenly through the fleet."""
    return int((index + 1) * fraction + 1e-9) > int(index * fraction + 1e-9)


def build_fleet(size: int, off_fraction: float, guest_fraction: float = 0.0, subscriptions: int = 0,
                regions: int = 2) -> list[Machine]:
    """`size` VMs spread round-robin over the subscriptions (`subscription_count`) and `regions`
    regions (at most len(REGIONS)).

    Exactly round(size * off_fraction) are off, spread evenly through the fleet (so every
    subscription gets its share), alternating stopped and deallocated; round(size * guest_fraction)
    carry a stop-services tag, spread evenly too (off and running ones alike).
    """
    if not 1 <= regions <= len(REGIONS):
        raise ValueError(f"regions must be 1 to {len(REGIONS)}, not {regions}")
    count = subscription_count(size, subscriptions)
    chosen = [*SUBSCRIPTIONS, *(f"00000000-0000-0000-0000-{i:012x}" for i in range(len(SUBSCRIPTIONS), count))]
    subscriptions_used = chosen[:count]
    machines: list[Machine] = []
    off_seen = 0
    for index in range(size):
        # Bresenham: machine `index` is off when the running count of off machines steps up.
        off = _every(index, off_fraction)
        if off:
            state = "stopped" if off_seen % 2 == 0 else "deallocated"
            off_seen += 1
        else:
            state = "running"
        subscription = subscriptions_used[index % count]
        within = index // count
        machines.append(Machine(
            name=f"vm-{index:05d}", subscription=subscription,
            resource_group=f"rg-fleet-{within % GROUPS_PER_SUBSCRIPTION}",
            location=REGIONS[within % regions], power_state=state,
            stop_services="app.service,worker.service" if _every(index, guest_fraction) else "",
        ))
    return machines


def default_time_scale(size: int) -> float:
    """Real seconds per simulated second for the app run, chosen so the harness is not the bottleneck.

    Measured on a 2-core machine shared with other work (see bench/README.md): a request costs
    about 1-3 ms of CPU in the SDK pipeline and the emulator, and the run must leave the CPU idle
    most of the time while sending and waiting, or simulated time runs on while the CPU works.
    Up to 1000 machines every start fits in the write burst: the starts go out as fast as the CPU
    sends them, and that stretch counts 1/scale times over against a bound of 60 s (at 0.5, 600
    starts took 4-6 simulated s instead of 3 at 1.0). So 1.0, production speed, from 100 up. At
    5000 the writes are paced by the bucket (10/s per subscription), but since the operations are
    polled while the rest is sent (so the verdict follows the last one closely), the sending and
    waiting at 0.5 ran at CPU/wall 0.8-1.0: simulated time ran on while the CPU worked, and the
    verdict came 11.6 s after the last operation instead of the 1.3 s measured at 1.0 (CPU/wall
    0.5). So 1.0 there too.
    """
    if size <= 10:
        return 0.1
    return 1.0


def estate_time_scale(size: int) -> float:
    """Real seconds per simulated second for the estate run (bench/estate.py): its requests cross
    real sockets (TLS, http.server) and its host processes, the emulator's and Azurite share the
    machine's cores, so it needs more real time per simulated second than one process does. About
    a simulated second per 5000 machines of a busy stretch (bench/README.md)."""
    return max(1.0, round(size / 5000, 1))


def default_baseline_time_scale(size: int) -> float:
    """The baseline is light (5 requests in flight) but long in simulated time: a smaller scale."""
    if size <= 10:
        return 0.01
    if size <= 100:
        return 0.005
    if size <= 1000:
        return 0.003
    return 0.002


def pre_event(correlation_id: str, subscriptions: list[str], now: datetime, cutoff: datetime) -> dict[str, Any]:
    """An Event Grid-schema pre event whose cancellation cutoff is `cutoff` (real time)."""
    start = cutoff + timedelta(minutes=10)
    data = {
        "correlationId": correlation_id,
        "maintenanceConfigurationId": CONFIG_ID,
        "startDateTime": _iso(start),
        "endDateTime": _iso(start + timedelta(hours=3)),
        "cancellationCutOffDateTime": _iso(cutoff),
        "resourceSubscriptionIds": subscriptions,
    }
    return {
        "id": correlation_id, "topic": CONFIG_ID, "subject": CONFIG_ID.rsplit("/", 1)[-1],
        "eventType": "Microsoft.Maintenance.PreMaintenanceEvent", "eventTime": _iso(now), "dataVersion": "1.0",
        "data": data,
    }


def correlation_id_for(now: datetime, size: int) -> str:
    run_id = (now + timedelta(minutes=40)).strftime("%Y%m%d%H%M") + f"{size % 100:02d}"
    return f"{CONFIG_ID}/providers/Microsoft.Maintenance/applyUpdates/{run_id}"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
