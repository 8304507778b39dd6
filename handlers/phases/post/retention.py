"""Step `retention`, after a run: delete this toolkit's snapshots whose expiry has passed.

Found through Resource Graph by the toolkit's marker tag (not by listing every snapshot), across
the run's subscriptions. Never deleted: a snapshot of the current run, one without a readable
expiry, and the snapshots of a run whose post event reported it failed (kept for a rollback until
an operator removes them).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from handlers.adapters.inventory import query_all
from handlers.adapters.operations import Operation, raw_response, run_operations
from handlers.adapters.snapshots import EXPIRES_TAG, MARKER_TAG, MARKER_VALUE, RUN_TAG
from handlers.core.events import RunStatus
from handlers.core.ids import parse_arm_id
from handlers.core.keys import run_key
from handlers.core.status import Outcome
from handlers.phases.post.state import PostWork
from handlers.phases.steps import PhaseRun
from handlers.runtime import Runtime

TOOLKIT_SNAPSHOTS_QUERY = f"""resources
| where type =~ 'microsoft.compute/snapshots'
| where tags['{MARKER_TAG}'] =~ '{MARKER_VALUE}'
| project id, name, resourceGroup, subscriptionId, location, tags"""


def run_retention(run: PhaseRun[PostWork]) -> None:
    run.go_on()  # beside the steps after it from the start: nothing else draws on ARM's delete budget
    runtime = run.runtime
    counts, expired = _expired(run)
    if expired:
        operations = [_delete_operation(runtime, str(row["id"])) for row in expired]
        deadline = min(runtime.clock.utcnow() + timedelta(seconds=runtime.settings.restore_timeout_seconds),
                       run.invocation_end)
        results = run_operations(runtime.clients, [[op] for op in operations],
                                 parallelism=runtime.settings.parallelism, deadline=deadline, log=run.log)
        counts["deleted"] = sum(1 for r in results.values() if r.outcome == Outcome.SUCCEEDED)
        counts["failed"] = len(results) - counts["deleted"]
    _record(run, counts)


def preview_retention(run: PhaseRun[PostWork]) -> None:
    """A dry run: the expired snapshots that would be deleted."""
    run.go_on()
    counts, expired = _expired(run)
    for row in expired:
        run.log.info("dry run: would delete expired snapshot %s", row.get("id"))
    _record(run, counts)


def _expired(run: PhaseRun[PostWork]) -> tuple[dict[str, int], list[dict[str, Any]]]:
    runtime, event, log = run.runtime, run.event, run.log
    now = runtime.clock.utcnow()
    current = run_key(event.correlation_id)
    rows = query_all(runtime.clients.resource_graph(), event.subscription_ids, TOOLKIT_SNAPSHOTS_QUERY)
    expired: list[dict[str, Any]] = []
    counts = {"seen": 0, "expired": 0, "deleted": 0, "kept-failed-run": 0, "failed": 0}
    failed_runs: dict[str, bool] = {}
    for row in rows:
        tags = {str(k).lower(): str(v) for k, v in (row.get("tags") or {}).items()}
        if tags.get(MARKER_TAG) != MARKER_VALUE:
            continue
        counts["seen"] += 1
        run_name = tags.get(RUN_TAG, "")
        expires = _parse_time(tags.get(EXPIRES_TAG, ""))
        if run_name == current or expires is None or expires > now:
            continue
        counts["expired"] += 1
        if run_name not in failed_runs:
            failed_runs[run_name] = _run_failed(runtime, run_name)
        if failed_runs[run_name]:
            counts["kept-failed-run"] += 1
            log.info("keeping expired snapshot %s: its run %s failed", row.get("id"), run_name)
            continue
        expired.append(row)
    return counts, expired


def _record(run: PhaseRun[PostWork], counts: dict[str, int]) -> None:
    run.runtime.ledger.update_run(run.event.correlation_id, {f"Retention{k.title().replace('-', '')}": v
                                                             for k, v in counts.items()})
    run.log.info("snapshot retention: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
    run.summary["retention"] = counts


def _run_failed(runtime: Runtime, partition: str) -> bool:
    run = runtime.ledger.get_run_by_key(partition) if partition else None
    return bool(run) and run.get("RunStatus") == RunStatus.FAILED.value  # type: ignore[union-attr]


def _delete_operation(runtime: Runtime, snapshot_id: str) -> Operation:
    snapshot = parse_arm_id(snapshot_id)

    def send() -> Any:
        snapshots = runtime.clients.compute(snapshot.subscription).snapshots
        return snapshots.begin_delete(snapshot.resource_group, snapshot.name, polling=False, cls=raw_response).result()

    return Operation(key=snapshot_id.lower(), resource_id=snapshot_id, action="delete-snapshot", send=send)


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
