"""AzureEmulator's public API for Update Manager's installation results in Resource Graph.

    result = emu.add_patch_result(vm, run_id, status="InProgress", pending=4, appears_after=120)
    emu.set_patch_status(result, "Failed", installed=3, failed=1, error={"code": "...", "message": "..."})

Rows: table `patchinstallationresources` (patch_model.py). Nothing here installs anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from .ids import key, parse_resource_id
from .patch_model import (
    FINAL_STATUSES,
    REBOOT_STATUSES,
    RESULTS_PATH,
    RUN_ID_FORMS,
    STATUSES,
    PatchCounts,
    PatchResult,
    Revision,
    default_patches,
    given_patches,
    normalize_error,
)
from .power import normalize_choice
from .state import EmulatorModel

_RUN_MARKER = "/providers/microsoft.maintenance/applyupdates/"


def _run_id(correlation_id: str, form: str) -> str:
    """`maintenanceRunId` for a run: the full applyUpdates id, or only its run part (the last segment)."""
    correlation_id = correlation_id.rstrip("/")
    if _RUN_MARKER not in correlation_id.lower():
        raise ValueError(f"not an applyUpdates id: {correlation_id!r}")
    form = normalize_choice("run_id_form", form, RUN_ID_FORMS)
    return correlation_id if form == "full" else correlation_id.rsplit("/", 1)[-1]


def _non_negative(name: str, value: float) -> float:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value!r}")
    return float(value)


class PatchApi(EmulatorModel):
    """Mixed into AzureEmulator (which inherits the model through ArmService)."""

    def add_patch_result(
        self,
        machine_id: str,
        correlation_id: str,
        *,
        status: str = "Succeeded",
        installed: int = 3,
        failed: int = 0,
        pending: int = 0,
        excluded: int = 0,
        not_selected: int = 0,
        reboot_status: str = "NotNeeded",
        window_exceeded: bool = False,
        error: Mapping[str, Any] | None = None,
        patches: Sequence[Mapping[str, Any]] | None = None,
        appears_after: float = 0.0,
        run_id_form: str = "full",
        started: datetime | None = None,
        duration: float = 600.0,
    ) -> str:
        """Record one machine's installation result for the run `correlation_id` (an applyUpdates id);
        returns the result id, `<machine id>/patchInstallationResults/<guid>`.

        machine_id: a VM or Arc machine added before (its type, location and osType come from it).
        status: NotStarted, InProgress, Failed, Succeeded, CompletedWithWarnings (not checked against
        the counts); reboot_status: NotNeeded, Required, Started, Failed, Completed; error: errorDetails
        {code, message, details} or None. patches: the child updates as dicts {name, kb_id or version,
        classifications, state (Installed, Failed, Pending, NotSelected, Excluded), reboot_required};
        by default generated to match the counts (installed ones Installed, failed ones Failed, ...).
        Given patches are not checked against the counts.
        appears_after: simulated seconds from now until Resource Graph shows the result (the index lags
        the machine); `graph_lag` does not apply. run_id_form: "full" (`maintenanceRunId` is the
        correlation id) or "run" (only its run part, the last segment).
        started: the aware (or naive meaning UTC) start time; by default `duration` simulated seconds
        ago for a final status, now otherwise. `lastModifiedDateTime` is start + duration for a final
        status, now otherwise.
        """
        status = normalize_choice("status", status, STATUSES)
        reboot_status = normalize_choice("reboot_status", reboot_status, REBOOT_STATUSES)
        run_id = _run_id(correlation_id, run_id_form)
        counts = PatchCounts(installed, failed, pending, excluded, not_selected)
        lag, duration = _non_negative("appears_after", appears_after), _non_negative("duration", duration)
        details = normalize_error(error)
        with self.lock:
            now = self.clock.now()
            vm, arc = self.vms.get(key(machine_id)), self.arc_machines.get(key(machine_id))
            machine = vm or arc
            if machine is None:
                raise ValueError(f"unknown machine (add it with add_vm or add_arc_machine first): {machine_id!r}")
            final = status in FINAL_STATUSES
            if started is None:
                start = now - duration if final else now
            else:
                aware = started if started.tzinfo else started.replace(tzinfo=UTC)
                start = (aware - self.clock.epoch).total_seconds()
            result_id = f"{machine.id}{RESULTS_PATH}{uuid.uuid4()}"
            parts = parse_resource_id(machine.id)
            made = default_patches(result_id, machine.os_type, counts) if patches is None else \
                given_patches(result_id, machine.os_type, patches)  # fmt: skip
            result = PatchResult(
                result_id, machine.id, arc is not None, parts["sub"], parts["rg"], machine.location, machine.os_type,
                run_id, str(uuid.uuid4()), start, default_patches=patches is None,
            )  # fmt: skip
            result.revisions.append(Revision(now + lag, status, counts, reboot_status, window_exceeded, details, made,
                                             last_modified=start + duration if final else now))  # fmt: skip
            self.patch_results[key(result_id)] = result
        return result_id

    def set_patch_status(
        self,
        result_id: str,
        status: str,
        *,
        installed: int | None = None,
        failed: int | None = None,
        pending: int | None = None,
        excluded: int | None = None,
        not_selected: int | None = None,
        reboot_status: str | None = None,
        window_exceeded: bool | None = None,
        error: Mapping[str, Any] | None = None,
        patches: Sequence[Mapping[str, Any]] | None = None,
        appears_after: float = 0.0,
    ) -> None:
        """Move a result on (say, from InProgress to Failed) at now; Resource Graph shows the change
        `appears_after` simulated seconds later, the earlier state until then.

        Counts, reboot_status and window_exceeded left None keep their values; error replaces
        errorDetails (None: none). patches None: generated patches follow the new counts (each keeps
        its id by position), given ones stay as they were; `lastModifiedDateTime` becomes now.
        KeyError for an unknown result id.
        """
        status = normalize_choice("status", status, STATUSES)
        lag = _non_negative("appears_after", appears_after)
        details = normalize_error(error)
        with self.lock:
            now = self.clock.now()
            result = self.patch_results[key(result_id)]
            last = result.revisions[-1]
            changed = {name: value for name, value in (("installed", installed), ("failed", failed),
                       ("pending", pending), ("excluded", excluded), ("not_selected", not_selected))
                       if value is not None}  # fmt: skip
            counts = replace(last.counts, **changed)
            if patches is not None:
                made = given_patches(result.id, result.os_type, patches)
                result.default_patches = False
            elif result.default_patches:
                made = default_patches(result.id, result.os_type, counts)
            else:
                made = last.patches
            reboot = last.reboot_status if reboot_status is None else \
                normalize_choice("reboot_status", reboot_status, REBOOT_STATUSES)  # fmt: skip
            exceeded = last.window_exceeded if window_exceeded is None else window_exceeded
            result.revisions.append(Revision(now + lag, status, counts, reboot, exceeded, details, made, now))
