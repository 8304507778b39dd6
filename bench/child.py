"""One measurement in a fresh interpreter: `python -m bench.child --mode app|baseline --size N --out FILE`.

The parent (python -m bench) starts one of these per fleet size and mode, so each one's peak
memory (ru_maxrss) and CPU time are its own, and reads the JSON it writes to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

from bench.fleet import Profile
from bench.measure import app_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("--mode", choices=("app", "baseline"), required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--time-scale", type=float, required=True)
    parser.add_argument("--profile", required=True, help="the timing profile as JSON (bench.fleet.Profile)")
    parser.add_argument("--in-flight", type=int, default=5)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--cpu-profile", action="store_true", help="profile the app run with yappi")
    parser.add_argument("--trace-memory", action="store_true", help="trace the app run's allocations")
    parser.add_argument("--no-post", action="store_true", help="the pre phase only")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    profile = Profile(**json.loads(args.profile))
    version = app_version()  # before the run: the code this interpreter is about to import
    try:
        result: dict[str, Any]
        if args.mode == "app":
            from bench.scenario import run_app

            connection_string = os.environ.get("BENCH_AZURITE_CONNECTION_STRING", "")
            if not connection_string:
                raise RuntimeError("BENCH_AZURITE_CONNECTION_STRING is not set (the parent starts Azurite)")
            result = run_app(args.size, profile, args.time_scale, connection_string, log_level=args.log_level,
                             cpu_profile=args.cpu_profile, trace_memory=args.trace_memory,
                             post=not args.no_post)
        else:
            from bench.baseline import run_baseline

            result = run_baseline(args.size, profile, args.time_scale, in_flight=args.in_flight)
    except Exception as exc:  # reported to the parent, which prints it beside the other sizes
        result = {"mode": args.mode, "size": args.size, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
    result["app_version"] = version
    with open(args.out, "w") as out:
        json.dump(result, out, indent=1, default=str)
    # Daemon threads (LRO pollers) may still be alive; nothing left to wait for.
    sys.stdout.flush()
    os._exit(0 if "error" not in result else 1)


if __name__ == "__main__":
    sys.exit(main())
