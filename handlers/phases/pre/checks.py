"""Pre-checks: named tests of the fleet's readiness, chosen and ordered by MAINTENANCE_PRE_CHECKS.

Each check returns pass/fail with a reason per machine. Any failure cancels the run (unless
cancel-on-failure is off). The registry's names are validated when the settings are read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from handlers.adapters.http_probe import probe_url
from handlers.adapters.inventory import VmView, describe_machine
from handlers.adapters.power import read_vm_statuses
from handlers.core.settings import CHECK_NAMES
from handlers.core.status import Outcome
from handlers.core.tag_values import tag_is_set
from handlers.ledger import MachineRecord, SnapshotRecord
from handlers.runtime import Runtime


@dataclass(frozen=True)
class Finding:
    resource_id: str | None  # None for a finding about the run as a whole
    reason: str


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    findings: tuple[Finding, ...] = ()
    note: str = ""


@dataclass
class CheckContext:
    """What the pre phase knows when the checks run (at the deadline or when the work is done)."""

    runtime: Runtime
    machines: dict[str, MachineRecord]  # by lower-cased id
    views: dict[str, VmView]
    snapshots: list[SnapshotRecord] = field(default_factory=list)
    # The event's subscriptions Resource Graph does not show us (lower-case).
    unreadable_subscriptions: list[str] = field(default_factory=list)
    run_row: dict[str, Any] = field(default_factory=dict)  # the run's ledger row (a hold, an approval)


def subscriptions_readable(context: CheckContext) -> CheckResult:
    """Every subscription of the event is visible to the app's identity. Resource Graph answers an
    unreadable subscription with nothing rather than an error, so its machines would be neither
    started nor checked, and the run would look ready."""
    findings = tuple(
        Finding(f"/subscriptions/{sub}", "not readable by the app's identity (absent from Resource Graph): its "
                "machines cannot be found, started or checked; give the identity Reader on it")
        for sub in context.unreadable_subscriptions)
    return CheckResult("subscriptions-readable", not findings, findings)


def vms_running(context: CheckContext) -> CheckResult:
    """Every Azure VM of the run (but opted-out ones) is running; optionally its agent is Ready."""
    settings = context.runtime.settings
    vms = [r for r in context.machines.values() if r.kind == "vm" and not r.opted_out]
    findings: list[Finding] = []
    statuses = {}
    if settings.check_vm_agent:
        machines = [m for m in (describe_machine(r.resource_id) for r in vms) if m is not None]
        statuses = read_vm_statuses(context.runtime.clients, machines, parallelism=settings.parallelism)
    for record in vms:
        key = record.resource_id.lower()
        if record.pre_outcome == Outcome.PLANNED:
            continue  # a dry run's start: nothing to check until it is really made
        if record.pre_action == "start":
            running = record.pre_outcome == Outcome.SUCCEEDED
            state = {Outcome.TIMED_OUT.value: "still starting at the deadline",
                     Outcome.FAILED.value: f"start failed: {record.pre_detail}"}.get(
                record.pre_outcome, f"start {record.pre_outcome}")
        else:
            running = (record.original_power_state in ("running", "starting")
                       and record.pre_outcome == Outcome.NOT_NEEDED)
            state = record.pre_detail or f"power state {record.original_power_state or 'unknown'}"
        status = statuses.get(key)
        if status is not None:
            running = status.power_state == "running"
            state = f"power state {status.power_state or 'unknown'}"
            if running and status.agent_ready is not True:
                findings.append(Finding(record.resource_id, "running, but the VM agent is not Ready"))
                continue
        if not running:
            findings.append(Finding(record.resource_id, f"not running: {state}"))
    return CheckResult("vms-running", not findings, tuple(findings))


def snapshots_succeeded(context: CheckContext) -> CheckResult:
    """Every snapshot that was due exists and succeeded (skipped disks do not count)."""
    findings = [
        Finding(s.vm_id, f"snapshot of {s.disk_id} {_describe_snapshot(s)}")
        for s in context.snapshots
        if s.outcome not in (Outcome.SUCCEEDED, Outcome.REUSED, Outcome.SKIPPED, Outcome.PLANNED)
    ]
    return CheckResult("snapshots-succeeded", not findings, tuple(findings))


def _describe_snapshot(record: SnapshotRecord) -> str:
    if record.outcome == Outcome.TIMED_OUT:
        return "still being created at the deadline"
    return f"{record.outcome}: {record.detail}" if record.detail else record.outcome


def no_hold_tag(context: CheckContext) -> CheckResult:
    """No machine of the run carries the hold tag, and no person held the run through the pre
    notice's hold link (or, in approval mode, someone approved it): an operator's brake on one run."""
    hold = context.runtime.settings.hold_tag
    findings = []
    if context.run_row.get("HeldAt"):
        findings.append(Finding(None, f"held by a person through the hold link at {context.run_row['HeldAt']}"))
    elif context.runtime.settings.hold.mode == "approve" and not context.run_row.get("ApprovedAt"):
        findings.append(Finding(None, "not approved before the deadline (MAINTENANCE_APPROVAL_MODE is approve)"))
    for record in context.machines.values():
        view = context.views.get(record.resource_id.lower())
        value = tag_is_set(dict(view.tags) if view else {}, hold)
        if value is not None:
            findings.append(Finding(record.resource_id, f"carries the hold tag {hold}={value}"))
    return CheckResult("no-hold-tag", not findings, tuple(findings))


def guest_actions(context: CheckContext) -> CheckResult:
    """Every machine's commands before patching (its pre script, its services stopped) ran and
    succeeded: one that failed, timed out, was still running at the deadline, could not be sent
    or was refused (an invalid tag, a script not in the catalogue) fails the run. Passes when no
    machine carries a guest tag."""
    findings = tuple(
        Finding(r.resource_id, f"{r.guest_pre}: {r.guest_pre_outcome}: {r.guest_pre_detail}".rstrip(": "))
        for r in context.machines.values()
        if r.guest_pre and not r.opted_out and r.guest_pre_outcome not in (Outcome.SUCCEEDED, Outcome.PLANNED))
    return CheckResult("guest-actions", not findings, findings)


def http_probe(context: CheckContext) -> CheckResult:
    """The configured URL answers 2xx within the timeout (an application's 'ready for patching')."""
    settings = context.runtime.settings
    result = probe_url(settings.http_probe_url or "", timeout_seconds=settings.http_probe_timeout_seconds)
    if result.passed:
        return CheckResult("http-probe", True, note=result.detail)
    return CheckResult("http-probe", False, (Finding(None, result.detail),))


CHECKS: dict[str, Callable[[CheckContext], CheckResult]] = {
    "subscriptions-readable": subscriptions_readable,
    "vms-running": vms_running,
    "snapshots-succeeded": snapshots_succeeded,
    "no-hold-tag": no_hold_tag,
    "guest-actions": guest_actions,
    "http-probe": http_probe,
}
if tuple(CHECKS) != CHECK_NAMES:  # a check added here must be added to the settings, and the reverse
    raise RuntimeError(f"settings.CHECK_NAMES {CHECK_NAMES} must list exactly the registered checks {tuple(CHECKS)}")


def run_checks(context: CheckContext, log: Callable[..., None]) -> list[CheckResult]:
    """Run the configured checks in order; a check that raises fails with the error as its reason."""
    results = []
    for name in context.runtime.settings.pre_checks:
        try:
            result = CHECKS[name](context)
        except Exception as exc:  # a broken check must fail the verdict, not pass it silently
            result = CheckResult(name, False, (Finding(None, f"check raised {type(exc).__name__}: {exc}"),))
        results.append(result)
        for finding in result.findings:
            log("check %s failed for %s: %s", name, finding.resource_id or "the run", finding.reason)
    return results


__all__ = ["CHECKS", "CheckContext", "CheckResult", "Finding", "run_checks", "tag_is_set"]
