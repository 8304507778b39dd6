"""What the pre phase's steps hand each other within one invocation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from handlers.adapters.inventory import RunMachine, VmView
from handlers.adapters.operations import Operation
from handlers.core.status import Outcome
from handlers.ledger import MachineRecord, SnapshotRecord

# Outcomes after which a retried worker leaves a machine or a snapshot alone.
FINAL = frozenset({Outcome.SUCCEEDED, Outcome.FAILED, Outcome.SKIPPED, Outcome.NOT_NEEDED, Outcome.UNKNOWN,
                   Outcome.PLANNED, Outcome.REUSED})


@dataclass
class PreWork:
    given_machines: list[RunMachine] | None = None  # a rehearsal's machines: no discovery
    machines: list[RunMachine] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # subscriptions the identity cannot read
    unchecked: str = ""  # why the run's machines could not be established (the verdict fails closed)
    views: dict[str, VmView] = field(default_factory=dict)
    handed_views: dict[str, VmView] | None = None  # a group's, from the coordinator's hand-off
    records: dict[str, MachineRecord] = field(default_factory=dict)  # by lower-cased id
    snapshots: dict[str, SnapshotRecord] = field(default_factory=dict)  # by row key
    new_rows: list[Any] = field(default_factory=list)  # planned rows not yet in the ledger
    fresh: set[str] = field(default_factory=set)  # machines first planned by this attempt
    start_ops: dict[str, Operation] = field(default_factory=dict)
    snapshot_ops: dict[str, Operation] = field(default_factory=dict)
    guest_commands: dict[str, list[Any]] = field(default_factory=dict)  # machine -> GuestCommands due
    guest_ops: dict[str, list[Operation]] = field(default_factory=dict)  # machine -> their operations
    run_views: dict[str, Any] = field(default_factory=dict)  # guest op key -> its command's RunView
    check_results: list[Any] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # against the run, for the verdict
    verdict: str = ""
    cancel: str = ""


def is_due(row: MachineRecord | SnapshotRecord) -> bool:
    """Still to do, as stored (a concurrent attempt's row wins over our plan)."""
    if isinstance(row, MachineRecord):
        return row.pre_action == "start" and row.pre_outcome not in FINAL
    return row.outcome not in FINAL


def summarize(work: PreWork) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for record in work.records.values():
        outcomes[record.pre_outcome] = outcomes.get(record.pre_outcome, 0) + 1
    snapshot_outcomes: dict[str, int] = {}
    for snapshot in work.snapshots.values():
        snapshot_outcomes[snapshot.outcome] = snapshot_outcomes.get(snapshot.outcome, 0) + 1
    guest: dict[str, int] = {}
    for record in work.records.values():
        if record.guest_pre_outcome:
            guest[record.guest_pre_outcome] = guest.get(record.guest_pre_outcome, 0) + 1
    waves = sorted({r.wave for r in work.records.values() if r.wave is not None})
    return {"machines": len(work.records), "outcomes": outcomes, "snapshots": snapshot_outcomes,
            "verdict": work.verdict, "cancel": work.cancel,
            **({"guest": guest} if guest else {}), **({"waves": waves} if waves else {})}
