"""Tables, the targets' PASS/FAIL lines and the plot, from the children's results."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HARNESS_BOUND = 0.7  # CPU / wall above this: the process was busy, simulated time is stretched by CPU

Out = Callable[[str], None]


def table(rows: Sequence[Sequence[str]], out: Out = print) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        out("  ".join(cell.rjust(width) if index and _numeric(cell) else cell.ljust(width)
                      for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            out("  ".join("-" * width for width in widths))


def _numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[0] in "-.") and cell not in ("-",)


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def print_report(results: dict[str, Any], out: Out = print) -> None:
    sizes = results["sizes"]
    app = {r["size"]: r for r in results["app"]}
    base = {r["size"]: r for r in results["baseline"]}
    versions = {json.dumps(r.get("app_version"), sort_keys=True) for r in results["app"] if r.get("app_version")}
    for text in sorted(versions):
        version = json.loads(text)
        dirty = version.get("uncommitted_app_files") or []
        out(f"app measured: {version.get('commit')} {version.get('subject')}"
            + (f" (+ uncommitted: {', '.join(dirty)})" if dirty else ""))
    errors = [r for r in list(app.values()) + list(base.values()) if "error" in r]
    for r in errors:
        out(f"!! {r['mode']} {r['size']}: {r['error']}")

    out("\nMakespan, simulated seconds (event -> every VM running and every snapshot done; the baseline: "
        "starts only, no snapshots)")
    rows: list[tuple[str, ...]] = [("machines", "subs", "scale", "app", "bound", "ratio", "ratio*", "verdict",
                                    "v. ratio", "v. after", "worker done", "baseline", "base bound", "base ratio",
                                    "base floor", "base scale")]
    for size in sizes:
        a, b = app.get(size, {}), base.get(size, {})
        makespan = a.get("completion", {}).get("makespan") if "error" not in a else None
        bound = a.get("bound", {}).get("total")
        bmake = b.get("completion", {}).get("makespan") if "error" not in b else None
        bbound = b.get("bound", {}).get("total")
        adjusted = a.get("real_speed_discovery", {}).get("makespan") if makespan is not None else None
        rows.append((str(size), _f(a.get("subscriptions"), 0), _f(a.get("time_scale"), 3), _f(makespan),
                     _f(bound), _f(_ratio(makespan, bound), 2), _f(_ratio(adjusted, bound), 2),
                     _f(a.get("verdict_at")), _f(_ratio(a.get("verdict_at"), bound), 2),
                     _f(a.get("verdict_after_last_operation")),
                     _f(a.get("worker_done")), _f(bmake), _f(bbound),
                     _f(_ratio(bmake, bbound), 1), _f(b.get("strategy_floor")), _f(b.get("time_scale"), 3)))
    table(rows, out)
    out("bound limited by: " + ", ".join(f"{s}: {app[s]['bound']['limiting']}" for s in sizes
                                         if "bound" in app.get(s, {})))
    out("ratio* = the same with the stretch before the first write (real work: ledger, planning) counted at real "
        "speed\n         instead of 1/scale times over: an estimate of production (bench/README.md)")
    out("verdict = when the verdict was recorded (simulated s after the event); v. after = that less the makespan "
        "(the last operation's end)")

    out("\nWhere the app's time goes (simulated s; CPU is real s of this process, main = the worker's thread)")
    rows = [("machines", "discover", "send", "wait", "finish", "cpu/wall by phase", "main cpu before 1st write",
             "= sim s")]
    for size in sizes:
        a = app.get(size, {})
        phases = {p["phase"]: p for p in a.get("phases", [])}
        if not phases:
            continue
        ts = a["time_scale"]
        main = phases["discover"]["main_cpu"]
        rows.append((str(size), *(_f(phases[n]["simulated"]) for n in ("discover", "send", "wait", "finish")),
                     " ".join(_f(phases[n]["cpu_per_wall"], 2) for n in ("discover", "send", "wait", "finish")),
                     _f(main, 2), _f(main / ts)))
    table(rows, out)

    out("\nRequests per machine by kind, 429s, writes per needed action, per-VM GETs")
    rows = [("machines", "run", "reads", "writes", "polls", "graph (all)", "total", "429s", "429 %",
             "writes/action", "VM GETs")]
    for size in sizes:
        for label, r in (("app", app.get(size, {})), ("baseline", base.get(size, {}))):
            req = r.get("requests")
            if not req:
                continue
            kinds = req["by_kind"]
            actions = _actions(r)
            accepted = req["accepted_vm_actions"] + req["accepted_snapshot_puts"]
            rows.append((str(size), label, *(_f(kinds[k] / size, 2) for k in ("reads", "writes", "polls")),
                         _f(kinds["graph"], 0),
                         _f(req["requests"], 0), _f(req["throttled"], 0),
                         _f(100.0 * req["throttled"] / max(req["requests"], 1), 2),
                         _f(_ratio(accepted, actions), 3), _f(req["vm_reads"], 0)))
    table(rows, out)

    out("\nThe process (app runs; each size in its own interpreter)")
    rows = [("machines", "ack s", "peak MB", "with post MB", "MB before event", "threads peak", "LRO pollers",
             "cpu s", "wall s", "cpu/wall", "baseline cpu/wall")]
    for size in sizes:
        a, b = app.get(size, {}), base.get(size, {})
        if "cpu" not in a:
            continue
        rows.append((str(size), _f(a.get("ack_seconds"), 3), _f(a.get("pre_peak_rss_mb") or a.get("peak_rss_mb")),
                     _f(a.get("peak_rss_mb") if a.get("post") else None), _f(a.get("rss_before_mb")),
                     _f(a.get("threads_peak"), 0), _f(a.get("threads_by_kind", {}).get("LROPoller"), 0),
                     _f(a["cpu"]), _f(a["wall"]), _f(a["cpu"] / a["wall"], 2),
                     _f(b["cpu"] / b["wall"], 2) if b.get("wall") else "-"))
    table(rows, out)
    cold = results.get("cold_import", {})
    out(f"\ncold import of function_app: best of {len(cold.get('runs', []))}: {_f(cold.get('best'), 3)} s "
        f"(runs {', '.join(_f(r, 3) for r in cold.get('runs', []))})")
    if cold.get("top_modules"):
        out("  heaviest imports (cumulative, s): " + ", ".join(
            f"{m['module']} {m['seconds']:.3f}" for m in cold["top_modules"][:8]))
    for line in harness_warnings(results):
        out(f"WARNING: {line}")
    from bench.post import post_target_lines, print_post

    print_post(results["app"], out)
    out("")
    for line in [*target_lines(results), *post_target_lines(results["app"])]:
        out(line)


def _actions(result: dict[str, Any]) -> int:
    if result.get("mode") == "app":
        return int(result["actions"]["starts"] + result["actions"]["snapshots"])
    return int(result.get("completion", {}).get("vms_started", 0))


def print_guest(result: dict[str, Any], out: Out = print) -> None:
    """The in-guest run beside the others: makespan, bound (writes, chains of start -> command ->
    snapshot), ratio, and what it cost."""
    out("")
    if "error" in result:
        out(f"in-guest run: failed: {result['error'][:300]}")
        return
    done, bound, req = result["completion"], result["bound"], result["requests"]
    out(f"In the guest: {result['size']} machines, {result['guest_fraction']:.0%} with a stop-services script "
        f"({result['actions']['run_commands']} run commands), time scale {result['time_scale']}")
    table([("app", "bound", "ratio", "limiting", "last VM up", "last command", "last snapshot", "commands not done",
            "429s", "wall", "cpu", "cpu/wall", "verdict"),
           (_f(done["makespan"]), _f(bound["total"]), _f(_ratio(done["makespan"], bound["total"]), 2),
            bound["limiting"], _f(done["last_vm_running"]), _f(done.get("last_command_done")),
            _f(done["last_snapshot_done"]), str(done.get("run_commands_not_done", 0)), str(req["throttled"]),
            _f(result["wall"]), _f(result["cpu"]), _f(_ratio(result["cpu"], result["wall"]), 2),
            str(result.get("verdict")))], out)


def harness_warnings(results: dict[str, Any]) -> list[str]:
    """CPU/wall over 0.7 overall, or while sending: simulated time ran on while the CPU worked.

    The stretch before the first write is real work by nature (CPU and Table storage, one call
    after another), so its CPU/wall is high at any scale: ratio* accounts for it. Waiting and
    finishing do not move the makespan (operations end in simulated time whatever the CPU does),
    only "worker done".
    """
    lines = []
    for r in results["app"] + results["baseline"]:
        if not r.get("wall"):
            continue
        ratio = r["cpu"] / r["wall"]
        phases = {p["phase"]: p for p in r.get("phases", [])}
        send = phases.get("send")
        busy_send = send is not None and send["cpu_per_wall"] > HARNESS_BOUND and send["wall"] > 0.5
        if ratio > HARNESS_BOUND or busy_send:
            detail = ", ".join(f"{name} {p['cpu_per_wall']:.2f}" for name, p in phases.items())
            lines.append(f"{r['mode']} {r['size']}: CPU/wall {ratio:.2f}" + (f" (by phase: {detail})" if detail else "")
                         + f": CPU-bound at time scale {r['time_scale']}, simulated time ran on while the CPU "
                         f"worked (x{1 / r['time_scale']:.0f}); "
                         + ("the makespan's sending is harness-bound" if busy_send else
                            "the makespan's sending was not, 'worker done' may be")
                         + "; a larger --time-scale is more faithful")
    return lines


def target_lines(results: dict[str, Any]) -> list[str]:
    app = {r["size"]: r for r in results["app"] if "error" not in r}
    lines = []

    def verdict(ok: bool | None) -> str:
        return "n/a " if ok is None else "PASS" if ok else "FAIL"

    big = [s for s in (1000, 5000) if s in app]
    ratios = {s: app[s]["completion"]["makespan"] / app[s]["bound"]["total"] for s in big}
    lines.append(f"{verdict(all(v <= 1.2 for v in ratios.values()) if ratios else None)}  makespan / bound <= 1.2 "
                 f"at 1000 and 5000: " + (", ".join(f"{s}: {v:.2f}" for s, v in ratios.items()) or "not run"))
    verdicts = {s: app[s]["verdict_at"] / app[s]["bound"]["total"] for s in big if app[s].get("verdict_at")}
    lines.append(f"{verdict(all(v <= 1.1 for v in verdicts.values()) if verdicts else None)}  verdict / bound <= 1.1 "
                 f"at 1000 and 5000: " + (", ".join(f"{s}: {v:.2f}" for s, v in verdicts.items()) or "not run"))
    after = app.get(5000, {}).get("verdict_after_last_operation")
    poll = app.get(5000, {}).get("poll_interval", 15)
    lines.append(f"{verdict(None if after is None else after <= poll)}  verdict within one poll interval ({poll:g} s) "
                 f"of the last operation's end at 5000: {_f(after)} s")
    shares = {s: 100.0 * r["requests"]["throttled"] / max(r["requests"]["requests"], 1) for s, r in app.items()}
    lines.append(f"{verdict(all(v < 2 for v in shares.values()) if shares else None)}  429s < 2 % of requests: "
                 + ", ".join(f"{s}: {v:.2f} %" for s, v in shares.items()))
    writes = {s: (r["requests"]["accepted_vm_actions"] + r["requests"]["accepted_snapshot_puts"], _actions(r))
              for s, r in app.items()}
    lines.append(f"{verdict(all(w == a for w, a in writes.values()) if writes else None)}  exactly one write per "
                 "start or snapshot: " + ", ".join(f"{s}: {w}/{a}" for s, (w, a) in writes.items()))
    gets = {s: r["requests"]["vm_reads"] for s, r in app.items()}
    lines.append(f"{verdict(all(v == 0 for v in gets.values()) if gets else None)}  no per-VM GET (Resource Graph "
                 "answers in bulk): " + ", ".join(f"{s}: {v}" for s, v in gets.items()))
    ack = app.get(5000, {}).get("ack_seconds")
    largest = max(app) if app else None
    note = "" if ack is not None or largest is None else (
        f" (5000 not run; {largest}: {app[largest]['ack_seconds']:.3f} s)")
    lines.append(f"{verdict(None if ack is None else ack < 1.0)}  acknowledgement < 1 s at 5000: "
                 f"{_f(ack, 3)} s{note}")
    cold = results.get("cold_import", {}).get("best")
    lines.append(f"{verdict(None if cold is None else cold < 0.5)}  cold import of function_app < 0.5 s: "
                 f"{_f(cold, 3)} s")
    memory = app.get(5000, {}).get("pre_peak_rss_mb") or app.get(5000, {}).get("peak_rss_mb")  # the pre phase's
    note = "" if memory is not None or largest is None else (
        f" (5000 not run; {largest}: {app[largest]['peak_rss_mb']:.0f} MB)")
    lines.append(f"{verdict(None if memory is None else memory < 200)}  peak memory < 200 MB at 5000 (pre phase): "
                 f"{_f(memory, 0)} MB{note}")
    return lines


def plot(results: dict[str, Any], path: Path) -> bool:
    """makespan against fleet size (log x, log y): the app's pre and post phases, the estate run
    (bench/estate.py), the baseline, their bounds. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    app = sorted((r for r in results["app"] if "error" not in r), key=lambda r: r["size"])
    base = sorted((r for r in results["baseline"] if "error" not in r), key=lambda r: r["size"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if app:
        xs = [r["size"] for r in app]
        ax.plot(xs, [r["completion"]["makespan"] for r in app], "o-", label="this app (starts + snapshots)")
        ax.plot(xs, [r["bound"]["total"] for r in app], "k--", label="lower bound (throttling model)")
        post = [r for r in app if r.get("post")]
        if post:
            xs = [r["size"] for r in post]
            ax.plot(xs, [r["post"]["makespan"] for r in post], "^-", label="this app, post phase (restores, "
                    "deletes, tags, report)")
            ax.plot(xs, [r["post"]["bound"]["total"] for r in post], "--", color="tab:orange",
                    label="lower bound for the post phase")
    estate = results.get("estate") or {}
    if (estate.get("completion") or {}).get("makespan") and app:
        # The growth up to the estate: the largest in-process run joined to the scaled-out one.
        last = app[-1]
        ax.plot([last["size"], estate["size"]], [last["completion"]["makespan"], estate["completion"]["makespan"]],
                "*:", color="tab:blue", markersize=11,
                label=f"this app, {estate['hosts']} host processes ({estate['subscriptions']} subscriptions)")
        ax.plot([last["size"], estate["size"]], [last["bound"]["total"], estate["bound"]["total"]], "k:")
    if base:
        xs = [r["size"] for r in base]
        ax.plot(xs, [r["completion"]["makespan"] for r in base], "s-",
                label="baseline: documented sample (starts only)")
        ax.plot(xs, [r["bound"]["total"] for r in base], ":", color="grey", label="lower bound for the baseline's work")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("machines in the run")
    ax.set_ylabel("simulated seconds, event to all done")
    ax.set_title("Makespan under Azure's throttling limits")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
