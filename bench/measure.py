"""What a run is measured by: the emulator's history (simulated time), its request log, threads, CPU."""

from __future__ import annotations

import bisect
import re
import resource
import subprocess
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from emulator import AzureEmulator, RecordedRequest

_VM_READ = re.compile(r"/providers/microsoft\.compute/virtualmachines/[^/]+(?:/instanceview)?/?$", re.IGNORECASE)
_VM_ACTION = re.compile(r"/virtualmachines/[^/]+/(?:start|deallocate|poweroff)/?$", re.IGNORECASE)
_SNAPSHOT = re.compile(r"/providers/microsoft\.compute/snapshots/[^/]+/?$", re.IGNORECASE)
KINDS = ("reads", "writes", "polls", "graph")


def classify(request: RecordedRequest) -> str:
    """reads | writes | polls | graph (what a request costs against the buckets)."""
    path = request.path.lower()
    if "/providers/microsoft.resourcegraph/" in path:
        return "graph"
    if "/operations/" in path or "/diskoperations/" in path:
        return "polls"
    if request.method in ("PUT", "POST", "DELETE", "PATCH"):
        return "writes"
    return "reads"


def request_stats(requests: Iterable[RecordedRequest], since: float, bin_seconds: float = 10.0) -> dict[str, Any]:
    """Counts by kind, 429s by kind, per-VM reads and accepted writes, for requests at or after `since`;
    `timeline`: per kind (and kind + " 429"), requests per `bin_seconds` of simulated time."""
    timeline: dict[str, Counter[int]] = {}
    total: Counter[str] = Counter()
    throttled: Counter[str] = Counter()
    vm_reads = 0
    accepted_starts = 0
    accepted_snapshot_puts = 0
    first_write: float | None = None
    last_write: float | None = None
    last_action: float | None = None
    count = 0
    for request in requests:
        if request.time < since:
            continue
        count += 1
        kind = classify(request)
        total[kind] += 1
        label = f"{kind} 429" if request.status == 429 else kind
        timeline.setdefault(label, Counter())[int((request.time - since) // bin_seconds)] += 1
        if request.status == 429:
            throttled[kind] += 1
            continue
        if kind == "reads" and _VM_READ.search(request.path):
            vm_reads += 1
        if kind == "writes" and request.status < 400:
            if _VM_ACTION.search(request.path):
                accepted_starts += 1
                last_action = request.time
            elif request.method == "PUT" and _SNAPSHOT.search(request.path):
                accepted_snapshot_puts += 1
            first_write = request.time if first_write is None else first_write
            last_write = request.time
    return {
        "requests": count,
        "by_kind": {k: total[k] for k in KINDS},
        "throttled": sum(throttled.values()),
        "throttled_by_kind": {k: throttled[k] for k in KINDS},
        "vm_reads": vm_reads,
        "accepted_vm_actions": accepted_starts,
        "accepted_snapshot_puts": accepted_snapshot_puts,
        "first_write": None if first_write is None else first_write - since,
        "last_write": None if last_write is None else last_write - since,
        "last_vm_action": None if last_action is None else last_action - since,
        "timeline_bin_seconds": bin_seconds,
        "timeline": {label: [bins.get(i, 0) for i in range(max(bins) + 1)] for label, bins in sorted(timeline.items())},
    }


def completion(emulator: AzureEmulator, vm_ids: Iterable[str], since: float) -> dict[str, Any]:
    """When the last VM that was off reached running, and the last snapshot made since `since` succeeded.

    Read from the emulator's own history (VirtualMachine.history: (t, state); Snapshot.ready_at),
    in simulated seconds after `since`.
    """
    last_running = None
    not_running = 0
    started = 0
    with emulator.lock:
        now = emulator.clock.now()
        for rid in vm_ids:
            vm = emulator.find_vm(rid)
            vm.settle(now)
            if vm.history[0][1] == "running":
                continue
            started += 1
            reached = [t for t, state in vm.history if state == "running" and t >= since]
            if not reached or vm.power_state != "running":
                not_running += 1
                continue
            last_running = max(last_running or 0.0, reached[0] - since)
        last_snapshot = None
        snapshots = 0
        failed = 0
        for snapshot in emulator.snapshot_records.values():
            if snapshot.created < since:
                continue
            snapshots += 1
            if snapshot.error is not None or snapshot.ready_at > now:
                failed += 1
                continue
            last_snapshot = max(last_snapshot or 0.0, snapshot.ready_at - since)
    commands = [e for e in emulator.run_command_executions() if e.put_at >= since]
    unfinished = sum(1 for e in commands if e.ended_at is None or e.state != "Succeeded")
    last_command = max((e.ended_at - since for e in commands if e.ended_at is not None), default=None)
    ends = [t for t in (last_running, last_snapshot, last_command) if t is not None]
    return {
        "makespan": max(ends) if ends else 0.0,
        "last_vm_running": last_running,
        "last_snapshot_done": last_snapshot,
        "last_command_done": last_command,
        "run_commands": len(commands),
        "run_commands_not_done": unfinished,
        "vms_started": started,
        "vms_not_running": not_running,
        "snapshots": snapshots,
        "snapshots_not_done": failed,
        "complete": not_running == 0 and failed == 0 and unfinished == 0,
    }


class Sampler:
    """Calls `sample()` on a daemon thread every `interval` real seconds inside a `with` block,
    and once more on the way in and on the way out."""

    interval: float = 1.0
    thread_name = "bench-sampler"

    def sample(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._stop = threading.Event()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


@dataclass
class ThreadWatcher(Sampler):
    """Samples every `interval` real seconds: live threads (peak, overall and by name prefix) and,
    with `clock`, the simulated time beside the process's and the main thread's CPU time, so CPU
    can be split by phase of the run afterwards (`cpu_between`)."""

    clock: Callable[[], float] | None = None
    interval: float = 0.02
    peak: int = 0
    peak_by_kind: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (simulated, process cpu, main cpu)
    thread_name = "bench-watcher"

    def __enter__(self) -> Self:
        self._main_clock = time.pthread_getcpuclockid(threading.main_thread().ident or 0)
        # thread -> kind, so a sample costs a lookup per thread (idents are reused, thread objects are not)
        self._kinds_of: weakref.WeakKeyDictionary[threading.Thread, str] = weakref.WeakKeyDictionary()
        self._tick = 0
        return super().__enter__()

    def sample(self) -> None:
        self.peak = max(self.peak, threading.active_count() - 1)  # not counting the watcher itself
        if self._tick % 5 == 0:  # the breakdown by kind walks every thread: less often
            kinds: Counter[str] = Counter()
            for thread in threading.enumerate():
                kind = self._kinds_of.get(thread)
                if kind is None:
                    kind = self._kinds_of[thread] = _kind(thread.name)
                kinds[kind] += 1
            kinds.pop("bench", None)
            for kind, number in kinds.items():
                self.peak_by_kind[kind] = max(self.peak_by_kind.get(kind, 0), number)
        self._tick += 1
        if self.clock is not None:
            self.samples.append((self.clock(), time.process_time(), time.clock_gettime(self._main_clock)))

    def cpu_between(self, start: float, end: float) -> tuple[float, float]:
        """(process CPU, main-thread CPU) in real seconds between simulated instants `start` and `end`."""
        return _at(self.samples, end, 1) - _at(self.samples, start, 1), _at(self.samples, end, 2) - _at(
            self.samples, start, 2)


def _at(samples: list[tuple[float, float, float]], t: float, column: int) -> float:
    """Linear interpolation of a sampled column at simulated time `t`."""
    if not samples:
        return 0.0
    times = [s[0] for s in samples]
    index = bisect.bisect_left(times, t)
    if index <= 0:
        return samples[0][column]
    if index >= len(samples):
        return samples[-1][column]
    (t0, *a), (t1, *b) = samples[index - 1], samples[index]
    share = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
    return a[column - 1] + share * (b[column - 1] - a[column - 1])


def _kind(name: str) -> str:
    """'LROPoller(…)' -> 'LROPoller', 'ops_3' -> 'ops', 'ThreadPoolExecutor-0_1' -> 'ThreadPoolExecutor'."""
    return re.split(r"[(_\-]", name, maxsplit=1)[0] or name


@dataclass
class Stopwatch:
    """Wall time, CPU time of this process (all threads) and simulated time, between start and stop."""

    emulator: AzureEmulator
    wall: float = 0.0
    cpu: float = 0.0
    simulated: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self._sim = self.emulator.clock.now()
        return self

    def __exit__(self, *args: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        self.simulated = self.emulator.clock.now() - self._sim


def peak_rss_mb() -> float:
    """ru_maxrss of this process (kilobytes on Linux) in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * resource.getpagesize() / 1024 / 1024


def app_version() -> dict[str, Any]:
    """The commit measured, and the app's files that differed from it (others edit them meanwhile)."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=repo,  # noqa: S603, S607 - the developer's git, fixed subcommands
                                  capture_output=True, text=True, timeout=10)
            return done.stdout.rstrip()  # not lstrip: porcelain lines begin with a status column
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "handlers", "function_app.py", "emulator")
    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "uncommitted_app_files": [line[3:] for line in dirty.splitlines()]}


@dataclass
class LedgerMeter:
    """Counts the ledger's Table storage calls (calls, rows, seconds inside) by wrapping TableClient's
    methods for the length of a run; `before(t)` splits them at a simulated instant (the first write)."""

    clock: Callable[[], float]
    calls: list[tuple[float, str, int, float]] = field(default_factory=list)  # (sim start, method, rows, s)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _saved: dict[str, Any] = field(default_factory=dict)

    METHODS = ("submit_transaction", "upsert_entity", "create_entity", "update_entity", "get_entity",
               "query_entities", "list_entities")

    def __enter__(self) -> LedgerMeter:
        from azure.data.tables import TableClient

        for name in self.METHODS:
            original = getattr(TableClient, name)
            self._saved[name] = original
            setattr(TableClient, name, self._wrap(name, original))
        return self

    def __exit__(self, *args: object) -> None:
        from azure.data.tables import TableClient

        for name, original in self._saved.items():
            setattr(TableClient, name, original)

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        meter = self

        def wrapper(client: Any, *args: Any, **kwargs: Any) -> Any:
            started, began = meter.clock(), time.perf_counter()
            try:
                result = original(client, *args, **kwargs)
                if name in ("query_entities", "list_entities"):
                    result = list(result)  # the paging happens here, inside the measurement
                return result
            finally:
                rows = len(args[0]) if name == "submit_transaction" and args else 1
                with meter._lock:
                    meter.calls.append((started, name, rows, time.perf_counter() - began))

        return wrapper

    def summary(self, since: float, split: float | None) -> dict[str, Any]:
        """Per method: calls, rows, real seconds inside (summed over threads); and the same for all
        calls made before `split` (simulated seconds after `since`)."""
        def tally(calls: list[tuple[float, str, int, float]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for _, name, rows, seconds in calls:
                entry = out.setdefault(name, {"calls": 0, "rows": 0, "seconds": 0.0})
                entry["calls"] += 1
                entry["rows"] += rows
                entry["seconds"] += seconds
            return out

        mine = [c for c in self.calls if c[0] >= since]
        early = [c for c in mine if split is not None and c[0] - since < split]
        return {"all": tally(mine), "before_first_write": tally(early)}
