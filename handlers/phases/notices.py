"""What each milestone of a run says, built from what the run knows (the event, its ledger rows).

One `Notice` per milestone, channel-neutral: its CloudEvent type and data (every figure, for
machines), and for people (e-mail, Teams) a title, facts, a short list and links. Rendering
it for each channel is `handlers.phases.notify`'s job. Milestones, in the order they come:

| milestone | CloudEvent type | to people |
|---|---|---|
| pre-received | UpdateManagerToolkit.Run.PreReceived | yes: the pre notice, with the hold (or approve) link |
| checks-failed | UpdateManagerToolkit.Run.ChecksFailed | no |
| run-cancelled | UpdateManagerToolkit.Run.Cancelled | yes |
| run-ready | UpdateManagerToolkit.Run.Ready | only when checks failed and the run was not cancelled |
| post-completed | UpdateManagerToolkit.Run.PostCompleted | yes: the post summary, with the report link |
| report-ready | UpdateManagerToolkit.Run.ReportReady | no |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from handlers.adapters.inventory import RunMachine, VmView
from handlers.core.events import MaintenanceEvent
from handlers.core.ids import configuration_name_of
from handlers.core.run_links import make_link
from handlers.core.status import Verdict
from handlers.core.tag_values import tag_is_set
from handlers.ledger import MachineRecord
from handlers.ledger.records import stored_json
from handlers.runtime import Runtime

TYPE_PREFIX = "UpdateManagerToolkit.Run."
LISTED = 30  # machines named in a notice for people; the rest are counted
_REASONS = 20


@dataclass(frozen=True)
class Notice:
    milestone: str
    event_type: str
    data: Mapping[str, Any]
    title: str = ""  # for people; "" when the milestone is for machines only
    summary: str = ""
    facts: tuple[tuple[str, str], ...] = ()
    items_title: str = ""
    items: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = field(default=())  # (label, url)

    @property
    def for_people(self) -> bool:
        return bool(self.title)


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value else "unknown"


def _base(event: MaintenanceEvent) -> dict[str, Any]:
    return {"run": event.correlation_id, "maintenanceConfigurationId": event.maintenance_configuration_id,
            "windowStart": event.start.isoformat(), "windowEnd": event.end.isoformat()}


def _listed(names: Sequence[str]) -> tuple[str, ...]:
    shown = list(names[:LISTED])
    if len(names) > LISTED:
        shown.append(f"... and {len(names) - LISTED} more")
    return tuple(shown)


def pre_received(runtime: Runtime, event: MaintenanceEvent, machines: Sequence[RunMachine],
                 views: Mapping[str, VmView]) -> Notice:
    """The pre notice: what will be patched when, what will be started for it, the hold link."""
    settings = runtime.settings
    name = configuration_name_of(event.correlation_id)

    def state(machine: RunMachine) -> str:
        view = views.get(machine.resource_id.lower())
        if machine.kind.value != "vm" or view is None or view.power_state in ("running", "starting", ""):
            return ""
        if tag_is_set(dict(view.tags), settings.opt_out_tag) is not None:
            return "off, opted out: not started"
        return "off: started for patching" if settings.start_vms else "off: not started (MAINTENANCE_START_VMS)"

    states = {m.resource_id: state(m) for m in machines}
    off = [m for m in machines if states[m.resource_id].startswith("off: started")]
    cutoff = event.cancellation_cutoff
    data = {**_base(event), "cancellationCutoff": cutoff.isoformat() if cutoff else None,
            "machines": len(machines), "subscriptions": list(event.subscription_ids),
            "toStart": len(off), "approvalMode": settings.hold.mode}
    links: list[tuple[str, str]] = []
    hold = settings.hold
    # `hold.enabled`, spelled out so the type checker knows the key and the URL are set.
    if hold.key is not None and hold.public_url is not None and cutoff is not None:
        action = "approve" if hold.mode == "approve" else "hold"
        links.append(("Approve this run" if action == "approve" else "Hold this run",
                      make_link(hold.key, hold.public_url, correlation_id=event.correlation_id, action=action,
                                expires=cutoff)))
    deadline = (cutoff - timedelta(seconds=settings.cutoff_safety_seconds)) if cutoff else None
    if links and hold.mode == "approve":
        ask = (f"This run needs an approval: unless someone approves it by {_when(deadline)}, it is cancelled "
               "before it starts.")
    elif links:
        ask = f"To stop this run, hold it before {_when(deadline)}: it is then cancelled before it starts."
    else:
        ask = ""
    started = f"{len(off)} machine(s) are off: they are started for patching and put back afterwards." if off else ""
    return Notice(
        "pre-received", TYPE_PREFIX + "PreReceived", data,
        title=f"{name}: {len(machines)} machine(s) to be patched from {_when(event.start)}",
        summary=" ".join(p for p in (started, ask) if p),
        facts=(("Window", f"{_when(event.start)} to {_when(event.end)}"), ("Cancellation cutoff", _when(cutoff)),
               ("Machines", str(len(machines))), ("To be started", str(len(off)))),
        items_title=f"Machines ({len(machines)})", items=_listed(
            [f"{m.name} ({m.resource_group}){' - ' + states[m.resource_id] if states[m.resource_id] else ''}"
             for m in machines]),
        links=tuple(links))


def verdict_notices(event: MaintenanceEvent, row: Mapping[str, Any]) -> list[Notice]:
    """The verdict's milestones: checks failed, then cancelled or ready (going ahead)."""
    verdict = str(row.get("Verdict") or "")
    if verdict not in (Verdict.READY.value, Verdict.FAILED.value, Verdict.DRY_RUN.value):
        return []
    name = configuration_name_of(event.correlation_id)
    reasons = [r for r in str(row.get("FailingReasons") or "").splitlines() if r]
    cancel = str(row.get("CancelOutcome") or "")
    checks = _json(row.get("Checks"))
    data = {**_base(event), "verdict": verdict, "cancel": cancel, "checks": checks, "reasons": reasons[:_REASONS],
            "reasonCount": len(reasons), "machines": row.get("MachineCount")}
    notices = []
    if reasons:
        notices.append(Notice("checks-failed", TYPE_PREFIX + "ChecksFailed", data))
    facts = (("Window", _when(event.start)), ("Verdict", verdict), ("Cancel", cancel or "not needed"))
    more = (f"... and {len(reasons) - _REASONS} more",) if len(reasons) > _REASONS else ()
    items = tuple(reasons[:_REASONS]) + more
    if cancel == "accepted":
        notices.append(Notice("run-cancelled", TYPE_PREFIX + "Cancelled", data,
                              title=f"{name}: the run of {_when(event.start)} is cancelled",
                              summary="Its checks failed, so it was cancelled before it started: nothing is "
                                      "patched in this window.", facts=facts, items_title="Why", items=items))
    elif reasons:
        would = "would be cancelled (dry run)" if verdict == Verdict.DRY_RUN.value else "goes ahead"
        notices.append(Notice("run-ready", TYPE_PREFIX + "Ready", {**data, "goesAhead": True},
                              title=f"{name}: checks failed, the run of {_when(event.start)} {would}",
                              summary=f"Cancel: {cancel}.", facts=facts, items_title="Why", items=items))
    else:
        notices.append(Notice("run-ready", TYPE_PREFIX + "Ready", {**data, "goesAhead": True}))
    return notices


def post_notices(event: MaintenanceEvent, row: Mapping[str, Any], machines: Sequence[MachineRecord],
                 how: str) -> list[Notice]:
    """The post summary (patched / failed / needs reboot / not reported, rollback candidates, the
    report link), and the report's own milestone."""
    name = configuration_name_of(event.correlation_id)
    patches = _json(row.get("PatchSummary"))
    health = _json(row.get("HealthSummary"))
    steps = _json(row.get("StepErrors"))
    report, report_json = str(row.get("ReportUrl") or ""), str(row.get("ReportJsonUrl") or "")
    counts = {k: int(patches.get(k, 0) or 0) for k in ("patched", "warnings", "failed", "not_reported", "needs_reboot")}
    candidates = [c for c in health.get("rollback_candidates", []) if isinstance(c, Mapping)]
    data = {**_base(event), "runStatus": row.get("RunStatus") or row.get("PostStatus"), "ended": how,
            "patches": patches, "health": health, "stepErrors": steps, "restore": _json(row.get("RestoreSummary")),
            "reportUrl": report or None}
    status = {m.resource_id: m.patch_status.lower() for m in machines if m.kind in ("vm", "arc")}
    items = [f"{m.name}: patching failed ({m.patch_failed} update(s))" for m in machines
             if status.get(m.resource_id) == "failed"]
    items += [f"{m.name}: no patch result reported" for m in machines
              if status.get(m.resource_id, "succeeded") in ("", "not-reported", "notstarted", "inprogress")]
    items += [f"{m.name}: needs a reboot" for m in machines if m.patch_reboot.lower() in ("required", "failed")]
    items += [f"{c.get('name')}: rollback candidate ({'; '.join(map(str, c.get('reasons', [])))[:200]}); "
              f"snapshots {', '.join(str(s).rsplit('/', 1)[-1] for s in c.get('snapshot_ids', []))}"
              for c in candidates]
    items += [f"step {step} failed: {str(error)[:200]}" for step, error in steps.items()]
    title = (f"{name}: {counts['patched'] + counts['warnings']} patched, {counts['failed']} failed, "
             f"{counts['needs_reboot']} need reboot, {counts['not_reported']} not reported")
    if candidates:
        title += f", {len(candidates)} to roll back?"
    notices = [Notice(
        "post-completed", TYPE_PREFIX + "PostCompleted", data, title=title,
        summary=f"The run of {_when(event.start)} is over (Update Manager: {data['runStatus'] or 'unknown'}).",
        facts=(("Patched", str(counts["patched"] + counts["warnings"])), ("Failed", str(counts["failed"])),
               ("Needs reboot", str(counts["needs_reboot"])), ("Not reported", str(counts["not_reported"])),
               ("Rollback candidates", str(len(candidates)))),
        items_title="Needs attention" if items else "", items=_listed(items),
        links=(("Open the report", report),) if report else ())]
    if report:
        notices.append(Notice("report-ready", TYPE_PREFIX + "ReportReady",
                              {**_base(event), "reportUrl": report, "reportJsonUrl": report_json}))
    return notices


def _json(value: Any) -> dict[str, Any]:
    parsed = stored_json(value, {})
    return parsed if isinstance(parsed, dict) else {}
