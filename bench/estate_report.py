"""The estate run's table and targets (bench/estate.py), beside the other runs' (bench/report.py)."""

from __future__ import annotations

from typing import Any

from bench.report import Out, _f, _ratio, table

MEMORY_LIMIT_MB = 250.0


def print_estate(result: dict[str, Any], out: Out = print) -> None:
    """Verdict and makespan against the bound, 429s, writes per action, and per process its memory,
    CPU, wall and the messages it ran."""
    out("")
    if "error" in result and not result.get("completion"):
        out(f"estate run: failed: {result['error'][:600]}")
        return
    done, bound, req = result["completion"], result["bound"], result["requests"] or {}
    out(f"The estate: {result['size']} machines over {result['subscriptions']} subscriptions and "
        f"{result['regions']} regions, {result['hosts']} Functions host processes sharing Azurite, the emulator "
        f"in a process of its own (requests over HTTPS), {result['subscriptions_per_worker']} subscription(s) per "
        f"queue message, time scale {result['time_scale']}")
    table([("verdict", "makespan", "bound", "verdict/bound", "makespan/bound", "limiting", "429s", "requests",
            "verdict was", "ack"),
           (_f(result.get("verdict_at")), _f(done.get("makespan")), _f(bound["total"]), _f(result.get("ratio"), 2),
            _f(result.get("makespan_ratio"), 2), bound["limiting"], str(req.get("throttled")),
            str(req.get("requests")), str(result.get("verdict")), _f(result.get("ack_seconds"), 3))], out)
    rows: list[tuple[str, ...]] = [("process", "messages", "invocations", "longest (s)", "peak MB", "cpu", "wall",
                                    "cpu/wall")]
    for p in result["processes"]:
        longest = (p.get("longest_invocation") or {}).get("seconds")
        rows.append((f"host {p.get('index')}", str(p.get("messages_handled")), _invocations(p.get("invocations")),
                     _f(longest), _f(p.get("peak_rss_mb"), 0), _f(p.get("cpu")), _f(p.get("wall")),
                     _f(_ratio(p.get("cpu"), p.get("wall")), 2)))
    emulator = result.get("emulator_process") or {}
    rows.append(("emulator", "-", f"{emulator.get('requests_served')} requests", "-",
                 _f(emulator.get("peak_rss_mb"), 0), _f(emulator.get("cpu")), _f(emulator.get("wall")),
                 _f(_ratio(emulator.get("cpu"), emulator.get("wall")), 2)))
    table(rows, out)
    for line in estate_target_lines(result):
        out(line)
    if "error" in result:
        out(f"errors: {result['error'][:600]}")


def estate_target_lines(result: dict[str, Any]) -> list[str]:
    def verdict(ok: bool | None) -> str:
        return "n/a " if ok is None else "PASS" if ok else "FAIL"

    size, req = result["size"], result.get("requests") or {}
    ratio = result.get("ratio")
    peaks = [p.get("peak_rss_mb") for p in result.get("processes", [])]
    peak = max((p for p in peaks if p is not None), default=None)
    throttled = req.get("throttled")
    done = result.get("completion") or {}
    actions = (done.get("vms_started") or 0) + size
    writes = (req.get("accepted_vm_actions") or 0) + (req.get("accepted_snapshot_puts") or 0)
    ack = result.get("ack_seconds")
    return [
        f"{verdict(None if ratio is None else ratio <= 1.1)}  verdict / bound <= 1.1 at {size}: {_f(ratio, 2)}",
        f"{verdict(None if peak is None else peak < MEMORY_LIMIT_MB)}  peak memory per host process < "
        f"{MEMORY_LIMIT_MB:.0f} MB at {size}: {_f(peak, 0)} MB",
        f"{verdict(None if throttled is None else throttled == 0)}  zero 429s at {size}: {throttled}",
        f"{verdict(writes == actions if req else None)}  exactly one write per start or snapshot at {size}: "
        f"{writes}/{actions}",
        f"{verdict(None if ack is None else ack < 1.0)}  acknowledgement < 1 s at {size}: {_f(ack, 3)} s",
    ]


def _invocations(functions: list[str] | None) -> str:
    if not functions:
        return "-"
    counts: dict[str, int] = {}
    for name in functions:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
