"""Step `plan`: what to do with each machine and disk, from what Resource Graph and the ledger say.

A machine's first row keeps its power state from before we touched anything; a retried worker
reuses it instead of re-planning from a VM we may already have started. Snapshot rows are
reconciled with the snapshots of their names that exist already (an earlier attempt made them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from handlers.adapters.inventory import MachineKind, RunMachine, VmView, get_vm_views
from handlers.adapters.power import STARTABLE_STATES, read_power_states
from handlers.adapters.snapshots import find_existing, plan_snapshots, read_storage_profiles, reconcile
from handlers.core.guest_tags import after_of
from handlers.core.ids import subscription_of
from handlers.core.status import Outcome, PreAction
from handlers.core.tag_values import tag_is_set
from handlers.ledger import MachineRecord, SnapshotRecord
from handlers.phases.pre.state import FINAL, PreWork
from handlers.phases.steps import PhaseRun, Scope
from handlers.runtime import Runtime

_T = TypeVar("_T")


def plan(run: PhaseRun[PreWork]) -> None:
    runtime, work = run.runtime, run.state
    settings = runtime.settings
    scope = list(run.work.lanes) if run.scope is Scope.GROUP else None
    views = work.handed_views
    if views is None:
        views = get_vm_views(runtime.clients.resource_graph(), scope or run.event.subscription_ids,
                             [m.resource_id for m in work.machines if m.kind is not MachineKind.OTHER])
    if settings.snapshot_disks != "none":
        views = read_storage_profiles(runtime.clients, work.machines, views, parallelism=settings.parallelism)
    work.views = views
    new_records = _plan_machines(run, scope)
    new_snapshots = _plan_snapshots(run, scope)
    work.new_rows = [*new_records, *new_snapshots]
    work.fresh = {r.resource_id.lower() for r in new_records}


def _plan_machines(run: PhaseRun[PreWork], scope: list[str] | None) -> list[MachineRecord]:
    """Every machine's record (the ledger's when an earlier attempt wrote one); the new ones."""
    runtime, work = run.runtime, run.state
    work.records = {r.resource_id.lower(): r for r in _rows(runtime.ledger.list_machines, run, scope)}
    vms = [m for m in work.machines if m.kind is MachineKind.VM and m.resource_id.lower() not in work.records]
    # Resource Graph can miss a VM (a new VM not yet indexed, a partial read permission):
    # only those few get an instance-view GET of their own.
    unseen = [m for m in vms if not (work.views.get(m.resource_id.lower()) or VmView("", "")).power_state]
    direct = read_power_states(runtime.clients, unseen, parallelism=runtime.settings.parallelism)
    new = []
    for machine in work.machines:
        key = machine.resource_id.lower()
        if key not in work.records:
            view = work.views.get(key)
            state = (view.power_state if view else "") or direct.get(key, "")
            work.records[key] = _plan(runtime, machine, view, state)
            new.append(work.records[key])
    return new


def _plan_snapshots(run: PhaseRun[PreWork], scope: list[str] | None) -> list[SnapshotRecord]:
    """Snapshot records (the ledger's, and new ones apart). The ledger's still due are reconciled
    with snapshots of those names that exist already (one Resource Graph query by the run's tag):
    an earlier attempt may have made them. A new one needs no lookup: a row is stored before its
    snapshot is requested (`send`), so no snapshot of this run exists without its row."""
    runtime, work, event = run.runtime, run.state, run.event
    rows = {r.row_key(): r for r in _rows(runtime.ledger.list_snapshots, run, scope)}
    planned = [replace(r, lane=subscription_of(r.snapshot_id or r.disk_id))
               for r in plan_snapshots(runtime.settings, event.correlation_id, work.machines, work.views)
               if r.row_key() not in rows]
    due = [r for r in rows.values() if r.outcome not in FINAL]
    if due:
        found = find_existing(runtime.clients, scope or event.subscription_ids, event.correlation_id, due)
        reconciled = {r.row_key(): reconcile(r, found.get(r.snapshot_id.lower())) for r in due}
        # A row that the snapshot found settles (reused, or refused) is stored now: no request
        # follows to record it, and a split run's verdict reads the ledger.
        runtime.ledger.save_rows(event.correlation_id,
                                 [v for k, v in reconciled.items() if v.outcome != rows[k].outcome])
        rows.update(reconciled)
    rows.update({r.row_key(): r for r in planned})
    work.snapshots = rows
    return planned


def _rows(read: Callable[..., list[_T]], run: PhaseRun[PreWork], scope: list[str] | None) -> list[_T]:
    """The run's rows of one kind, or (a group of a split run) those of the group's subscriptions."""
    if scope is None:
        return read(run.event.correlation_id)
    return [row for lane in scope for row in read(run.event.correlation_id, lane=lane)]


def _plan(runtime: Runtime, machine: RunMachine, view: VmView | None, state: str) -> MachineRecord:
    """What to do with a machine at first sighting, recorded before anything is touched."""
    settings = runtime.settings
    after, refused = after_of(dict(view.tags) if view else {})
    base = MachineRecord(
        resource_id=machine.resource_id, kind=machine.kind.value, subscription_id=machine.subscription_id,
        resource_group=machine.resource_group, name=machine.name, location=view.location if view else "",
        original_power_state=state, lane=subscription_of(machine.resource_id), after_action=after,
        after_detail=refused,
    )
    skip: dict[str, Any] = {"pre_action": PreAction.SKIP.value, "pre_outcome": Outcome.SKIPPED.value}
    if machine.kind is MachineKind.ARC:
        return replace(base, **skip, pre_detail="Arc-enabled server: it cannot be powered on from Azure")
    if machine.kind is MachineKind.OTHER:
        return replace(base, **skip, pre_detail="not a virtual machine")
    if tag_is_set(dict(view.tags) if view else {}, settings.opt_out_tag) is not None:
        return replace(base, **skip, opted_out=True, pre_detail=f"opted out by tag {settings.opt_out_tag}")
    if state in ("running", "starting"):
        return replace(base, pre_outcome=Outcome.NOT_NEEDED.value, pre_detail=f"already {state}")
    if state in STARTABLE_STATES:
        if not settings.start_vms:
            return replace(base, pre_outcome=Outcome.SKIPPED.value, pre_detail="MAINTENANCE_START_VMS is false")
        return replace(base, pre_action=PreAction.START.value, pre_outcome=Outcome.PENDING.value)
    detail = "VM not found" if state == "not-found" else f"power state {state or 'unknown'}: left alone"
    return replace(base, pre_outcome=Outcome.UNKNOWN.value, pre_detail=detail)
