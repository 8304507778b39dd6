"""The emulated world in one place: machines, runs, operations, injected failures, the request log."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from .clock import EmulatorClock
from .disks import Disk
from .faults import FaultInjector
from .ids import key
from .messages import ArmError
from .patch_model import PatchResult
from .power import ArcMachine, Operation, VirtualMachine
from .run_command_model import RunCommandStore
from .snapshot_model import DiskOperation, Snapshot, settle_snapshots

if TYPE_CHECKING:
    from .authorization import Grant

FAILABLE_OPERATIONS = frozenset(
    {"start", "deallocate", "powerOff", "instanceView", "get", "cancel", "graph", "token"}
    | {"snapshot", "deleteSnapshot", "getSnapshot", "disk"}
    # GETs of async operation status (compute operations and DiskOperations) and of an applyUpdates run.
    | {"operationStatus", "getRun"}
    # Managed Run Command (VMs and Arc machines): PUT, GET, DELETE.
    | {"runCommand", "getRunCommand", "deleteRunCommand"}
    # The Tags API of a VM or Arc machine: PATCH, GET.
    | {"tags", "getTags"}
)
# Operations whose failure can also be injected into the async operation (mode="operation").
ASYNC_OPERATIONS = frozenset({"start", "deallocate", "powerOff", "snapshot", "deleteSnapshot"} | {"runCommand",
                             "deleteRunCommand"})  # fmt: skip


@dataclass
class MaintenanceRun:
    """One Update Manager run (its correlation id) and the machines in its scope."""

    correlation_id: str
    maintenance_configuration_id: str
    machine_ids: list[str]
    created: float
    status: str = "Pending"
    last_update: float = 0.0
    cancel_requests: int = 0
    window_start: datetime | None = None  # the rows' startDateTime; None: when the run was added


@dataclass
class FailureRule:
    """An injected failure; see AzureEmulator.fail. `fired` counts how often it struck."""

    operation: str
    resource_key: str | None
    status: int
    code: str
    message: str
    times: int | None
    mode: str
    fired: int = 0

    def matches(self, operation: str, resource_id: str | None) -> bool:
        if self.operation != operation or self.times == 0:
            return False
        if self.resource_key is None:
            return True
        # A rule for a resource also strikes its child resources (a VM's run commands).
        target = key(resource_id) if resource_id is not None else ""
        return target == self.resource_key or target.startswith(self.resource_key + "/")

    def fire(self) -> ArmError:
        self.fired += 1
        if self.times is not None:
            self.times -= 1
        return ArmError(self.code, self.message)


class TagChange(NamedTuple):
    """One accepted Tags API PATCH: when (simulated seconds), on which machine (canonical id), which
    operation (Merge, Replace, Delete) with which tags."""

    time: float
    machine_id: str
    operation: str
    tags: dict[str, str]


@dataclass(frozen=True)
class RecordedRequest:
    """One ARM request the emulator answered or dropped (token requests are only counted).

    `status` is 0 for a dropped connection; `fault` names the injected failure mode ("" for none):
    request, operation, reset, refused, lost-answer, applied-error.
    """

    method: str
    url: str
    path: str
    status: int
    time: float
    fault: str = ""


class EmulatorModel:
    """State shared by every transport of one emulator; `lock` guards all of it."""

    def __init__(self, clock: EmulatorClock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.vms: dict[str, VirtualMachine] = {}
        self.arc_machines: dict[str, ArcMachine] = {}
        self.runs: dict[str, MaintenanceRun] = {}
        # maintenance configuration id (lower) -> machine ids assigned to it
        self.assignments: dict[str, list[str]] = {}
        self.operations: dict[str, Operation] = {}
        self.disks: dict[str, Disk] = {}
        self.snapshot_records: dict[str, Snapshot] = {}
        self.deleted_snapshot_records: list[Snapshot] = []  # still shown by a lagging Resource Graph
        self.deleting_snapshots: dict[str, Snapshot] = {}  # with a delete in flight (settle_snapshots)
        self.disk_operations: dict[str, DiskOperation] = {}
        self.failures: list[FailureRule] = []
        self.fault_injector: FaultInjector | None = None
        self.requests: list[RecordedRequest] = []
        self.token_requests = 0
        self.operation_durations: dict[str, float] = {
            "start": 60.0,
            "deallocate": 90.0,
            "powerOff": 30.0,
            "snapshot": 30.0,
            "deleteSnapshot": 5.0,
            "deleteRunCommand": 2.0,
        }
        self.run_command_store = RunCommandStore()
        # Run Command, in simulated seconds: PUT to start of the script; how long a script runs when
        # no script_behaviour rule says otherwise; PUT to the end of an asyncExecution PUT's operation.
        self.run_command_start_delay = 1.0
        self.run_command_default_seconds = 10.0
        self.run_command_provisioning_seconds = 2.0
        # subscription id (lower) -> (id, display name), from AzureEmulator.add_subscription
        self.subscriptions: dict[str, tuple[str, str]] = {}
        self.readable_subscriptions: set[str] | None = None
        self.graph_lag = 0.0
        # RBAC (authorization.py): None checks nothing; the actions every ARM request asked for.
        self.grants: list[Grant] | None = None
        self.actions_called: Counter[str] = Counter()
        # Update Manager's installation results (patch_model.py), by result id (lower).
        self.patch_results: dict[str, PatchResult] = {}
        # Tags API: the changes accepted, and each changed machine's tags over time (key -> [(t, tags)],
        # from -inf with the tags before the first change) for a lagging Resource Graph.
        self.tag_change_log: list[TagChange] = []
        self.tag_history: dict[str, list[tuple[float, dict[str, str]]]] = {}
        # Retry-After sent while an operation runs, in simulated seconds. None (the default) lets the
        # client's polling_interval decide; a Retry-After of 0 would make pollers fall back to 30 s.
        self.poll_retry_after: float | None = None

    def find_vm(self, resource_id: str) -> VirtualMachine:
        """The VM with this id (any casing); KeyError if unknown."""
        return self.vms[key(resource_id)]

    def tags_at(self, machine_id: str, current: dict[str, str], t: float) -> dict[str, str]:
        """A machine's tags as of simulated time `t` (`current` when the Tags API never changed them)."""
        for changed, tags in reversed(self.tag_history.get(key(machine_id), [])):
            if changed <= t:
                return tags
        return current

    def record_tags(self, machine_id: str, before: dict[str, str], after: dict[str, str], now: float) -> None:
        """Remember that a machine's tags changed at `now` (for tags_at)."""
        history = self.tag_history.setdefault(key(machine_id), [(-math.inf, dict(before))])
        history.append((now, dict(after)))

    def settle_snapshots(self, now: float) -> None:
        """Apply the snapshot deletes that have ended (every snapshot reader calls this first)."""
        settle_snapshots(self.snapshot_records, self.deleted_snapshot_records, now, self.deleting_snapshots)

    def take_failure(
        self, operation: str, resource_id: str | None, mode: str | Collection[str]
    ) -> tuple[FailureRule, ArmError] | None:
        """The first armed failure of `mode` (or of any of these modes) for this call, consumed; None
        when the call should succeed."""
        modes = (mode,) if isinstance(mode, str) else mode
        for rule in self.failures:
            if rule.mode in modes and rule.matches(operation, resource_id):
                return rule, rule.fire()
        return None
