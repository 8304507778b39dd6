"""Benchmark a maintenance run at fleet scale: `python -m bench [--sizes 10,100,1000,5000]`.

For each fleet size, in a fresh interpreter each: the app's real pre-event pipeline (the event
delivered to `pre_maintenance`, the queued work run by `maintenance_worker`) against the emulator
in throttling mode and, after the window, its post phase (bench/post.py); then the documented
sample's strategy (the baseline) against a fresh emulator with the same fleet. Prints tables and
PASS/FAIL per target; writes bench/results/latest.json and bench/results/makespan.png. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.estate_report import print_estate
from bench.fleet import (
    Profile,
    default_baseline_time_scale,
    default_time_scale,
    estate_time_scale,
    subscription_count,
)
from bench.measure import app_version
from bench.report import plot, print_guest, print_report

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def _sizes(text: str) -> list[int]:
    sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("sizes are positive integers, e.g. 10,100")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_sizes, default=[10, 100, 1000, 5000],
                        help="fleet sizes (default 10,100,1000,5000)")
    parser.add_argument("--time-scale", type=float, help="real seconds per simulated second for every app run "
                        "(default per size: see bench/fleet.py default_time_scale)")
    parser.add_argument("--baseline-time-scale", type=float, help="the same for the baseline runs")
    parser.add_argument("--no-baseline", action="store_true", help="skip the documented-sample baseline")
    parser.add_argument("--no-post", action="store_true", help="skip the post phase after each app run (bench/post.py)")
    parser.add_argument("--no-edge", action="store_true", help="skip the edge under storage faults (bench/edge.py)")
    parser.add_argument("--baseline-in-flight", type=int, default=5, help="starts in flight in the baseline (5)")
    defaults = Profile()
    parser.add_argument("--latency", type=float, default=defaults.latency, help="per-call latency, simulated s (0.1)")
    parser.add_argument("--start-seconds", type=float, default=defaults.start, help="VM start duration (60)")
    parser.add_argument("--deallocate-seconds", type=float, default=defaults.deallocate, help="deallocate (90)")
    parser.add_argument("--power-off-seconds", type=float, default=defaults.power_off, help="power off (30)")
    parser.add_argument("--snapshot-seconds", type=float, default=defaults.snapshot, help="incremental snapshot (30)")
    parser.add_argument("--delete-snapshot-seconds", type=float, default=defaults.delete_snapshot,
                        help="snapshot delete, in the post phase (10)")
    parser.add_argument("--poll-interval", type=int, default=defaults.poll_interval,
                        help="MAINTENANCE_POLL_INTERVAL_SECONDS in simulated seconds (15, as in production)")
    parser.add_argument("--subscriptions", type=int, default=0, metavar="N",
                        help="subscriptions every fleet spans (default by size: 10 -> 1, 100 -> 2, larger -> 4)")
    parser.add_argument("--off-fraction", type=float, default=defaults.off_fraction,
                        help="share of the fleet that is off, half stopped and half deallocated (0.6)")
    parser.add_argument("--guest-size", type=int, default=1000, metavar="SIZE",
                        help="also run this size with in-guest commands (0: skip; default 1000)")
    parser.add_argument("--guest-fraction", type=float, default=0.3,
                        help="share of the in-guest run's fleet tagged maintenance-stop-services (0.3)")
    parser.add_argument("--script-seconds", type=float, default=defaults.script_seconds,
                        help="how long each stop-services script runs, simulated s (45)")
    parser.add_argument("--estate-size", type=int, default=20000, metavar="SIZE",
                        help="also run the estate: this many machines, the emulator out of process and several "
                             "host processes (0: skip; default 20000)")
    parser.add_argument("--estate-subscriptions", type=int, default=16, help="the estate's subscriptions (16)")
    parser.add_argument("--estate-regions", type=int, default=3, help="the estate's regions (3)")
    parser.add_argument("--estate-hosts", type=int, default=4, help="Functions host processes for the estate (4)")
    parser.add_argument("--estate-time-scale", type=float, help="real seconds per simulated second for the estate "
                        "(default: bench/fleet.py estate_time_scale)")
    parser.add_argument("--subscriptions-per-worker", type=int, metavar="N",
                        help="MAINTENANCE_SUBSCRIPTIONS_PER_WORKER for the app (default: the app's, 4); 1 splits "
                             "every run over more than one subscription into a queue message per subscription")
    parser.add_argument("--log-level", default="INFO", help="the app's log level (INFO, as host.json sets)")
    parser.add_argument("--profile", type=int, metavar="SIZE", help="also run this size's app under yappi and "
                        "summarise where the CPU goes (pip install yappi)")
    parser.add_argument("--memory-profile", type=int, metavar="SIZE", help="also run this size's app with "
                        "tracemalloc and summarise what is allocated near the peak")
    parser.add_argument("--cold-import-runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "makespan.png")
    parser.add_argument("--child-timeout", type=float, default=900.0, help="give up on one child after this (s)")
    args = parser.parse_args(argv)
    if not 0 < args.off_fraction <= 1:
        parser.error("--off-fraction must be in (0, 1]")
    if not 0 < args.guest_fraction <= 1:
        parser.error("--guest-fraction must be in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = Profile(latency=args.latency, start=args.start_seconds, deallocate=args.deallocate_seconds,
                      power_off=args.power_off_seconds, snapshot=args.snapshot_seconds,
                      delete_snapshot=args.delete_snapshot_seconds,
                      poll_interval=args.poll_interval, off_fraction=args.off_fraction,
                      subscriptions=args.subscriptions,
                      script_seconds=args.script_seconds)
    from emulator.azurite import AzuriteStartError, AzuriteUnavailableError, start_azurite

    started = time.perf_counter()
    try:
        azurite = start_azurite()
    except (AzuriteUnavailableError, AzuriteStartError) as exc:
        print(f"cannot run the benchmark: {exc}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "app_version": app_version(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "sizes": args.sizes,
        "profile": asdict(profile),
        "app": [],
        "baseline": [],
    }
    env = dict(os.environ, BENCH_AZURITE_CONNECTION_STRING=azurite.connection_string)
    if args.subscriptions_per_worker:
        env["MAINTENANCE_SUBSCRIPTIONS_PER_WORKER"] = str(args.subscriptions_per_worker)
        results["subscriptions_per_worker"] = args.subscriptions_per_worker
    try:
        results["cold_import"] = cold_import(args.cold_import_runs)
        for size in args.sizes:
            scale = args.time_scale or default_time_scale(size)
            subscriptions = subscription_count(size, args.subscriptions)
            _progress(f"app      {size:>5} machines, {subscriptions} subscription(s), time scale {scale}")
            results["app"].append(run_child("app", size, scale, profile, env, args))
            _progress_done(results["app"][-1])
            if not args.no_baseline:
                scale = args.baseline_time_scale or default_baseline_time_scale(size)
                _progress(f"baseline {size:>5} machines, time scale {scale}")
                results["baseline"].append(run_child("baseline", size, scale, profile, env, args))
                _progress_done(results["baseline"][-1])
        if args.guest_size:
            scale = args.time_scale or default_time_scale(args.guest_size)
            guest = replace(profile, guest_fraction=args.guest_fraction)
            _progress(f"in-guest {args.guest_size:>5} machines, {args.guest_fraction:.0%} with a "
                      f"{guest.script_seconds:.0f} s stop-services script, time scale {scale}")
            results["guest"] = run_child("app", args.guest_size, scale, guest, env, args, extra=["--no-post"])
            _progress_done(results["guest"])
        if args.estate_size:
            results["estate"] = run_estate_measured(args, profile, azurite.connection_string)
        if args.profile:
            scale = args.time_scale or default_time_scale(args.profile)
            _progress(f"profile  {args.profile:>5} machines under yappi, time scale {scale}")
            results["profile"] = run_profiled(args.profile, scale, profile, env, args)
        if args.memory_profile:
            scale = args.time_scale or default_time_scale(args.memory_profile)
            _progress(f"memory   {args.memory_profile:>5} machines under tracemalloc, time scale {scale}")
            traced = run_child("app", args.memory_profile, scale, profile, env, args, extra=["--trace-memory"])
            results["memory_profile"] = {"size": args.memory_profile, "summary": traced.get("memory_profile"),
                                         "peak_rss_mb": traced.get("peak_rss_mb"), "error": traced.get("error")}
        if not args.no_edge:
            from bench.edge import measure

            _progress("edge     acknowledgements with the queue down, 1500 malformed events in one delivery")
            results["edge"] = measure(azurite)
    finally:
        azurite.stop()
    results["total_wall_seconds"] = time.perf_counter() - started
    print_report(results)
    if "guest" in results:
        print_guest(results["guest"])
    if "estate" in results:
        print_estate(results["estate"])
    if "edge" in results:
        from bench.edge import print_edge

        print_edge(results["edge"])
    if "profile" in results:
        print_profile(results["profile"])
    if "memory_profile" in results:
        print_memory_profile(results["memory_profile"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nresults: {args.output}")
    if plot(results, args.plot):
        print(f"plot: {args.plot}")
    else:
        print("plot: skipped (matplotlib not installed: pip install -r bench/requirements.txt)")
    print(f"total wall time {results['total_wall_seconds']:.0f} s")
    failed = [r for r in [*results["app"], *results["baseline"], results.get("guest", {}), results.get("estate", {})]
              if "error" in r]
    return 1 if failed else 0


def _child_command(mode: str, size: int, scale: float, profile: Profile, args: argparse.Namespace,
                   out: str) -> list[str]:
    return [sys.executable, "-m", "bench.child", "--mode", mode, "--size", str(size), "--time-scale", str(scale),
            "--profile", json.dumps(asdict(profile)), "--in-flight", str(args.baseline_in_flight),
            "--log-level", args.log_level, "--out", out] + (["--no-post"] if args.no_post else [])


def run_child(mode: str, size: int, scale: float, profile: Profile, env: dict[str, str],
              args: argparse.Namespace, *, extra: list[str] | None = None) -> dict[str, Any]:
    """One measurement in a fresh interpreter; its JSON result (or what went wrong)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = os.path.join(tmp, "result.json")
        command = _child_command(mode, size, scale, profile, args, out) + (extra or [])
        began = time.perf_counter()
        try:
            proc = subprocess.run(command, cwd=REPO, env=env,  # noqa: S603 - our own argv (_child_command), no shell
                                  capture_output=True, text=True, timeout=args.child_timeout)
        except subprocess.TimeoutExpired:
            return {"mode": mode, "size": size, "time_scale": scale,
                    "error": f"timed out after {args.child_timeout:.0f} s"}
        try:
            with open(out) as result_file:
                result: dict[str, Any] = json.load(result_file)
        except (OSError, ValueError):
            tail = (proc.stderr or proc.stdout or "")[-1500:]
            return {"mode": mode, "size": size, "time_scale": scale,
                    "error": f"child exited {proc.returncode} without a result: {tail}"}
        result["child_seconds"] = time.perf_counter() - began
        return result


def run_estate_measured(args: argparse.Namespace, profile: Profile, connection_string: str) -> dict[str, Any]:
    """The estate run (bench/estate.py), or what went wrong."""
    from bench.estate import run_estate

    scale = args.estate_time_scale or estate_time_scale(args.estate_size)
    _progress(f"estate   {args.estate_size:>5} machines, {args.estate_subscriptions} subscriptions, "
              f"{args.estate_regions} regions, {args.estate_hosts} host processes, time scale {scale}")
    try:
        result = run_estate(args.estate_size, args.estate_subscriptions, args.estate_regions, args.estate_hosts,
                            scale, profile, connection_string, log_level=args.log_level,
                            timeout=args.child_timeout * 4)
    except Exception as exc:  # beside the other figures, as a child's failure is
        result = {"mode": "estate", "size": args.estate_size, "time_scale": scale,
                  "error": f"{type(exc).__name__}: {exc}"}
    _progress_done(result)
    return result


def run_profiled(size: int, scale: float, profile: Profile, env: dict[str, str],
                 args: argparse.Namespace) -> dict[str, Any]:
    """The app run once more under yappi (CPU clock, all threads); its summary."""
    try:
        import yappi  # noqa: F401
    except ImportError:
        return {"size": size, "error": "yappi is not installed (pip install yappi)"}
    result = run_child("app", size, scale, profile, env, args, extra=["--cpu-profile"])
    return {"size": size, "time_scale": scale, "summary": result.get("cpu_profile"), "error": result.get("error"),
            "threads_by_kind": result.get("threads_by_kind"), "cpu": result.get("cpu"), "wall": result.get("wall")}


def print_profile(profiled: dict[str, Any]) -> None:
    summary = profiled.get("summary")
    if not summary:
        print(f"\nprofile: {profiled.get('error') or 'no profile'}")
        return
    print(f"\nWhere the CPU goes, {profiled['size']} machines (yappi, CPU clock, every thread; "
          f"{summary['cpu_seconds']:.1f} s of profiled CPU; a profiled run is ~2x slower)")
    print("  self CPU by layer: " + ", ".join(f"{k} {v} %" for k, v in summary["layers_pct"].items() if v >= 0.5))
    print("  CPU by thread kind (s): " + ", ".join(f"{k} {v}" for k, v in summary["threads_cpu_seconds"].items()))
    print("  top self CPU: " + "; ".join(f"{f['function']} {f['self_s']} s" for f in summary["self_top"][:10]))
    print("  inclusive CPU (s): " + "; ".join(f"{k} {v}" for k, v in summary["inclusive_s"].items()))


def print_memory_profile(traced: dict[str, Any]) -> None:
    summary = traced.get("summary")
    if not summary:
        print(f"\nmemory profile: {traced.get('error') or 'no snapshot'}")
        return
    print(f"\nWhat the memory holds, {traced['size']} machines (tracemalloc: {summary['traced_peak_mb']} MB traced at "
          f"the peak, snapshot of {summary['snapshot_mb']} MB; RSS peak {traced.get('peak_rss_mb') or 0:.0f} MB)")
    print("  by layer (MB): " + ", ".join(f"{k} {v}" for k, v in summary["layers_mb"].items()))
    print("  top lines: " + "; ".join(f"{t['line']} {t['mb']} MB" for t in summary["top_lines"][:10]))


def cold_import(runs: int) -> dict[str, Any]:
    """`import function_app` in a fresh interpreter, best of `runs`; and the heaviest imports (-X importtime)."""
    code = "import time; t = time.perf_counter(); import function_app; print(time.perf_counter() - t)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINTENANCE_")}
    timings = []
    for _ in range(max(runs, 1)):
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,  # noqa: S603 - fixed code, no shell
                              capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            timings.append(float(proc.stdout.strip().splitlines()[-1]))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import function_app"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    return {"runs": timings, "best": min(timings) if timings else None, "top_modules": _top_imports(proc.stderr)}


def _top_imports(importtime: str, top: int = 12) -> list[dict[str, Any]]:
    """Top-level packages by cumulative import time, from `-X importtime` output."""
    totals: dict[str, float] = {}
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        try:
            _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
            micros = int(cumulative)
        except ValueError:
            continue
        depth = len(name) - len(name.lstrip())
        # Only the outermost imports (depth 1) add up to the whole without double counting.
        if depth <= 1:
            totals[name.strip()] = totals.get(name.strip(), 0.0) + micros / 1e6
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{"module": name, "seconds": seconds} for name, seconds in ranked]


def _progress(text: str) -> None:
    print(f"[bench] {text} ...", file=sys.stderr, flush=True)


def _progress_done(result: dict[str, Any]) -> None:
    if "error" in result:
        print(f"[bench]   failed: {result['error'][:300]}", file=sys.stderr, flush=True)
        return
    done = result["completion"]
    cpu = f"cpu {result['cpu']:.1f} s" if "cpu" in result else "cpu per process in the table"
    print(f"[bench]   makespan {done['makespan']:.1f} s simulated (bound {result['bound']['total']:.1f}); "
          f"wall {result['wall']:.1f} s, {cpu}; child {result.get('child_seconds', 0):.1f} s",
          file=sys.stderr, flush=True)
    post = result.get("post")
    if post:
        print(f"[bench]   post: makespan {post['makespan']:.1f} s simulated (bound {post['bound']['total']:.1f}); "
              f"wall {post['wall']:.1f} s, cpu {post['cpu']:.1f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
