"""Reports of runs from the ledger: plain-text tables for the demo and the rehearsal CLI, and
`./dev report` (`python -m tools.report`): the last runs, or one run's report as text, JSON or HTML."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from handlers.adapters.clients import ClientFactory
from handlers.core.errors import SettingsError
from handlers.core.ids import configuration_name_of, name_of
from handlers.core.settings import Settings
from handlers.ledger import Ledger
from handlers.phases.post.report import build_report
from handlers.phases.post.report_html import render_html


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


def run_lines(report: Mapping[str, Any]) -> list[str]:
    """A run's report as text: its header, then one line per machine."""
    run, counts = report["run"], report["counts"]
    lines = [f"run {run['correlation_id']}",
             f"  window {run['window_start'] or '?'} .. {run['window_end'] or '?'}; verdict {run['verdict'] or '?'}, "
             f"cancel {run['cancel_outcome'] or '-'}, run status {run['run_status'] or '?'}"
             + ("  (dry run)" if run["dry_run"] else ""),
             "  " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())]
    lines += [f"  reason: {reason}" for reason in run["failing_reasons"]]
    lines += [f"  step {step} failed: {error}" for step, error in run["step_errors"].items()]
    rows = [("machine", "before", "pre", "in the guest", "patch", "installed/failed", "reboot", "restore", "after")]
    for m in report["machines"]:
        patch = m["patch"]
        guest = "/".join((g or {}).get("outcome", "-") or "-" for g in m["guest"].values()) if any(
            m["guest"].values()) else "-"
        rows.append((m["name"], m["before"] or "?", f"{m['pre_action']}: {m['pre_outcome']}", guest, patch["status"],
                     f"{patch['installed'] if patch['installed'] is not None else '-'}/"
                     f"{patch['failed'] if patch['failed'] is not None else '-'}",
                     patch["reboot_status"] or "-", f"{m['restore_action'] or 'none'}: {m['restore_outcome'] or '-'}",
                     m["after"] or "-"))
    print_table(rows, out=lines.append)
    return lines


def main(argv: list[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`./dev report`: the last runs in the ledger, or one run's report (and its HTML written locally)."""
    out, err = out or sys.stdout, err or sys.stderr
    parser = argparse.ArgumentParser(prog="./dev report", description=main.__doc__)
    parser.add_argument("run", nargs="?", help="a run: its correlation id, its run id (the last part) or a prefix")
    parser.add_argument("--last", type=int, default=10, help="how many runs to list (10)")
    parser.add_argument("--html", type=Path, help="write the run's HTML report to this file")
    parser.add_argument("--json", action="store_true", help="print the run's report as JSON")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"error: {exc}", file=err)
        return 2
    ledger = Ledger(ClientFactory(settings).ledger_table())
    runs = ledger.list_runs(limit=max(args.last, 1000) if args.run else args.last)
    if not args.run:
        rows = [("window start", "configuration", "run", "verdict", "cancel", "status", "patches", "report")]
        for row in runs[: args.last]:
            correlation = str(row.get("CorrelationId") or "")
            rows.append((str(row.get("WindowStart") or "?")[:16], configuration_name_of(correlation),
                         name_of(correlation), str(row.get("Verdict") or "-"), str(row.get("CancelOutcome") or "-"),
                         str(row.get("RunStatus") or "-"), str(row.get("PatchSummary") or "-"),
                         str(row.get("ReportUrl") or "-")))
        print_table(rows, out=lambda line: print(line, file=out))
        return 0
    wanted = args.run.lower().rstrip("/")
    found = [r for r in runs if str(r.get("CorrelationId") or "").lower() == wanted
             or name_of(str(r.get("CorrelationId") or "")).lower().startswith(wanted)]
    if len(found) != 1:
        print(f"error: {len(found)} runs match {args.run!r}; give more of its id", file=err)
        return 1
    report = build_report(ledger, str(found[0]["CorrelationId"]), generated_at=datetime.now(UTC))
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True, default=str), file=out)
    else:
        for line in run_lines(report):
            print(line, file=out)
    if args.html:
        args.html.write_text(render_html(report), encoding="utf-8")
        print(f"HTML report: {args.html.resolve()}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
