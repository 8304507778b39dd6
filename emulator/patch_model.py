"""Update Manager's patch installation results, and their Resource Graph rows (`patchinstallationresources`).

A result is a list of revisions: what the index shows from a simulated instant on. Resource Graph
shows the last revision already visible, so a result added with `appears_after` lags behind the
machine, and a later status change can lag too. The global `graph_lag` does not apply here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .clock import EmulatorClock
from .ids import TENANT_ID
from .kql import ParsedQuery
from .power import normalize_choice

STATUSES = ("NotStarted", "InProgress", "Failed", "Succeeded", "CompletedWithWarnings")
FINAL_STATUSES = frozenset({"Failed", "Succeeded", "CompletedWithWarnings"})
REBOOT_STATUSES = ("NotNeeded", "Required", "Started", "Failed", "Completed")
INSTALLATION_STATES = ("Installed", "Failed", "Pending", "NotSelected", "Excluded")
RUN_ID_FORMS = ("full", "run")
RESULT_TYPES = {False: "microsoft.compute/virtualmachines/patchinstallationresults",
                True: "microsoft.hybridcompute/machines/patchinstallationresults"}  # fmt: skip
PATCH_TYPES = {arc: f"{type_}/softwarepatches" for arc, type_ in RESULT_TYPES.items()}
RESULTS_PATH = "/patchInstallationResults/"
PATCHES_PATH = "/softwarePatches/"
_PATCH_KEYS = frozenset({"name", "kb_id", "version", "classifications", "state", "reboot_required"})
_LINUX_PACKAGES = ("openssl", "libssl3", "curl", "openssh-server", "linux-image-azure", "tzdata", "python3", "sudo")
_CLASSIFICATIONS = {"Windows": (("Security", "Critical"), ("Critical",), ("Updates",)),
                    "Linux": (("Security",), ("Critical",), ("Other",))}  # fmt: skip


@dataclass(frozen=True)
class PatchCounts:
    """How many updates of a result are in each installation state."""

    installed: int = 0
    failed: int = 0
    pending: int = 0
    excluded: int = 0
    not_selected: int = 0

    def __post_init__(self) -> None:
        negative = [name for name, n in self.by_state().items() if n < 0]
        if negative:
            raise ValueError(f"patch counts must be >= 0 (the {negative[0]} count is not)")

    def by_state(self) -> dict[str, int]:
        return {"Installed": self.installed, "Failed": self.failed, "Pending": self.pending,
                "Excluded": self.excluded, "NotSelected": self.not_selected}  # fmt: skip


@dataclass(frozen=True)
class SoftwarePatch:
    """One update of a result (a `.../softwarepatches` child row); kb_id for Windows, version for Linux."""

    id: str
    name: str
    patch_name: str
    kb_id: str | None
    version: str | None
    classifications: tuple[str, ...]
    state: str
    reboot_required: bool = False


@dataclass(frozen=True)
class Revision:
    """What Resource Graph shows of a result from `visible_at` (simulated seconds) on."""

    visible_at: float
    status: str
    counts: PatchCounts
    reboot_status: str
    window_exceeded: bool
    error: dict[str, Any] | None
    patches: tuple[SoftwarePatch, ...]
    last_modified: float


@dataclass
class PatchResult:
    """One machine's installation result for one run."""

    id: str
    machine_id: str
    arc: bool
    subscription_id: str
    resource_group: str
    location: str
    os_type: str  # Windows | Linux
    run_id: str  # properties.maintenanceRunId
    activity_id: str
    started: float
    default_patches: bool  # the patches were generated from the counts (regenerated when they change)
    revisions: list[Revision] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.id.rsplit("/", 1)[-1]

    def visible(self, now: float) -> Revision | None:
        """The revision the index shows at `now`: the latest one made that is visible by then."""
        for revision in reversed(self.revisions):
            if revision.visible_at <= now:
                return revision
        return None


def normalize_error(error: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`errorDetails` as Resource Graph shows it: {code, message, details: [...]}, or None."""
    if error is None:
        return None
    unknown = sorted(set(error) - {"code", "message", "details"})
    if unknown:
        raise ValueError(f"error takes code, message and details, not {unknown[0]!r}")
    return {"code": str(error.get("code", "")), "message": str(error.get("message", "")),
            "details": [dict(d) for d in error.get("details") or []]}  # fmt: skip


def _patch_id(result_id: str, index: int) -> tuple[str, str]:
    """A child's (id, name): stable per result and position, so a regenerated list keeps its ids."""
    name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{result_id.lower()}#{index}"))
    return f"{result_id}{PATCHES_PATH}{name}", name


def default_patches(result_id: str, os_type: str, counts: PatchCounts) -> tuple[SoftwarePatch, ...]:
    """Updates matching `counts`: the installed ones first, then failed, pending, excluded, not selected."""
    states = [state for state, n in counts.by_state().items() for _ in range(n)]
    patches = []
    for index, state in enumerate(states):
        patch_id, name = _patch_id(result_id, index)
        classifications = _CLASSIFICATIONS[os_type][index % 3]
        if os_type == "Windows":
            kb = str(5040000 + index)
            patches.append(SoftwarePatch(patch_id, name, f"Security Update for Windows Server (KB{kb})", kb, None,
                                         classifications, state))  # fmt: skip
        else:
            package = _LINUX_PACKAGES[index % len(_LINUX_PACKAGES)]
            suffix = f"-{index // len(_LINUX_PACKAGES)}" if index >= len(_LINUX_PACKAGES) else ""
            patches.append(SoftwarePatch(patch_id, name, f"{package}{suffix}", None, f"1.{index}.0-1ubuntu0.{index}",
                                         classifications, state))  # fmt: skip
    return tuple(patches)


def given_patches(result_id: str, os_type: str, patches: Sequence[Mapping[str, Any]]) -> tuple[SoftwarePatch, ...]:
    """Updates from dicts {name, kb_id or version, classifications, state, reboot_required}."""
    made = []
    for index, patch in enumerate(patches):
        unknown = sorted(set(patch) - _PATCH_KEYS)
        if unknown:
            raise ValueError(f"a patch takes {', '.join(sorted(_PATCH_KEYS))}, not {unknown[0]!r}")
        if "name" not in patch:
            raise ValueError("every patch needs a name")
        patch_id, name = _patch_id(result_id, index)
        kb_id, version = patch.get("kb_id"), patch.get("version")
        if kb_id is None and version is None:
            kb_id, version = (str(5040000 + index), None) if os_type == "Windows" else (None, f"1.{index}.0")
        state = normalize_choice("state", str(patch.get("state", "Installed")), INSTALLATION_STATES)
        classifications = tuple(str(c) for c in patch.get("classifications") or ("Security",))
        made.append(SoftwarePatch(patch_id, name, str(patch["name"]), None if kb_id is None else str(kb_id),
                                  None if version is None else str(version), classifications, state,
                                  bool(patch.get("reboot_required", False))))  # fmt: skip
    return tuple(made)


def _columns(row_id: str, type_: str, result: PatchResult) -> dict[str, Any]:
    return {
        "id": row_id, "name": row_id.rsplit("/", 1)[-1], "type": type_, "tenantId": TENANT_ID, "kind": "",
        "location": result.location, "resourceGroup": result.resource_group, "subscriptionId": result.subscription_id,
        "managedBy": "", "sku": None, "plan": None, "tags": None, "identity": None, "zones": None,
        "extendedLocation": None,
    }  # fmt: skip


def result_row(result: PatchResult, revision: Revision, clock: EmulatorClock) -> dict[str, Any]:
    """The `patchinstallationresults` row of a result as `revision` has it."""
    row = _columns(result.id, RESULT_TYPES[result.arc], result)
    counts = revision.counts
    row["properties"] = {
        "status": revision.status,
        "maintenanceRunId": result.run_id,
        "installationActivityId": result.activity_id,
        "startDateTime": clock.isoformat(result.started),
        "lastModifiedDateTime": clock.isoformat(revision.last_modified),
        "installedPatchCount": counts.installed,
        "failedPatchCount": counts.failed,
        "pendingPatchCount": counts.pending,
        "excludedPatchCount": counts.excluded,
        "notSelectedPatchCount": counts.not_selected,
        "rebootStatus": revision.reboot_status,
        "maintenanceWindowExceeded": revision.window_exceeded,
        "errorDetails": revision.error,
        "osType": result.os_type,
        "patchServiceUsed": "WU" if result.os_type == "Windows" else "APT",
        "startedBy": "Platform",
    }
    return row


def patch_row(result: PatchResult, revision: Revision, patch: SoftwarePatch, clock: EmulatorClock) -> dict[str, Any]:
    """The `softwarepatches` child row of one update."""
    row = _columns(patch.id, PATCH_TYPES[result.arc], result)
    properties: dict[str, Any] = {"patchName": patch.patch_name}
    if patch.kb_id is not None:
        properties["kbId"] = patch.kb_id
    if patch.version is not None:
        properties["version"] = patch.version
    properties.update(
        classifications=list(patch.classifications),
        installationState=patch.state,
        rebootRequired=patch.reboot_required,
        lastModifiedDateTime=clock.isoformat(revision.last_modified),
    )
    row["properties"] = properties
    return row


def patch_table_rows(
    results: Iterable[PatchResult], parsed: ParsedQuery, clock: EmulatorClock, now: float
) -> Iterator[dict[str, Any]]:
    """The `patchinstallationresources` rows visible at `now`, before filtering. Only the asked-for types,
    runs (`properties.maintenanceRunId`) and parents (an alias that is `id` up to '/softwarePatches/')
    are built: a big fleet's queries stay cheap."""
    types = parsed.values_of("type")
    run_ids = parsed.values_of("properties.maintenanceRunId")
    parents = parsed.prefix_values("id", PATCHES_PATH)
    for result in results:
        revision = result.visible(now)
        if revision is None:
            continue
        of_run = run_ids is None or result.run_id.lower() in run_ids
        if of_run and (types is None or RESULT_TYPES[result.arc] in types):
            yield result_row(result, revision, clock)
        of_parent = parents is None or result.id.lower() in parents
        if of_parent and (types is None or PATCH_TYPES[result.arc] in types):
            yield from (patch_row(result, revision, patch, clock) for patch in revision.patches)
