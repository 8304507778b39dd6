"""Step `tags`: after the run, stamp each machine with what happened (MAINTENANCE_RESULT_TAGS, by
default `maintenance-last-run` = the window's start and `maintenance-last-status` = its patch
status), merged into its tags: no other tag is touched. Safe to repeat: a merge of the same
values changes nothing. The counts, and the machines that could not be tagged, go on the run row."""

from __future__ import annotations

import json

from handlers.adapters.tags import merge_tags
from handlers.core.ids import name_of
from handlers.ledger import MachineRecord
from handlers.phases.post.patch_results import NOT_REPORTED
from handlers.phases.post.state import PostWork
from handlers.phases.steps import PhaseRun


def stamp_tags(run: PhaseRun[PostWork]) -> None:
    changes = _changes(run)
    if not changes:
        return
    # After the restores' requests (ARM's write budget: the restores are what is billed); restore-power
    # sets this when they are out or it ends, so the wait is bounded by its own.
    run.state.restores_sent.wait(timeout=max(0.0, run.runtime.clock.seconds_until(run.invocation_end)))
    failed = merge_tags(run.runtime.clients, changes, parallelism=run.runtime.settings.parallelism, log=run.log)
    run.summary["tags"] = {"stamped": len(changes) - len(failed), "failed": len(failed)}
    run.runtime.ledger.update_run(run.event.correlation_id, {
        "TagsStamped": len(changes) - len(failed), "TagsFailed": json.dumps(failed, sort_keys=True) if failed else ""})
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(changes)} machine(s) could not be tagged: "
                           + "; ".join(f"{name_of(k)}: {v}" for k, v in list(failed.items())[:5]))


def preview_tags(run: PhaseRun[PostWork]) -> None:
    """A dry run: the tags each machine would get."""
    for resource_id, tags in _changes(run):
        run.log.info("dry run: would tag %s with %s", resource_id, json.dumps(tags, sort_keys=True))


def _changes(run: PhaseRun[PostWork]) -> list[tuple[str, dict[str, str]]]:
    wanted = run.runtime.settings.result_tags
    if not wanted:
        return []
    event = run.event
    verdict = str((run.runtime.ledger.get_run(event.correlation_id) or {}).get("Verdict") or "unknown")
    # The machines as `patch-results` left them in this invocation (read again when it did not run here).
    known = run.state.records or run.runtime.ledger.list_machines(event.correlation_id)
    records = [r for r in known if r.kind in ("vm", "arc")]
    return [(r.resource_id, {tag: _value(field, r, run, verdict) for tag, field in wanted}) for r in records]


def _value(field: str, record: MachineRecord, run: PhaseRun[PostWork], verdict: str) -> str:
    event = run.event
    values = {
        "run-time": f"{event.start:%Y-%m-%dT%H:%MZ}",
        "run-id": name_of(event.correlation_id),
        "patch-status": record.patch_status or NOT_REPORTED,
        "verdict": verdict,
        "reboot": record.patch_reboot or "unknown",
    }
    return values[field][:256]
