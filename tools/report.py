"""Plain-text reports of a run from its ledger, for the demo and the rehearsal CLI."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from handlers.ledger import Ledger


def print_table(rows: Sequence[Sequence[str]], out: Callable[[str], None] = print) -> None:
    """Columns padded to their widest cell; a rule under the header row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            out("  ".join("-" * width for width in widths))


def snapshot_summary(ledger: Ledger, correlation_id: str) -> dict[str, str]:
    """'os: succeeded, data: skipped' per machine id (lower case)."""
    found: dict[str, list[str]] = {}
    for snapshot in ledger.list_snapshots(correlation_id):
        found.setdefault(snapshot.vm_id.lower(), []).append(f"{snapshot.role}: {snapshot.outcome}")
    return {vm: ", ".join(parts) for vm, parts in found.items()}


def verdict_lines(ledger: Ledger, correlation_id: str) -> list[str]:
    run = ledger.get_run(correlation_id) or {}
    lines = [f"verdict: {run.get('Verdict', '?')}   cancel: {run.get('CancelOutcome', '?')}"]
    lines += [f"  reason: {reason}" for reason in str(run.get("FailingReasons") or "").splitlines()]
    return lines
