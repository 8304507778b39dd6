"""The post phase of the same fleet, after the window: the post event to `post_maintenance`, the
queue to `maintenance_worker`, in the process that ran the pre phase (same emulator, same ledger).

Before the event: simulated time jumps over the window (every throttling bucket is full again, as
it is hours after the pre event), each machine gets its patch result (Succeeded), and each VM an
expired snapshot of an earlier run, marked as this toolkit marks its own. The app then restores the
VMs it started (half were stopped, half deallocated: half power off, half deallocate), deletes the
expired snapshots, reads the patch results, checks health, stamps the result tags and writes the
report. Figures are simulated seconds after the post event.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.bound import PostWork, post_bound
from bench.fleet import Machine, Profile, _iso
from bench.measure import Stopwatch, request_stats
from bench.scenario import simulated_since
from emulator import AzureEmulator
from emulator.disks import disk_id, os_disk_name
from emulator.functions_host import FunctionsHost
from handlers.adapters.snapshots import EXPIRES_TAG, MARKER_TAG, MARKER_VALUE, RUN_TAG
from handlers.core.keys import run_key

WINDOW_SECONDS = 3 * 3600.0  # the window between the pre and the post event (simulated)
# The earlier run whose snapshots have expired: its run key as the toolkit tags it.
EARLIER_RUN = "/subscriptions/x/resourcegroups/x/providers/microsoft.maintenance/maintenanceconfigurations/x/" \
              "providers/microsoft.maintenance/applyupdates/202611010000"


def app_post_bound(fleet: list[Machine], profile: Profile) -> dict[str, Any]:
    """The post phase's lower bound for this fleet (bench.bound.post_bound): a restore per VM the
    pre phase started (a power off for the stopped ones, a deallocate for the deallocated ones),
    a delete per expired snapshot (one per VM), a tag write per machine."""
    work: dict[str, PostWork] = {}
    for m in fleet:
        w = work.get(m.subscription, PostWork())
        state = m.power_state
        work[m.subscription] = PostWork(deallocates=w.deallocates + (state == "deallocated"),
                                        power_offs=w.power_offs + (state == "stopped"), deletes=w.deletes + 1,
                                        tags=w.tags + 1, checks=w.checks + (state == "running"))
    return post_bound(work, machines=len(fleet), snapshots=len(fleet), deallocate_seconds=profile.deallocate,
                      power_off_seconds=profile.power_off, delete_seconds=profile.delete_snapshot,
                      latency=profile.latency).to_dict()


def seed_after_window(emulator: AzureEmulator, fleet: list[Machine], ids: list[str], correlation_id: str) -> None:
    """Jump over the window; a patch result per machine; an expired snapshot of an earlier run per VM."""
    emulator.clock.advance(WINDOW_SECONDS)
    expired = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tags = {MARKER_TAG: MARKER_VALUE, RUN_TAG: run_key(EARLIER_RUN), EXPIRES_TAG: expired}
    for machine, vm_id in zip(fleet, ids, strict=True):
        emulator.add_patch_result(vm_id, correlation_id, status="Succeeded")
        vm = emulator.find_vm(vm_id)
        os_disk = disk_id(vm, os_disk_name(vm))
        emulator.add_snapshot(machine.subscription, machine.resource_group, f"{machine.name}-os-earlier",
                              source_disk_id=os_disk, location=machine.location, tags=tags)


def post_event(pre: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The post event of the run `pre` (a pre event) announced: the window is over, it succeeded."""
    data = {k: v for k, v in pre["data"].items() if k != "cancellationCutOffDateTime"}
    data["status"] = "Succeeded"
    return {**pre, "eventType": "Microsoft.Maintenance.PostMaintenanceEvent",
            "eventTime": _iso(now), "data": data}


def run_post(emulator: AzureEmulator, host: FunctionsHost, ledger: Any, fleet: list[Machine], ids: list[str],
             pre: dict[str, Any], profile: Profile, time_scale: float, function_timeout: float) -> dict[str, Any]:
    """Deliver the post event, run the queues until they are empty; every figure of the post phase."""
    correlation_id = pre["data"]["correlationId"]
    seed_after_window(emulator, fleet, ids, correlation_id)
    bound = app_post_bound(fleet, profile)
    first_invocation = len(host.invocations)
    steps = _StepSpans()
    with Stopwatch(emulator) as total:
        since, since_real = emulator.clock.now(), datetime.now(UTC)
        host.deliver_event("post_maintenance", post_event(pre, since_real))
        handled = host.run_queues()
    invocations = host.invocations[first_invocation:]
    run = ledger.get_run(correlation_id) or {}
    phase = ledger.get_phase(correlation_id, "post") or {}
    ends = post_completion(emulator, ids, since)
    stats = request_stats(emulator.requests, since)
    finished = simulated_since(phase.get("FinishedAt"), since_real, time_scale)
    report_at = simulated_since(run.get("ReportWrittenAt"), since_real, time_scale)
    makespan = max([t for t in (finished, report_at, *ends["last"].values()) if t is not None], default=0.0)
    longest = max(invocations, key=lambda i: i.seconds, default=None)
    outcomes: Counter[str] = Counter(r.restore_outcome or "-" for r in ledger.list_machines(correlation_id))
    return {
        "bound": bound,
        "makespan": makespan,
        "ratio": makespan / bound["total"] if bound["total"] else None,
        "ends": ends,
        "finished_at": finished,
        "report_at": report_at,
        "requests": stats,
        "invocations": len(invocations),
        "messages_handled": handled,
        "failed_invocations": [f"{i.function}: {i.error}" for i in invocations if not i.succeeded],
        "longest_invocation": {"function": longest.function, "seconds": longest.seconds} if longest else None,
        "function_timeout": function_timeout,
        "status": phase.get("Status"),
        "restore_outcomes": dict(outcomes),
        "retention": {k: run.get(f"Retention{k}") for k in ("Seen", "Expired", "Deleted", "Failed")},
        "tags_stamped": run.get("TagsStamped"),
        "tags_failed": run.get("TagsFailed") or "",
        "step_errors": str(run.get("StepErrors") or "")[:600],
        "report": bool(run.get("ReportUrl")),
        # Each step's span: when it began and ended, simulated s after the post event.
        "steps": steps.timeline(since_real, time_scale),
        "wall": total.wall,
        "cpu": total.cpu,
    }


class _StepSpans:
    """Records the app's step spans (the phase's steps, `handlers.core.telemetry.step_span`) in memory."""

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def timeline(self, since_real: datetime, time_scale: float) -> list[dict[str, Any]]:
        from handlers.phases.post import STEPS

        names = {step.name for step in STEPS}
        origin = since_real.timestamp()
        spans = [s for s in self.exporter.get_finished_spans() if s.name in names]
        return [{"step": s.name, "from": round(((s.start_time or 0) / 1e9 - origin) / time_scale, 1),
                 "to": round(((s.end_time or 0) / 1e9 - origin) / time_scale, 1),
                 "outcome": str((s.attributes or {}).get("maintenance.outcome", ""))}
                for s in sorted(spans, key=lambda s: s.start_time or 0)]


def post_completion(emulator: AzureEmulator, ids: list[str], since: float) -> dict[str, Any]:
    """When the last restore, snapshot delete and tag write ended (simulated s after `since`), from
    the emulator's own history; and how many of each."""
    restored, deleted, last_restore, last_delete = Counter[str](), 0, None, None
    with emulator.lock:
        now = emulator.clock.now()
        emulator.settle_snapshots(now)
        for rid in ids:
            vm = emulator.find_vm(rid)
            vm.settle(now)
            back = [t for t, state in vm.history if t >= since and state in ("stopped", "deallocated")]
            if back:
                restored[vm.power_state] += 1
                last_restore = max(last_restore or 0.0, back[0] - since)
        for snapshot in emulator.deleted_snapshot_records:
            if snapshot.deleted_at is not None and snapshot.deleted_at >= since:
                deleted += 1
                last_delete = max(last_delete or 0.0, snapshot.deleted_at - since)
    tag_writes = [r.time - since for r in emulator.requests
                  if r.time >= since and r.method == "PATCH" and "/providers/Microsoft.Resources/tags/" in r.path
                  and r.status < 300]
    return {"restored": dict(restored), "deleted": deleted, "tags_written": len(tag_writes),
            "last": {"restore": last_restore, "delete": last_delete, "tag": max(tag_writes, default=None)}}


def print_post(app: list[dict[str, Any]], out: Any = print) -> None:
    """The post phase of each fleet: makespan against its bound, when each kind of work ended, and its cost."""
    from bench.report import _f, _ratio, table

    runs = [(r["size"], r["post"]) for r in app if r.get("post")]
    if not runs:
        return
    out("\nThe post phase, simulated seconds after the post event (restores: half deallocate, half power off; "
        "an expired snapshot per VM deleted; a tag write per machine; the report)")
    rows: list[tuple[str, ...]] = [("machines", "app", "bound", "ratio", "limiting", "last restore", "last delete",
                                    "last tag", "report", "restored", "deleted", "tagged", "429s",
                                    "writes/action", "longest inv. s", "invocations", "cpu/wall")]
    for size, p in runs:
        ends, req = p["ends"], p["requests"]
        restored = sum(ends["restored"].values())
        rows.append((str(size), _f(p["makespan"]), _f(p["bound"]["total"]), _f(p["ratio"], 2),
                     p["bound"]["limiting"], _f(ends["last"]["restore"]), _f(ends["last"]["delete"]),
                     _f(ends["last"]["tag"]), _f(p["report_at"]), str(restored), str(ends["deleted"]),
                     str(ends["tags_written"]), str(req["throttled"]),
                     _f(_ratio(accepted_writes(req), restored + ends["deleted"] + ends["tags_written"]), 3),
                     _f((p["longest_invocation"] or {}).get("seconds")), str(p["invocations"]),
                     _f(_ratio(p["cpu"], p["wall"]), 2)))
    table(rows, out)
    for size, p in runs:
        out(f"steps at {size} (simulated s from the event): " + ", ".join(
            f"{s['step']} {s['from']:.0f}-{s['to']:.0f}" for s in p.get("steps", [])))
    out("bound one after another (restores, then deletes, then tags): "
        + ", ".join(f"{size}: {p['bound']['issue_formula']:.1f}" for size, p in runs))
    for size, p in runs:
        trouble = [*p["failed_invocations"], p["step_errors"], p["tags_failed"]]
        if any(trouble) or p["status"] != "completed":
            out(f"!! post {size}: status {p['status']}; " + "; ".join(t for t in trouble if t)[:600])


def accepted_writes(requests: dict[str, Any]) -> int:
    """Writes (POST, PUT, PATCH, DELETE) that were not refused with a 429."""
    return int(requests["by_kind"].get("writes", 0) - requests["throttled_by_kind"].get("writes", 0))


def post_target_lines(app: list[dict[str, Any]]) -> list[str]:
    """The post phase's targets: ratio <= 1.2 at 5000, no invocation longer than functionTimeout."""
    runs = {r["size"]: r["post"] for r in app if r.get("post")}
    at = runs.get(5000)
    lines = [("n/a " if at is None else "PASS" if at["ratio"] <= 1.2 else "FAIL")
             + "  post phase makespan / bound <= 1.2 at 5000: "
             + (", ".join(f"{s}: {p['ratio']:.2f}" for s, p in runs.items()) or "not run")]
    longest = {s: (p["longest_invocation"] or {}).get("seconds", 0.0) for s, p in runs.items()}
    ok = all(longest[s] < p["function_timeout"] for s, p in runs.items()) if runs else None
    lines.append(("n/a " if ok is None else "PASS" if ok else "FAIL")
                 + "  no post invocation longer than functionTimeout: "
                 + ", ".join(f"{s}: {longest[s]:.0f} s of {p['function_timeout']:.0f}" for s, p in runs.items()))
    return lines
