"""Rehearse a maintenance run against live Azure from a laptop or Cloud Shell: `./dev rehearse`.

The same pipeline the Function App runs (inventory, snapshots, starts, pre-checks, verdict), with
`DefaultAzureCredential` (`az login`), no func host. Given an event file (a real or sample pre
event) or a maintenance configuration id (a realistic event for the next run is built, times
relative to now). `--dry-run` prints the plan and changes nothing.

Exit codes: 0 all good; 1 the verdict failed (the run would be / was cancelled); 2 bad input
(event, settings, arguments); 3 Azure refused or failed (sign-in, permissions, errors);
4 no machines found.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from azure.core.exceptions import AzureError, ClientAuthenticationError

from handlers.adapters.clients import ClientFactory
from handlers.adapters.inventory import find_assigned_machines
from handlers.core.errors import InvalidEventError, SettingsError, UnsupportedEventTypeError
from handlers.core.events import MaintenanceEvent, parse_event
from handlers.core.ids import subscription_of
from handlers.core.logs import run_logger
from handlers.core.settings import Settings
from handlers.ledger import Ledger
from handlers.phases.pre.cancel import cutoff_of
from handlers.runtime import Runtime
from tools.memory_table import MemoryTable
from tools.report import print_table, snapshot_summary, verdict_lines
from tools.send_event import rewrite_times

EXIT_OK, EXIT_VERDICT, EXIT_INPUT, EXIT_AZURE, EXIT_EMPTY = 0, 1, 2, 3, 4
_STORAGE_SETTINGS = ("AzureWebJobsStorage", "AzureWebJobsStorage__accountName",
                     "AzureWebJobsStorage__tableServiceUri")


def main(argv: list[str] | None = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="./dev rehearse", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--event", type=Path, help="a pre event JSON file (Event Grid or CloudEvents schema)")
    source.add_argument("--configuration-id", help="a maintenance configuration id: rehearse its next run")
    parser.add_argument("--subscription", action="append", default=[],
                        help="target subscription id (repeatable; default: the configuration's)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--keep-times", action="store_true", help="use the event file's times as they are")
    parser.add_argument("--start-in", type=int, default=40, metavar="MIN", help="window start from now (40)")
    parser.add_argument("--quiet", action="store_true", help="no progress or log lines, only the report")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)-7s %(message)s", stream=err)
    logging.getLogger("maintenance").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return _rehearse(args, out, err)
    except (InvalidEventError, UnsupportedEventTypeError, SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_INPUT
    except ClientAuthenticationError as exc:
        print(f"error: could not sign in to Azure ({exc.message}); run `az login` or set a managed identity",
              file=err)
        return EXIT_AZURE
    except AzureError as exc:
        print(f"error: Azure refused or failed: {exc}", file=err)
        return EXIT_AZURE


def _rehearse(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from handlers.core.work import WorkMessage
    from handlers.phases.pre import run_pre

    synthetic = args.configuration_id is not None
    environ = dict(os.environ)
    if args.dry_run:
        environ["MAINTENANCE_DRY_RUN"] = "true"
    if synthetic:
        # A run that has not happened cannot be cancelled: report what the verdict would do.
        environ["MAINTENANCE_CANCEL_ON_FAILURE"] = "false"
    in_memory = not any(environ.get(name) for name in _STORAGE_SETTINGS)
    if in_memory:
        environ["AzureWebJobsStorage"] = "UseDevelopmentStorage=true"  # satisfies Settings; never used
    settings = Settings.from_env(environ)
    # Production clients: DefaultAzureCredential (az login) and the default transport.
    runtime = Runtime(settings, ClientFactory(settings))
    if in_memory:
        runtime.ledger = Ledger(MemoryTable())
        print("no AzureWebJobsStorage configured: the ledger for this rehearsal is kept in memory", file=err)

    event = _build_event(args, runtime.settings.arm_endpoint)
    log = run_logger(event.correlation_id)
    machines = None
    if synthetic:
        machines = find_assigned_machines(runtime.clients.resource_graph(), event.subscription_ids,
                                          event.maintenance_configuration_id, log=log)
    runtime.ledger.accept_event(event)
    mode = "dry run" if runtime.settings.dry_run else "LIVE run: VMs will be started and snapshots made"
    print(f"rehearsing {event.correlation_id}\n  {mode}; deadline {_deadline(event, runtime)}", file=err)

    display = ProgressDisplay(err, enabled=not args.quiet)
    runtime.progress = display.update
    display.start()
    try:
        summary = run_pre(runtime, WorkMessage(event), log, machines=machines).summary
    finally:
        display.stop()
    return _report(runtime.ledger, event, summary, synthetic, out)


def _build_event(args: argparse.Namespace, arm_endpoint: str) -> MaintenanceEvent:
    now = datetime.now(UTC)
    if args.event is not None:
        try:
            raw: Any = json.loads(args.event.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the event file {args.event}: {exc}") from None
        if isinstance(raw, list) and len(raw) == 1:
            raw = raw[0]
        if not isinstance(raw, dict):
            raise ValueError(f"{args.event} must hold one event (a JSON object, or an array of one)")
        if not args.keep_times:
            raw = rewrite_times(raw, now=now, start_in=timedelta(minutes=args.start_in))
        return parse_event(raw)
    config_id = str(args.configuration_id).rstrip("/")
    subscriptions = args.subscription or [subscription_of(config_id)]
    start = (now + timedelta(minutes=args.start_in)).replace(second=0, microsecond=0)
    data = {
        "correlationId": f"{config_id}/providers/Microsoft.Maintenance/applyUpdates/{start:%Y%m%d%H%M%S}",
        "maintenanceConfigurationId": config_id,
        "startDateTime": start.isoformat(), "endDateTime": (start + timedelta(hours=3)).isoformat(),
        "cancellationCutOffDateTime": (start - timedelta(minutes=10)).isoformat(),
        "resourceSubscriptionIds": subscriptions,
    }
    return parse_event({"id": data["correlationId"], "topic": config_id, "subject": config_id.rsplit("/", 1)[-1],
                        "eventType": "Microsoft.Maintenance.PreMaintenanceEvent", "eventTime": now.isoformat(),
                        "dataVersion": "1.0", "data": data})


def _deadline(event: MaintenanceEvent, runtime: Any) -> str:
    deadline = cutoff_of(event) - timedelta(seconds=runtime.settings.cutoff_safety_seconds)
    return f"{deadline:%H:%M:%S} UTC ({(deadline - datetime.now(UTC)).total_seconds() / 60:.0f} min from now)"


def _report(ledger: Ledger, event: MaintenanceEvent, summary: dict[str, Any], synthetic: bool, out: TextIO) -> int:
    machines = ledger.list_machines(event.correlation_id)
    if not machines:
        print("no machines found for this run (see the warning above for likely causes)", file=out)
        return EXIT_EMPTY
    snapshots = snapshot_summary(ledger, event.correlation_id)
    rows = [("machine", "kind", "power before", "wave", "action", "outcome", "in the guest", "snapshot", "detail")]
    for record in sorted(machines, key=lambda r: (-1 if r.wave is None else r.wave, r.resource_id.lower())):
        guest = f"{record.guest_pre} ({record.guest_pre_outcome})" if record.guest_pre else "-"
        rows.append((record.name, record.kind, record.original_power_state or "?",
                     "-" if record.wave is None else str(record.wave), record.pre_action, record.pre_outcome, guest,
                     snapshots.get(record.resource_id.lower(), "-"),
                     record.check_failures or record.pre_detail or record.guest_pre_detail))
    print_table(rows, out=lambda line: print(line, file=out))
    print(file=out)
    for line in verdict_lines(ledger, event.correlation_id):
        print(line, file=out)
    run = ledger.get_run(event.correlation_id) or {}
    failing = str(run.get("FailingReasons") or "")
    if summary.get("verdict") == "dry-run" or synthetic:
        print("the run would be cancelled" if failing or summary.get("verdict") == "failed"
              else "the run would go ahead", file=out)
    return EXIT_VERDICT if failing or summary.get("verdict") == "failed" else EXIT_OK


class ProgressDisplay:
    """One updating status line on a terminal; a line every 10 s elsewhere (CI logs, pipes)."""

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self._stream, self._enabled = stream, enabled
        self._tty = stream.isatty()
        self._state = {"sent": 0, "done": 0, "total": 0}
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True, name="progress")

    def update(self, stage: str, count: int, total: int) -> None:
        self._state[stage] = count
        self._state["total"] = total

    def start(self) -> None:
        if self._enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            self._stream.write("\n" if self._tty else "")

    def _tick(self) -> None:
        interval = 1.0 if self._tty else 10.0
        while not self._stop.wait(interval):
            if not self._state["total"]:
                continue
            elapsed = int(time.monotonic() - self._started)
            line = (f"[{elapsed // 60:02d}:{elapsed % 60:02d}] operations sent {self._state['sent']}/"
                    f"{self._state['total']}, finished {self._state['done']}/{self._state['total']}")
            self._stream.write(f"\r{line}" if self._tty else f"{line}\n")
            self._stream.flush()


if __name__ == "__main__":
    sys.exit(main())
