"""What Update Manager installed in each machine during a run, from Resource Graph
`patchinstallationresources` (kept there 30 days; the index lags the machines by minutes).

A result is tied to the run by `properties.maintenanceRunId`, compared case-insensitively with
both the run's correlation id and its run part (which form Azure writes is not documented). A
machine with several results for the run (a retried installation) is read from the newest. The
failed updates of a failed result are read from its `softwarepatches` children.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from azure.mgmt.resourcegraph import ResourceGraphClient

from handlers.adapters.inventory import IDS_PER_QUERY, kql_literal, query_all
from handlers.core.ids import name_of
from handlers.core.reading import parse_time_or_none

RESULT_TYPES = ("microsoft.compute/virtualmachines/patchinstallationresults",
                "microsoft.hybridcompute/machines/patchinstallationresults")
# Resource Graph shows a machine's results only to an identity that can read them (Reader has both).
PATCH_RESULTS_READ = ("Microsoft.ResourceGraph/resources/read",
                      "Microsoft.Compute/virtualMachines/patchInstallationResults/read",
                      "Microsoft.HybridCompute/machines/patchInstallationResults/read")
FINAL_STATUSES = frozenset({"succeeded", "failed", "completedwithwarnings"})
_RESULTS_QUERY = """patchinstallationresources
| where type in~ ({types})
| where properties.maintenanceRunId in~ ({runs})
| project id, properties"""
_FAILED_UPDATES_QUERY = """patchinstallationresources
| where type in~ ({types})
| extend resultId = tolower(substring(id, 0, indexof(id, '/softwarePatches/')))
| where resultId in~ ({results})
| where properties.installationState =~ 'Failed'
| project id, resultId, properties"""
_MARKER = "/patchinstallationresults/"
_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class FailedUpdate:
    name: str
    kb_id: str = ""
    version: str = ""
    classifications: tuple[str, ...] = ()


@dataclass(frozen=True)
class PatchResult:
    """One machine's installation in the run, as Resource Graph last showed it."""

    machine_id: str
    result_id: str
    status: str  # NotStarted | InProgress | Failed | Succeeded | CompletedWithWarnings
    installed: int = 0
    failed: int = 0
    pending: int = 0
    reboot_status: str = ""
    window_exceeded: bool = False
    error: str = ""
    started_at: datetime | None = None
    modified_at: datetime | None = None
    failed_updates: tuple[FailedUpdate, ...] = field(default=())

    @property
    def final(self) -> bool:
        return self.status.lower() in FINAL_STATUSES


def find_patch_results(graph: ResourceGraphClient, subscription_ids: Sequence[str], correlation_id: str,
                       machine_ids: Sequence[str]) -> dict[str, PatchResult]:
    """The run's result per machine (lower-cased id) among `machine_ids`; machines without one are absent."""
    wanted = {m.lower() for m in machine_ids}
    runs = ", ".join(f"'{kql_literal(v)}'" for v in dict.fromkeys((correlation_id, name_of(correlation_id))))
    types = ", ".join(f"'{t}'" for t in RESULT_TYPES)
    newest: dict[str, PatchResult] = {}
    for row in query_all(graph, subscription_ids, _RESULTS_QUERY.format(types=types, runs=runs)):
        result = _result(row)
        if result is None or result.machine_id.lower() not in wanted:
            continue
        key = result.machine_id.lower()
        seen = newest.get(key)
        if seen is None or _later(result, seen):
            newest[key] = result
    failed = [r.result_id for r in newest.values() if r.failed > 0 and r.final]
    updates = _failed_updates(graph, subscription_ids, failed) if failed else {}
    return {key: _with_updates(result, updates.get(result.result_id.lower(), ())) for key, result in newest.items()}


def _failed_updates(graph: ResourceGraphClient, subscription_ids: Sequence[str],
                    result_ids: Sequence[str]) -> dict[str, tuple[FailedUpdate, ...]]:
    types = ", ".join(f"'{t}/softwarepatches'" for t in RESULT_TYPES)
    found: dict[str, list[FailedUpdate]] = {}
    for start in range(0, len(result_ids), IDS_PER_QUERY):
        chunk = ", ".join(f"'{kql_literal(r.lower())}'" for r in result_ids[start:start + IDS_PER_QUERY])
        for row in query_all(graph, subscription_ids, _FAILED_UPDATES_QUERY.format(types=types, results=chunk)):
            props = row.get("properties") or {}
            if not isinstance(props, Mapping):
                continue
            classes = props.get("classifications") or []
            found.setdefault(str(row.get("resultId") or "").lower(), []).append(FailedUpdate(
                name=str(props.get("patchName") or "?"), kb_id=str(props.get("kbId") or ""),
                version=str(props.get("version") or ""),
                classifications=tuple(str(c) for c in classes) if isinstance(classes, list) else ()))
    return {key: tuple(value) for key, value in found.items()}


def _result(row: Mapping[str, Any]) -> PatchResult | None:
    result_id = str(row.get("id") or "")
    index = result_id.lower().find(_MARKER)
    props = row.get("properties")
    if index < 0 or not isinstance(props, Mapping):
        return None
    return PatchResult(
        machine_id=result_id[:index], result_id=result_id, status=str(props.get("status") or "NotStarted"),
        installed=_count(props.get("installedPatchCount")), failed=_count(props.get("failedPatchCount")),
        pending=_count(props.get("pendingPatchCount")), reboot_status=str(props.get("rebootStatus") or ""),
        window_exceeded=props.get("maintenanceWindowExceeded") is True, error=_error_text(props.get("errorDetails")),
        started_at=parse_time_or_none(props.get("startDateTime"), "patch result time"),
        modified_at=parse_time_or_none(props.get("lastModifiedDateTime"), "patch result time"))


def _with_updates(result: PatchResult, updates: tuple[FailedUpdate, ...]) -> PatchResult:
    if not updates:
        return result
    return replace(result, failed_updates=updates)


def _later(a: PatchResult, b: PatchResult) -> bool:
    return (a.modified_at or _NEVER) > (b.modified_at or _NEVER)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _error_text(details: Any) -> str:
    """'code: message; code: message' from `errorDetails` (the first five errors)."""
    if not isinstance(details, Mapping):
        return ""
    parts = [details, *[d for d in details.get("details") or [] if isinstance(d, Mapping)]][:6]
    texts = [f"{d.get('code') or 'Error'}: {d.get('message') or ''}".strip() for d in parts
             if d.get("code") or d.get("message")]
    return "; ".join(dict.fromkeys(texts))
