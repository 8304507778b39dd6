"""AzureEmulator: the public face. Seeds the world, injects failures, hands out transports."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from . import authorization
from .clock import EmulatorClock
from .disk_api import DiskApi
from .disks import OS_DISK_KINDS, make_disks
from .faults import FAILURE_MODES, FaultInjector, FaultStats
from .ids import key
from .patches import PatchApi
from .power import ARC_STATUSES, OS_TYPES, ArcMachine, VirtualMachine, normalize_choice, normalize_power_state
from .run_command_api import RunCommandApi
from .serving import ArmService
from .state import ASYNC_OPERATIONS, FAILABLE_OPERATIONS, FailureRule, MaintenanceRun
from .tags import TagApi
from .throttle import BucketSpec
from .transport import EmulatorTransport

_RUN_MARKER = "/providers/microsoft.maintenance/applyupdates/"


class AzureEmulator(DiskApi, RunCommandApi, PatchApi, TagApi, ArmService):
    """An in-process fake of the ARM endpoints the app calls, served through `transport()`.

    All durations, latency and Retry-After values are simulated seconds; `time_scale` real
    seconds pass per simulated second. Mutable knobs: `operation_durations` (start, deallocate,
    powerOff, snapshot, deleteSnapshot, deleteRunCommand = 2), `readable_subscriptions`, `graph_lag`,
    `poll_retry_after`, `latency`, `throttling`; Run Command: `run_command_start_delay` (PUT to start
    of the script, 1), `run_command_default_seconds` (a script's duration without a rule, 10),
    `run_command_provisioning_seconds` (PUT to the end of an asyncExecution PUT's operation, 2).
    Disks and snapshots: `add_vm(os_disk=, data_disks=)`, `add_snapshot`, `snapshots`, `snapshot`,
    `disk_ids`, `snapshot_requests` (disk_api.py). Run Command (run_command_api.py, run_commands.py):
    `script_behaviour`, `clear_script_behaviours`, `run_command_executions`, `run_commands`,
    `set_arc_status`; `add_vm(os_type=)`, `add_arc_machine(os_type=, status=)`. Update Manager's results
    in Resource Graph: `add_patch_result`, `set_patch_status` (patches.py); the Tags API: `tag_changes`.
    RBAC: `grant`, `actions_called` (authorization.py).
    """

    def __init__(
        self,
        time_scale: float = 1.0,
        latency: float = 0.0,
        throttling: bool = False,
        *,
        buckets: Mapping[str, BucketSpec | tuple[float, float]] | None = None,
        graph_lag: float = 0.0,
        clock: EmulatorClock | None = None,
    ) -> None:
        super().__init__(clock or EmulatorClock(time_scale), latency=latency, throttling=throttling, buckets=buckets)
        self.graph_lag = graph_lag

    def transport(self) -> EmulatorTransport:
        """A new azure-core transport answering from this emulator's state."""
        return EmulatorTransport(self)

    def grant(self, scope: str, actions: Collection[str]) -> None:
        """Assign a role's `actions` at `scope` (a subscription, group or resource id; "/" for all).
        From the first grant on, an ARM request no grant covers gets ARM's 403 AuthorizationFailed
        (authorization.py); `actions_called` counts what every request asked for."""
        with self.lock:
            self.grants = authorization.grant(self.grants, scope, actions)

    # ----- seeding the world ------------------------------------------------------------------

    def add_vm(
        self,
        subscription_id: str,
        resource_group: str,
        name: str,
        *,
        location: str = "westeurope",
        power_state: str = "deallocated",
        tags: Mapping[str, str] | None = None,
        os_disk: str = "managed",
        data_disks: int = 0,
        os_type: str = "Linux",
    ) -> str:
        """Add a VM; returns its ARM id in canonical casing.

        os_type: "Linux" or "Windows" (`storageProfile.osDisk.osType` of its GET and Resource Graph row).

        os_disk: "managed" (a disk resource `{name}-osdisk`), "ephemeral" (local, no disk resource,
        cannot be snapshotted) or "unmanaged" (a VHD page blob); data_disks: how many 64 GB data
        disks `{name}-datadisk-{lun}`, managed unless the OS disk is unmanaged. See disks.py.
        """
        if os_disk not in OS_DISK_KINDS:
            raise ValueError(f"os_disk must be one of {', '.join(OS_DISK_KINDS)}, not {os_disk!r}")
        if data_disks < 0:
            raise ValueError("data_disks must be >= 0")
        os_type = normalize_choice("os_type", os_type, OS_TYPES)
        rid = (
            f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{name}"
        )
        state = normalize_power_state(power_state)
        with self.lock:
            if key(rid) in self.vms:
                raise ValueError(f"VM already exists: {rid}")
            now = self.clock.now()
            vm = VirtualMachine(
                rid, subscription_id, resource_group, name, location, dict(tags or {}),
                vm_id=str(uuid.uuid4()), power_state=state, created=now, os_disk=os_disk, data_disks=data_disks,
                os_type=os_type,
            )  # fmt: skip
            disks = make_disks(vm, now)
            if clash := [d.id for d in disks if key(d.id) in self.disks]:
                raise ValueError(f"disk already exists: {clash[0]}")
            self.vms[key(rid)] = vm
            self.disks.update((key(d.id), d) for d in disks)
        return rid

    def add_arc_machine(
        self,
        subscription_id: str,
        resource_group: str,
        name: str,
        *,
        location: str = "westeurope",
        tags: Mapping[str, str] | None = None,
        os_type: str = "Linux",
        status: str = "Connected",
    ) -> str:
        """Add an Arc-enabled server (in Resource Graph, with run commands); returns its ARM id.

        os_type: "Linux" or "Windows" (Resource Graph: `properties.osType` in lower case); status:
        "Connected", "Disconnected" or "Expired" (`properties.status`; see set_arc_status).
        """
        rid = (
            f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.HybridCompute/machines/{name}"
        )
        machine = ArcMachine(rid, subscription_id, resource_group, name, location, dict(tags or {}),
                             os_type=normalize_choice("os_type", os_type, OS_TYPES),
                             status=normalize_choice("status", status, ARC_STATUSES))  # fmt: skip
        with self.lock:
            self.arc_machines[key(rid)] = machine
        return rid

    def add_run(
        self, correlation_id: str, machine_ids: list[str], *, maintenance_configuration_id: str | None = None,
        window_start: datetime | None = None, status: str = "Pending",
    ) -> None:
        """Register a maintenance run (cancellable) and its applyUpdates rows in Resource Graph, with
        `status` and `window_start` as their startDateTime (default: now)."""
        index = correlation_id.lower().find(_RUN_MARKER)
        if index < 0:
            raise ValueError(f"not an applyUpdates id: {correlation_id!r}")
        config_id = maintenance_configuration_id or correlation_id[:index]
        with self.lock:
            now = self.clock.now()
            run = MaintenanceRun(correlation_id.rstrip("/"), config_id, list(machine_ids), created=now, last_update=now,
                                 status=status, window_start=window_start)
            self.runs[key(correlation_id)] = run

    def assign(self, maintenance_configuration_id: str, machine_ids: list[str]) -> None:
        """Assign machines to a maintenance configuration (configurationAssignments in Resource Graph)."""
        with self.lock:
            self.assignments.setdefault(maintenance_configuration_id, []).extend(machine_ids)

    def add_subscription(self, subscription_id: str, *, name: str | None = None) -> None:
        """Make a subscription known (Resource Graph `resourcecontainers`), with a display name
        (default: its id). Subscriptions of seeded resources are known without this."""
        with self.lock:
            self.subscriptions[subscription_id.lower()] = (subscription_id, name or subscription_id)

    def set_power_state(self, resource_id: str, power_state: str) -> None:
        """Change a VM's state out of band, as someone in the portal would."""
        with self.lock:
            self.find_vm(resource_id).set_power_state(normalize_power_state(power_state), self.clock.now())

    def set_agent_ready(self, vm_id: str, ready: bool) -> None:
        """Make a VM's guest agent (un)responsive: a running VM then reports `vmAgent` Not Ready
        (`ProvisioningState/Unavailable`) in its instance view. `vm_id` is the VM's ARM id."""
        with self.lock:
            self.find_vm(vm_id).agent_ready = ready

    # ----- observing it --------------------------------------------------------------------------

    def vm_power_state(self, resource_id: str) -> str:
        """The VM's current true power state, e.g. 'PowerState/deallocated'."""
        with self.lock:
            vm = self.find_vm(resource_id)
            vm.settle(self.clock.now())
            return f"PowerState/{vm.power_state}"

    def vm_state_changes(self, resource_id: str) -> list[str]:
        """Every power state the VM has been in, oldest first, starting with the initial one."""
        with self.lock:
            vm = self.find_vm(resource_id)
            vm.settle(self.clock.now())
            return [f"PowerState/{state}" for _, state in vm.history]

    def actions(self, resource_id: str) -> list[str]:
        """Names of the power actions accepted (202) for the VM, in order."""
        with self.lock:
            return list(self.find_vm(resource_id).actions)

    def run_status(self, correlation_id: str) -> str:
        """'Pending' or 'Cancelled'."""
        with self.lock:
            return self.runs[key(correlation_id)].status

    def count(self, method: str | None = None, path_contains: str | None = None, status: int | None = None) -> int:
        """How many recorded ARM requests match (path matched case-insensitively)."""
        needle = path_contains.lower() if path_contains else None
        with self.lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method.upper())
                and (needle is None or needle in r.path.lower())
                and (status is None or r.status == status)
            )

    # ----- failures ------------------------------------------------------------------------------

    def fail(
        self,
        operation: str,
        resource_id: str | None = None,
        *,
        status: int = 500,
        code: str = "InternalError",
        message: str = "Injected failure.",
        times: int | None = None,
        mode: str = "request",
    ) -> FailureRule:
        """Make `operation` fail, for one resource (None: any), `times` times (None: always).

        mode="request": the HTTP call answers `status` with an ARM error body.
        mode="operation": start/deallocate/powerOff/snapshot/deleteSnapshot are accepted (202), then the
        operation ends Failed (`status` is then unused; a snapshot is then left Failed, a snapshot being
        deleted stays).
        mode="reset": the connection drops before the request reaches ARM; nothing is applied. The
        in-process transport raises ServiceResponseError, as azure-core's RequestsTransport does.
        mode="refused": no connection; nothing is sent. ServiceRequestError.
        mode="lost-answer": the request is applied (a start starts the VM), then the connection drops:
        ServiceResponseError.
        mode="applied-error": the request is applied, then ARM answers `status` with an ARM error body.
        The last two strike only once the service has applied the request (a refusal such as a 404 or
        409 reaches the client unchanged and leaves the rule armed).
        Failures fire in the order they were added; throttling comes first.
        Operations: start, deallocate, powerOff, instanceView, get (VM GET), cancel, getRun (applyUpdates
        GET), graph, token, snapshot (snapshot PUT), deleteSnapshot, getSnapshot, disk (disk GET),
        operationStatus (GET of a compute operation, DiskOperation or HybridCompute operationStatus;
        `resource_id` is then the VM's, snapshot's or run command's), runCommand (run command PUT, VM or
        Arc; mode="operation": accepted, the script never runs, the operation and execution end Failed),
        getRunCommand, deleteRunCommand (mode="operation": the delete fails, the command stays), tags
        (Tags API PATCH of a VM or Arc machine), getTags.
        `resource_id` is the VM's, snapshot's or disk's ARM id; a rule for a machine also strikes its
        run commands (or give the run command's id). The token endpoint takes mode="request" only.
        """
        if operation not in FAILABLE_OPERATIONS:
            known = ", ".join(sorted(FAILABLE_OPERATIONS))
            raise ValueError(f"unknown operation {operation!r}; expected one of {known}")
        if mode not in FAILURE_MODES:
            raise ValueError(f"mode must be one of {', '.join(FAILURE_MODES)}, not {mode!r}")
        if mode == "operation" and operation not in ASYNC_OPERATIONS:
            raise ValueError(f"mode='operation' applies to {', '.join(sorted(ASYNC_OPERATIONS))} only")
        if operation == "token" and mode != "request":
            raise ValueError("the token endpoint takes mode='request' only")
        resource_key = key(resource_id) if resource_id else None
        rule = FailureRule(operation, resource_key, status, code, message, times, mode)
        with self.lock:
            self.failures.append(rule)
        return rule

    def clear_failures(self) -> None:
        """Disarm every injected failure (not the random faults: see clear_faults)."""
        with self.lock:
            self.failures.clear()

    def inject_faults(
        self,
        rate: float,
        *,
        seed: int,
        kinds: Sequence[str] = ("500", "503", "reset"),
        operations: Collection[str] | None = None,
        applied_share: float = 0.0,
    ) -> FaultStats:
        """Fail each ARM request of `operations` (None: every route) with probability `rate`.

        The kind is drawn uniformly from `kinds`: "500", "502", "503", "504" (that status, an ARM error
        body, no Retry-After), "reset", "refused" (as in `fail`). For the writes (start, deallocate,
        powerOff, snapshot, deleteSnapshot, cancel, runCommand, deleteRunCommand, tags) a share `applied_share`
        of the faults strike after the write was applied: a reset becomes a lost answer, a status an
        applied error. Deterministic for a given `seed` and order of requests; the token endpoint is
        never faulted. Replaces any earlier injection; returns the live counts.
        """
        faultable = FAILABLE_OPERATIONS - {"token"}
        unknown = sorted(set(operations or ()) - faultable)
        if unknown:
            known = ", ".join(sorted(faultable))
            raise ValueError(f"cannot inject faults into {unknown[0]!r}; expected some of {known}")
        injector = FaultInjector(rate, seed=seed, kinds=kinds, operations=operations, applied_share=applied_share)
        with self.lock:
            self.fault_injector = injector
        return injector.stats

    def clear_faults(self) -> None:
        """Disarm the random faults of `inject_faults` (its counts stay as they were)."""
        with self.lock:
            self.fault_injector = None
