"""The estate run: a fleet over many subscriptions and regions, the emulator served out of process
and several Functions host processes sharing Azurite, as a scaled-out Function App runs.

    python -m bench.estate arm --size N ... --ready FILE --out FILE      the emulator (one process)
    python -m bench.estate host --ready FILE --index I --out FILE        a host (one of several)

`run_estate` (called by `python -m bench`) starts the emulator's process, which builds the fleet,
serves ARM over HTTPS on loopback (emulator/https_server.py) and writes what the hosts need to
`--ready`; then the host processes, which run the real app (`function_app.app`, its default
requests transport and managed-identity credential) against it. Host 0 delivers the pre event;
every host runs the queues (host.json's batches) until the ledger says the pre phase is complete.
Then the emulator's process reports what happened from its own state: when each VM was running
and each snapshot done, every request it answered.

The processes share simulated time: the emulator's clock is an `EmulatorClock` built from the same
epoch and `time.monotonic()` origin in every process; the hosts' transport scales the SDK's sleeps
by it, and the app paces and polls on it (`runtime.configure(clock=...)`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from azure.core.pipeline.transport import RequestsTransport

from bench.fleet import Profile, build_fleet, correlation_id_for, pre_event
from bench.measure import completion, peak_rss_mb, request_stats
from bench.scenario import CREDENTIAL_ENV, app_bound, app_environment, configure_logging, make_emulator, run_cutoff
from emulator import EmulatorClock

REPO = Path(__file__).resolve().parent.parent
SUBSCRIPTIONS_PER_WORKER = 1  # a queue message per subscription: they spread over the hosts (bench/README.md)


class ScaledTransport(RequestsTransport):
    """azure-core's requests transport whose sleeps (retries, Retry-After) are simulated seconds."""

    def __init__(self, clock: EmulatorClock, pool: int) -> None:
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        super().__init__(session=session, session_owner=False)
        self._clock = clock

    def sleep(self, duration: float) -> None:
        self._clock.sleep(duration)


def run_estate(size: int, subscriptions: int, regions: int, hosts: int, time_scale: float, profile: Profile,
               connection_string: str, *, log_level: str = "INFO", timeout: float = 3600.0,
               log_dir: str | None = None) -> dict[str, Any]:
    """One estate run; every figure, per process."""
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-estate-") as tmp:
        ready_path, arm_out = os.path.join(tmp, "ready.json"), os.path.join(tmp, "arm.json")
        arm = subprocess.Popen(  # noqa: S603 - our own module, no shell
            [sys.executable, "-m", "bench.estate", "arm", "--size", str(size), "--subscriptions", str(subscriptions),
             "--regions", str(regions), "--time-scale", str(time_scale), "--profile", json.dumps(profile.to_dict()),
             "--ready", ready_path, "--out", arm_out], cwd=REPO, stdin=subprocess.PIPE, text=True)
        try:
            ready = _wait_for_file(ready_path, arm, 600.0)
            environment = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
            environment.update(app_environment(size, connection_string, profile))
            environment.update({
                "AZURE_RESOURCE_MANAGER_ENDPOINT": ready["arm_endpoint"],
                "IDENTITY_ENDPOINT": ready["identity_endpoint"], "REQUESTS_CA_BUNDLE": ready["ca_bundle"],
                "MAINTENANCE_SUBSCRIPTIONS_PER_WORKER": str(SUBSCRIPTIONS_PER_WORKER),
            })
            event_path = os.path.join(tmp, "event.json")
            with open(event_path, "w") as handle:
                json.dump(ready["event"], handle)
            outs = [os.path.join(tmp, f"host{i}.json") for i in range(hosts)]
            procs = [subprocess.Popen(  # noqa: S603 - our own module, no shell
                [sys.executable, "-m", "bench.estate", "host", "--ready", ready_path, "--index", str(i),
                 "--out", outs[i], "--log-level", log_level, "--timeout", str(timeout)]
                + (["--event", event_path] if i == 0 else []) + (["--log-dir", log_dir] if log_dir else []),
                cwd=REPO, env=environment) for i in range(hosts)]
            try:
                for proc in procs:
                    proc.wait(timeout=timeout + 120)
            finally:
                for proc in procs:  # none outlives the run (a timeout, an interrupt)
                    if proc.poll() is None:
                        proc.kill()
            results = [_read(out, f"host {i}") for i, out in enumerate(outs)]
            since = results[0].get("since")
            if arm.stdin is not None:
                arm.stdin.write(f"report {since if since is not None else 0.0}\n")
                arm.stdin.flush()
            arm.wait(timeout=600)
            served = _read(arm_out, "the emulator")
        finally:
            if arm.poll() is None:
                arm.kill()
    return summarize(size, subscriptions, regions, time_scale, ready, results, served, time.perf_counter() - began)


def summarize(size: int, subscriptions: int, regions: int, time_scale: float, ready: dict[str, Any],
              hosts: list[dict[str, Any]], served: dict[str, Any], wall: float) -> dict[str, Any]:
    errors = [f"host {h.get('index')}: {h['error']}" for h in hosts if h.get("error")]
    errors += [f"the emulator: {served['error']}"] if served.get("error") else []
    first = hosts[0]
    verdict_at = first.get("verdict_at")
    done = served.get("completion") or {}
    bound = ready["bound"]
    result: dict[str, Any] = {
        "mode": "estate", "size": size, "subscriptions": subscriptions, "regions": regions, "hosts": len(hosts),
        "subscriptions_per_worker": SUBSCRIPTIONS_PER_WORKER, "time_scale": time_scale, "bound": bound,
        "completion": done, "requests": served.get("requests"), "verdict_at": verdict_at,
        "verdict": first.get("verdict"), "ratio": None if verdict_at is None else verdict_at / bound["total"],
        "makespan_ratio": done["makespan"] / bound["total"] if done.get("makespan") else None,
        "ack_seconds": first.get("ack_seconds"),
        "processes": [{k: h.get(k) for k in ("index", "messages_handled", "invocations", "peak_rss_mb", "cpu", "wall",
                                              "longest_invocation")} for h in hosts],
        "emulator_process": {k: served.get(k) for k in ("peak_rss_mb", "cpu", "wall", "requests_served")},
        "wall": wall,
    }
    if errors:
        result["error"] = "; ".join(errors)[:1500]
    return result


def _wait_for_file(path: str, proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    give_up = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"the emulator's process exited {proc.returncode} before it was ready")
        if time.monotonic() > give_up:
            raise RuntimeError(f"the emulator's process was not ready after {timeout:.0f} s")
        time.sleep(0.2)
    with open(path) as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


def _read(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path) as handle:
            loaded: dict[str, Any] = json.load(handle)
    except (OSError, ValueError) as exc:
        return {"error": f"{what} wrote no result ({type(exc).__name__})"}
    return loaded


def _write(path: str, value: dict[str, Any]) -> None:
    """Whole or not at all: the reader polls for the file."""
    with open(path + ".tmp", "w") as handle:
        json.dump(value, handle, default=str)
    os.replace(path + ".tmp", path)


def arm_main(args: argparse.Namespace) -> int:
    """The emulator's process: build the fleet, serve it, report when told (a line on stdin)."""
    from emulator.https_server import serve_on_loopback

    started, cpu = time.perf_counter(), time.process_time()
    profile = Profile(**json.loads(args.profile))
    fleet = build_fleet(args.size, profile.off_fraction, profile.guest_fraction, args.subscriptions, args.regions)
    emulator, ids = make_emulator(fleet, profile, args.time_scale)
    bound = app_bound(fleet, profile, pickup_seconds=emulator.run_command_start_delay)
    now = datetime.now(UTC)
    correlation_id = correlation_id_for(now, args.size)
    emulator.add_run(correlation_id, ids)
    subscriptions = sorted({m.subscription for m in fleet})
    event = pre_event(correlation_id, subscriptions, now, run_cutoff(now, bound["total"], args.time_scale))
    endpoints = serve_on_loopback(emulator)
    _write(args.ready, {
        "arm_endpoint": endpoints.arm_endpoint, "identity_endpoint": endpoints.identity_endpoint,
        "ca_bundle": endpoints.ca_bundle, "origin": emulator.clock.origin, "epoch": emulator.clock.epoch.isoformat(),
        "time_scale": args.time_scale, "correlation_id": correlation_id, "event": event, "bound": bound})
    try:
        for line in sys.stdin:
            command, _, value = line.strip().partition(" ")
            if command == "report":
                since = float(value)
                _write(args.out, {
                    "completion": completion(emulator, ids, since), "requests": request_stats(emulator.requests, since),
                    "requests_served": len(emulator.requests), "peak_rss_mb": peak_rss_mb(),
                    "cpu": time.process_time() - cpu, "wall": time.perf_counter() - started})
                break
    finally:
        endpoints.close()
    return 0


def host_main(args: argparse.Namespace) -> int:
    """One Functions host process: the app against the emulator's endpoints, until the pre phase ends."""
    with open(args.ready) as handle:
        ready = json.load(handle)
    out: dict[str, Any] = {"index": args.index}
    started, cpu = time.perf_counter(), time.process_time()
    try:
        out.update(_host(args, ready))
    except Exception as exc:  # reported to the parent beside the other processes' figures
        out["error"] = f"{type(exc).__name__}: {exc}"
    out.update({"peak_rss_mb": peak_rss_mb(), "cpu": time.process_time() - cpu, "wall": time.perf_counter() - started})
    _write(args.out, out)
    return 0 if "error" not in out else 1


def _host(args: argparse.Namespace, ready: dict[str, Any]) -> dict[str, Any]:
    configure_logging(args.log_level)
    if args.log_dir:  # each host's log lines to a file of its own, to read after the run
        sink = logging.FileHandler(os.path.join(args.log_dir, f"host{args.index}.log"))
        sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s %(message)s"))
        logging.getLogger().addHandler(sink)
    clock = EmulatorClock(ready["time_scale"], epoch=datetime.fromisoformat(ready["epoch"]), origin=ready["origin"])
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import function_app
    from emulator.functions_host import FunctionsHost
    from handlers import runtime

    host = FunctionsHost(function_app.app, os.environ["AzureWebJobsStorage"])
    # A connection for every request a host can have in flight: each message it runs sends and
    # polls `parallelism` at once (a connection the pool cannot keep is a new TLS handshake).
    pool = (host.batch_size + host.new_batch_threshold) * 2 * runtime.get_runtime().settings.parallelism + 8
    app_runtime = runtime.configure(transport=ScaledTransport(clock, pool), clock=clock)
    correlation_id = ready["correlation_id"]
    out: dict[str, Any] = {}
    if args.event:
        with open(args.event) as handle:
            event = json.load(handle)
        out["since"], since_real = clock.now(), datetime.now(UTC)
        host.deliver_event("pre_maintenance", event)
    give_up = time.monotonic() + args.timeout
    handled = 0
    while True:
        handled += host.run_queues()
        if (app_runtime.ledger.get_phase(correlation_id, "pre") or {}).get("Status") == "completed":
            break
        if time.monotonic() > give_up:
            raise RuntimeError(f"the pre phase had not completed after {args.timeout:.0f} s")
        time.sleep(0.5)
    run = app_runtime.ledger.get_run(correlation_id) or {}
    failed = [f"{i.function}: {i.error}" for i in host.invocations if not i.succeeded]
    if failed:
        out["error"] = "; ".join(failed)[:600]
    verdict_at = run.get("VerdictAt")
    if args.event and isinstance(verdict_at, datetime):
        out["verdict_at"] = (verdict_at - since_real).total_seconds() / ready["time_scale"]
    longest = max(host.invocations, key=lambda i: i.seconds, default=None)
    out.update({
        "verdict": run.get("Verdict"), "messages_handled": handled,
        "invocations": [i.function for i in host.invocations],
        "ack_seconds": next((i.seconds for i in host.invocations if i.function == "pre_maintenance"), None),
        "longest_invocation": None if longest is None else {"function": longest.function, "seconds": longest.seconds},
    })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.estate")
    sub = parser.add_subparsers(dest="role", required=True)
    arm = sub.add_parser("arm", help="the emulator's process")
    arm.add_argument("--size", type=int, required=True)
    arm.add_argument("--subscriptions", type=int, required=True)
    arm.add_argument("--regions", type=int, required=True)
    arm.add_argument("--time-scale", type=float, required=True)
    arm.add_argument("--profile", required=True, help="the timing profile as JSON (bench.fleet.Profile)")
    arm.add_argument("--ready", required=True)
    arm.add_argument("--out", required=True)
    host = sub.add_parser("host", help="one Functions host process")
    host.add_argument("--ready", required=True)
    host.add_argument("--index", type=int, required=True)
    host.add_argument("--out", required=True)
    host.add_argument("--event", help="deliver this pre event first (one host does)")
    host.add_argument("--log-level", default="INFO")
    host.add_argument("--timeout", type=float, default=3600.0)
    host.add_argument("--log-dir", help="write each host's log lines to DIR/host<index>.log")
    args = parser.parse_args(argv)
    code = arm_main(args) if args.role == "arm" else host_main(args)
    sys.stdout.flush()
    os._exit(code)  # daemon threads (servers, pools) may still be alive; nothing left to wait for


if __name__ == "__main__":
    sys.exit(main())
