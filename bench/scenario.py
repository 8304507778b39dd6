"""One fleet size through the app: the pre event to `pre_maintenance`, the queue to `maintenance_worker`.

Runs in a child process of its own (bench/child.py) so that peak memory and CPU time are this
run's alone. Azurite (the ledger and the queues) is the parent's, shared by every child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import profiling
from bench.bound import Work, lower_bound
from bench.fleet import ARM_ENDPOINT, Machine, Profile, build_fleet, correlation_id_for, pre_event
from bench.measure import LedgerMeter, Stopwatch, ThreadWatcher, completion, current_rss_mb, peak_rss_mb, request_stats
from bench.profiling import MemoryTracer
from emulator import AzureEmulator, EmulatorClock
from handlers.core.guest_tags import STOP_SERVICES_TAG

# Variables that could make DefaultAzureCredential pick something other than the emulator's
# managed identity endpoint (as in tests/conftest.py).
CREDENTIAL_ENV = (
    "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_TENANT_ID", "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_CLIENT_ID",
)
SAFETY_SECONDS = 120  # the app's default MAINTENANCE_CUTOFF_SAFETY_SECONDS (real seconds: utcnow is real)


def make_emulator(fleet: list[Machine], profile: Profile, time_scale: float,
                  *, clock: EmulatorClock | None = None) -> tuple[AzureEmulator, list[str]]:
    """A throttling emulator (DEFAULT_BUCKETS) holding the fleet; returns it and the VM ids."""
    emulator = AzureEmulator(time_scale=time_scale, latency=profile.latency, throttling=True, clock=clock)
    emulator.operation_durations.update(profile.durations())
    ids = [emulator.add_vm(m.subscription, m.resource_group, m.name, location=m.location, power_state=m.power_state,
                           tags={STOP_SERVICES_TAG: m.stop_services} if m.stop_services else None)
           for m in fleet]
    emulator.script_behaviour(duration=profile.script_seconds)
    return emulator, ids


def app_bound(fleet: list[Machine], profile: Profile, *, pickup_seconds: float = 0.0) -> dict[str, Any]:
    """The throttling model's lower bound for the app's work: a start per VM that is off, an OS-disk
    snapshot per VM, a run command per tagged VM (its snapshot after it), discovery through Resource
    Graph. `pickup_seconds`: how long the guest agent takes to begin a command."""
    work: dict[str, Work] = defaultdict(Work)
    for m in fleet:
        w, off, tagged = work[m.subscription], m.power_state != "running", bool(m.stop_services)
        work[m.subscription] = Work(w.starts + off, w.snapshots + 1, commands=w.commands + tagged,
                                    chained_starts=w.chained_starts + (off and tagged))
    return lower_bound(work, machines=len(fleet), vms=len(fleet), snapshots=len(fleet),
                       start_seconds=profile.start, snapshot_seconds=profile.snapshot,
                       script_seconds=profile.script_seconds + pickup_seconds, latency=profile.latency).to_dict()


def run_app(size: int, profile: Profile, time_scale: float, connection_string: str,
            *, log_level: str = "INFO", cpu_profile: bool = False, trace_memory: bool = False,
            post: bool = True) -> dict[str, Any]:
    """The pre event for a fleet of `size` through the registered functions, then (`post`) the post
    event of the same run after the window (bench/post.py); every figure of one run.

    `cpu_profile`: profile the event and the worker with yappi (CPU clock, every thread);
    `trace_memory`: trace their allocations with tracemalloc (bench.profiling.MemoryTracer).
    """
    configure_logging(log_level)
    fleet = build_fleet(size, profile.off_fraction, profile.guest_fraction, profile.subscriptions)
    subscriptions = sorted({m.subscription for m in fleet})
    emulator, ids = make_emulator(fleet, profile, time_scale)
    bound = app_bound(fleet, profile, pickup_seconds=emulator.run_command_start_delay)

    now = datetime.now(UTC)
    correlation_id = correlation_id_for(now, size)
    emulator.add_run(correlation_id, ids)
    cutoff = run_cutoff(now, bound["total"], time_scale)
    for name in CREDENTIAL_ENV:
        os.environ.pop(name, None)
    os.environ.update(app_environment(size, connection_string, profile))
    import function_app
    from emulator.functions_host import FunctionsHost
    from handlers import runtime

    # The app's own pacing and status polls wait on a clock: give it the simulated one.
    app_runtime = runtime.configure(transport=emulator.transport(), clock=emulator.clock)
    host = FunctionsHost(function_app.app, connection_string)
    rss_before = current_rss_mb()
    if cpu_profile:
        profiling.start()

    memory = MemoryTracer() if trace_memory else None
    with ThreadWatcher(clock=emulator.clock.now) as threads, LedgerMeter(emulator.clock.now) as ledger, \
            Stopwatch(emulator) as total, \
            memory if memory is not None else contextlib.nullcontext():
        since, since_real = emulator.clock.now(), datetime.now(UTC)
        event = pre_event(correlation_id, subscriptions, now, cutoff)
        with Stopwatch(emulator) as ack:
            host.deliver_event("pre_maintenance", event)
        with Stopwatch(emulator) as worker:
            handled = host.run_queues()
    profiled = None
    if cpu_profile:
        import yappi

        yappi.stop()
        profiled = profiling.collect()
    failed = [f"{i.function}: {i.error}" for i in host.invocations if not i.succeeded]
    done = completion(emulator, ids, since)
    stats = request_stats(emulator.requests, since)
    run = app_runtime.ledger.get_run(correlation_id) or {}
    problems: Counter[str] = Counter()
    for row in [*app_runtime.ledger.list_machines(correlation_id), *app_runtime.ledger.list_snapshots(correlation_id)]:
        outcome = getattr(row, "pre_outcome", None) or getattr(row, "outcome", "")
        if outcome not in ("succeeded", "not-needed", "skipped", "reused"):
            detail = str(getattr(row, "pre_detail", None) or getattr(row, "detail", "") or "")
            problems[f"{type(row).__name__} {outcome}: {detail[:160]}"] += 1
    phase = app_runtime.ledger.get_phase(correlation_id, "pre") or {}
    ack_seconds = next((i.seconds for i in host.invocations if i.function == "pre_maintenance"), None)
    worker_done = worker.simulated + ack.simulated
    verdict_at = simulated_since(run.get("VerdictAt"), since_real, time_scale)
    stretches = phases(threads, since, time_scale, stats, done["makespan"], worker_done)
    pre_peak_mb = peak_rss_mb()
    after = None
    if post and not cpu_profile and memory is None:
        from bench.post import run_post

        after = run_post(emulator, host, app_runtime.ledger, fleet, ids, event, profile, time_scale,
                         app_runtime.settings.function_timeout_seconds)
    return {
        "mode": "app",
        "size": size,
        "subscriptions": len(subscriptions),
        "time_scale": time_scale,
        "bound": bound,
        "completion": done,
        "requests": stats,
        "actions": {"starts": done["vms_started"], "snapshots": size,
                    "run_commands": sum(1 for m in fleet if m.stop_services)},
        "guest_fraction": profile.guest_fraction,
        "worker_done": worker_done,
        # When the verdict was recorded (the ledger's VerdictAt, the app's wall clock), simulated s
        # after the event: what the operator waits for, not the worker's return.
        "verdict_at": verdict_at,
        "poll_interval": profile.poll_interval,
        "verdict_after_last_operation": None if verdict_at is None else verdict_at - done["makespan"],
        "phases": stretches,
        "real_speed_discovery": real_speed_discovery(emulator, since, stretches[0], profile, time_scale,
                                                     done["makespan"]),
        "ack_seconds": ack_seconds,
        "messages_handled": handled,
        "failed_invocations": failed,
        "verdict": run.get("Verdict"),
        "cancel": run.get("CancelOutcome"),
        "phase_summary": phase.get("Summary"),
        "failing_reasons": str(run.get("FailingReasons") or "")[:600],
        "problems": dict(problems.most_common(5)),
        "request_log_mb": request_log_mb(emulator),
        "ledger": ledger.summary(since, stats["first_write"]),
        "wall": total.wall,
        "cpu": total.cpu,
        "worker_wall": worker.wall,
        "worker_cpu": worker.cpu,
        "threads_peak": threads.peak,
        "threads_by_kind": dict(sorted(threads.peak_by_kind.items(), key=lambda kv: -kv[1])),
        "rss_before_mb": rss_before,
        "pre_peak_rss_mb": pre_peak_mb,
        "peak_rss_mb": peak_rss_mb(),
        "post": after,
        "cutoff_in_real_seconds": (cutoff - now).total_seconds(),
        "cpu_profile": profiled,
        "memory_profile": memory.summary() if memory is not None else None,
    }


def run_cutoff(now: datetime, bound: float, time_scale: float) -> datetime:
    """The event's cancellation cutoff. The deadline is real time (the app's utcnow): far enough
    that it never cuts the run short, and the window (10 minutes after it) no more than the 2 hours
    ahead a pre event may announce (the app refuses one further out)."""
    expected_real = max(4 * bound, 300.0) * time_scale
    return now + timedelta(seconds=min(SAFETY_SECONDS + 2 * expected_real + 60, 100 * 60))


def app_environment(size: int, connection_string: str, profile: Profile) -> dict[str, str]:
    """The app settings of a bench run: its own ledger table and queues in Azurite, the emulator's
    ARM and identity endpoints (in this process), snapshots of the OS disks."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "AzureWebJobsStorage": connection_string,
        "AZURE_RESOURCE_MANAGER_ENDPOINT": ARM_ENDPOINT,
        "IDENTITY_ENDPOINT": "http://127.0.0.1:41741/msi/token",
        "IDENTITY_HEADER": "bench",
        "MAINTENANCE_LEDGER_TABLE": f"Bench{size}x{suffix}",
        "MAINTENANCE_WORK_QUEUE": f"bench-work-{suffix}",
        "MAINTENANCE_EVENTS_QUEUE": f"bench-events-{suffix}",
        "MAINTENANCE_SNAPSHOT_DISKS": "os",
        # Simulated seconds: the SDK's polling sleeps go through the emulator transport, which scales them.
        "MAINTENANCE_POLL_INTERVAL_SECONDS": str(profile.poll_interval),
        "MAINTENANCE_CUTOFF_SAFETY_SECONDS": str(SAFETY_SECONDS),
        "MAINTENANCE_DRY_RUN": "false",
    }


def simulated_since(at: Any, since_real: datetime, time_scale: float) -> float | None:
    """Simulated seconds from `since_real` to `at`, a wall-clock time the app recorded (the emulator's
    clock runs time_scale real seconds per simulated second)."""
    if not isinstance(at, datetime):
        return None
    return (at - since_real).total_seconds() / time_scale


def phases(threads: ThreadWatcher, since: float, time_scale: float, stats: dict[str, Any], makespan: float,
           worker_done: float) -> list[dict[str, Any]]:
    """Simulated time, wall time and CPU (process, main thread) of each stretch of the run.

    Stretches: event to first write (acknowledge, queue, discovery, ledger rows), first to last
    accepted write (sending), last write to the last operation's end (waiting), and from there to
    the worker's return (noticing the ends, recording outcomes, checks).
    """
    first = stats["first_write"] if stats["first_write"] is not None else 0.0
    last = stats["last_write"] if stats["last_write"] is not None else first
    marks = [("discover", 0.0, first), ("send", first, last), ("wait", last, max(last, makespan)),
             ("finish", max(last, makespan), max(last, makespan, worker_done))]
    out = []
    for name, start, end in marks:
        cpu, main_cpu = threads.cpu_between(since + start, since + end)
        wall = (end - start) * time_scale
        out.append({"phase": name, "from": start, "to": end, "simulated": end - start, "wall": wall,
                    "cpu": cpu, "main_cpu": main_cpu, "cpu_per_wall": cpu / wall if wall > 0 else 0.0})
    return out


def real_speed_discovery(emulator: AzureEmulator, since: float, discover: dict[str, Any], profile: Profile,
                         time_scale: float, makespan: float) -> dict[str, float]:
    """The makespan with the discovery stretch counted at real speed: an estimate of production.

    Before its first write the worker does real work (ledger rows in Table storage, parsing,
    planning) and a few ARM calls one after another. In scaled time the real work counts
    1/time_scale times over; here it counts once and the calls' simulated latency stays:
    discovery_at_real_speed = calls * latency + (discover_sim - calls * latency) * time_scale.
    (Pacing waits inside discovery, if any, are counted as real work: an underestimate of them.)
    """
    end = since + discover["to"]
    calls = sum(1 for r in emulator.requests if since <= r.time < end)
    waits = min(calls * profile.latency, discover["simulated"])
    at_real_speed = waits + (discover["simulated"] - waits) * time_scale
    return {"calls": calls, "discover_simulated": discover["simulated"], "discover_at_real_speed": at_real_speed,
            "makespan": makespan - discover["simulated"] + at_real_speed}


def request_log_mb(emulator: AzureEmulator) -> float:
    """Rough size of the emulator's request log (harness memory inside the app's process)."""
    requests = emulator.requests
    if not requests:
        return 0.0
    sample = requests[:: max(1, len(requests) // 500)]
    each = sum(sys.getsizeof(r) + sys.getsizeof(r.url) + sys.getsizeof(r.path) for r in sample) / len(sample)
    return (each + 8) * len(requests) / 1024 / 1024


def configure_logging(level: str) -> None:
    """What the Functions worker does with records at host.json's level (Information): format and
    forward each one. Here they are formatted into /dev/null, so their cost is counted."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(sink)
    root.setLevel(getattr(logging, level.upper()))
