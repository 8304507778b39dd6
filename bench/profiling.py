"""Where the CPU goes: a yappi CPU-clock profile of one child run, over every thread.

`python -m bench --profile 1000` runs that size's app once more with yappi (clock type "cpu",
all threads; `pip install yappi`) and reports: CPU by thread kind, self CPU by layer (which
package's code was running: the emulator, the app, azure-core, the Table SDK, logging, the
stdlib email package that azure-core uses for Table batches...), the functions with the most
self CPU, and the inclusive CPU of the app's main entry points. A profiled run is slower (about
2x) than a plain one, so its own makespan is not a result. `--memory-profile SIZE` likewise
traces allocations (tracemalloc) and reports what was allocated, by layer and line, near the peak.
"""

from __future__ import annotations

import re
import threading
import tracemalloc
from collections import Counter
from typing import Any, Self

from bench.measure import Sampler

# First match wins, so more specific paths come first.
LAYERS: tuple[tuple[str, str], ...] = (
    ("bench (measuring)", "/bench/"),
    ("emulator (harness)", "/emulator/"),
    ("app: handlers", "/handlers/"),
    ("azure tables/queue SDK", "/azure/data/tables/"),
    ("azure tables/queue SDK", "/azure/storage/"),
    ("SDK models, (de)serialisation", "_serialization"),
    ("SDK models, (de)serialisation", "model_base"),
    ("SDK models, (de)serialisation", "/models/"),
    ("azure-core LRO polling", "/azure/core/polling/"),
    ("azure-mgmt-core", "/azure/mgmt/core/"),
    ("azure-core logging policies", "/azure/core/pipeline/policies/_universal.py"),
    ("azure-core logging policies", "/azure/core/pipeline/policies/_http_logging"),
    ("azure-core pipeline", "/azure/core/"),
    ("azure mgmt SDK operations", "/azure/mgmt/"),
    ("azure identity / msal", "/azure/identity/"),
    ("azure identity / msal", "/msal/"),
    ("azure functions library", "/azure/functions/"),
    ("stdlib logging", "/logging/"),
    ("stdlib email (multipart batches)", "/email/"),
    ("stdlib http.client / urllib3 (Azurite)", "/http/"),
    ("stdlib http.client / urllib3 (Azurite)", "/urllib3/"),
    ("stdlib http.client / urllib3 (Azurite)", "/requests/"),
    ("stdlib json", "/json/"),
    ("stdlib threading, queues, futures", "threading.py"),
    ("stdlib threading, queues, futures", "/concurrent/"),
    ("stdlib threading, queues, futures", "/queue.py"),
)
# Inclusive CPU of these (module path fragment, function name) is reported as is.
ENTRY_POINTS: tuple[tuple[str, str], ...] = (
    ("handlers/edge/worker.py", "run_work_message"),
    ("handlers/adapters/inventory.py", "find_run_machines"),
    ("handlers/adapters/inventory.py", "get_vm_views"),
    ("handlers/adapters/snapshots.py", "find_existing"),
    ("handlers/ledger/store.py", "add_rows"),
    ("handlers/ledger/store.py", "save_rows"),
    ("handlers/ledger/store.py", "list_machines"),
    ("handlers/ledger/store.py", "list_snapshots"),
    ("azure/data/tables/_table_client.py", "submit_transaction"),
    ("azure/core/pipeline/_base.py", "_prepare_multipart"),
    ("handlers/adapters/operations.py", "run_operations"),
    ("handlers/adapters/operations.py", "send"),
    ("handlers/phases/pre/verdict.py", "decide"),
    ("azure/core/polling/_poller.py", "_start"),
    ("azure/core/pipeline/policies/_universal.py", "on_request"),
    ("azure/core/pipeline/policies/_universal.py", "on_response"),
    ("azure/core/pipeline/_base.py", "run"),
    ("logging/__init__.py", "handle"),
    ("emulator/serving.py", "serve"),
    ("emulator/graph.py", "query"),
    ("emulator/transport.py", "send"),
)


def layer_of(module: str) -> str:
    for name, needle in LAYERS:
        if needle in module:
            return name
    return "other (stdlib, interpreter)"


def thread_kind(name: str) -> str:
    """'LROPoller(…)' -> 'LROPoller', 'ops_3' -> 'ops', 'ThreadPoolExecutor-0_1' -> 'ThreadPoolExecutor'."""
    return re.split(r"[(_\-]", name, maxsplit=1)[0] or name


def start() -> None:
    """Start yappi on the CPU clock over every thread, naming threads as threading does."""
    import yappi

    yappi.set_clock_type("cpu")
    yappi.set_context_name_callback(lambda: threading.current_thread().name)
    yappi.start(profile_threads=True)


def collect(top: int = 20) -> dict[str, Any]:
    """Summarise the running yappi session (call after yappi.stop())."""
    import yappi

    stats = list(yappi.get_func_stats())
    total = sum(s.tsub for s in stats) or 1.0
    layers: Counter[str] = Counter()
    for s in stats:
        layers[layer_of(s.module)] += s.tsub
    threads: Counter[str] = Counter()
    for t in yappi.get_thread_stats():
        threads[thread_kind(t.name)] += t.ttot
    by_self = sorted(stats, key=lambda s: -s.tsub)[:top]
    entries: dict[str, float] = {}
    for fragment, function in ENTRY_POINTS:
        found = [s for s in stats if fragment in s.module and s.name.split(".")[-1] == function]
        if found:
            entries[f"{fragment}:{function}"] = round(max(s.ttot for s in found), 2)
    return {
        "cpu_seconds": round(total, 2),
        "layers_pct": {k: round(100 * v / total, 1) for k, v in layers.most_common()},
        "threads_cpu_seconds": {k: round(v, 2) for k, v in threads.most_common(10)},
        "self_top": [{"function": f"{s.name} ({_short(s.module)}:{s.lineno})", "self_s": round(s.tsub, 2),
                      "calls": s.ncall} for s in by_self],
        "inclusive_s": entries,
    }


def _short(module: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.12/", "/work/main/"):
        if marker in module:
            return module.split(marker, 1)[1]
    return module


class MemoryTracer(Sampler):
    """tracemalloc over a run: keeps the snapshot taken nearest the peak of traced memory.

    A sampler thread looks at the traced size every `interval` real seconds and takes a snapshot
    whenever it has grown by 5 % over the last one; the summary groups that snapshot by layer
    and by allocating line. Tracing slows the run (about 2x), so its timings are not results.
    """

    thread_name = "bench-memory"

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._best: Any = None
        self._best_size = 0

    def __enter__(self) -> Self:
        tracemalloc.start(1)
        return super().__enter__()

    def sample(self) -> None:
        size = tracemalloc.get_traced_memory()[0]
        if size > self._best_size * 1.05:
            self._best = tracemalloc.take_snapshot()
            self._best_size = size

    def summary(self, top: int = 15) -> dict[str, Any]:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if self._best is None:
            return {}
        stats = self._best.statistics("lineno")
        layers: Counter[str] = Counter()
        for stat in stats:
            layers[layer_of(stat.traceback[0].filename)] += stat.size
        mb = 1024 * 1024
        return {
            "traced_peak_mb": round(peak / mb, 1),
            "snapshot_mb": round(self._best_size / mb, 1),
            "layers_mb": {k: round(v / mb, 1) for k, v in layers.most_common() if v >= mb / 10},
            "top_lines": [{"line": f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
                           "mb": round(s.size / mb, 2), "blocks": s.count} for s in stats[:top]],
        }
