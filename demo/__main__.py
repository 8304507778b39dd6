"""A complete maintenance run against the built-in emulator: `./dev demo` (or `python -m demo`).

No Azure account is needed. A fleet of VMs over two subscriptions lives in the in-process ARM
emulator, the ledger and the work queues live in a real Azurite started for the run, and the
app's registered functions are invoked the way the Functions host invokes them: the pre event
to `pre_maintenance`, the queued work to `maintenance_worker`, then the post event.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from emulator import AzureEmulator
from emulator.azurite import AzuriteStartError, AzuriteUnavailableError, start_azurite
from emulator.functions_host import FunctionsHost
from emulator.notify_sinks import NotificationSinks, serve_notification_sinks
from handlers.phases.post.report import build_report
from handlers.phases.post.report_html import render_html
from tools.report import print_table, snapshot_summary, verdict_lines

SUBSCRIPTIONS = ("00000000-0000-0000-0000-0000000000a1", "00000000-0000-0000-0000-0000000000b2")
CONFIG_ID = (f"/subscriptions/{SUBSCRIPTIONS[0]}/resourceGroups/rg-patching/providers/"
             "Microsoft.Maintenance/maintenanceConfigurations/weekly-sunday")
ARM_ENDPOINT = "https://management.emulator.local"
REPORT = Path(__file__).resolve().parent.parent / ".demo" / "report.html"  # gitignored
NOTICES = REPORT.parent / "notices"

# name, subscription index, resource group, power state before the run, tags
FLEET: list[tuple[str, int, str, str, dict[str, str]]] = [
    ("web-01", 0, "rg-web", "running", {}),
    ("web-02", 0, "rg-web", "deallocated", {}),
    ("web-03", 0, "rg-web", "deallocated", {}),
    ("api-01", 0, "rg-api", "stopped", {"maintenance-wave": "2"}),
    ("db-01", 1, "rg-db", "running", {"maintenance-stop-services": "postgresql,pgbouncer", "maintenance-wave": "1"}),
    ("db-02", 1, "rg-db", "stopped", {"maintenance-stop-services": "postgresql", "maintenance-wave": "1"}),
    ("batch-01", 1, "rg-batch", "deallocated", {}),
    ("legacy-01", 1, "rg-legacy", "deallocated", {"maintenance-opt-out": "true"}),
]
ARC = [("onprem-01", 1, "rg-hybrid")]  # runs the catalogue's example script before and after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev demo", description=__doc__.splitlines()[0])
    parser.add_argument("--fail-start", metavar="VM", help="make this VM's start fail (shows the run cancelled)")
    parser.add_argument("--dry-run", action="store_true", help="run with MAINTENANCE_DRY_RUN=true")
    parser.add_argument("--quiet", action="store_true", help="only the final table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)-7s %(message)s", stream=sys.stderr)
    logging.getLogger("maintenance").setLevel(logging.WARNING if args.quiet else logging.INFO)

    try:
        azurite = start_azurite()
    except (AzuriteUnavailableError, AzuriteStartError) as exc:
        print(f"cannot run the demo: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(azurite.connection_string, args)
    finally:
        azurite.stop()


def _patch_results(emulator: AzureEmulator, ids: dict[str, str], correlation_id: str) -> None:
    """What Update Manager would have installed during the window: mostly fine, one failure, one
    machine that needs a reboot, one (batch-01) whose result never reaches Resource Graph, and
    none for the opted-out VM that stays deallocated (Update Manager cannot patch it)."""
    for name, machine in ids.items():
        if name in ("batch-01", "legacy-01"):
            continue
        if name == "db-02":
            emulator.add_patch_result(machine, correlation_id, status="Failed", installed=5, failed=1, patches=[
                {"name": "postgresql-16", "version": "16.6-1.pgdg22.04+1", "classifications": ["Security"],
                 "state": "Failed"}], error={"code": "PackageManagerFailure", "message": "dpkg returned 100"})
        else:
            emulator.add_patch_result(machine, correlation_id, installed=4 + len(name) % 5,
                                      reboot_status="Required" if name == "web-02" else "NotNeeded")


def _run(connection_string: str, args: argparse.Namespace) -> int:
    # One simulated minute passes in 0.12 real seconds: a VM start (about 60 s) is near-instant.
    emulator = AzureEmulator(time_scale=0.002)
    ids: dict[str, str] = {}
    for name, sub, group, state, tags in FLEET:
        ids[name] = emulator.add_vm(SUBSCRIPTIONS[sub], group, name, power_state=state, tags=tags)
    for name, sub, group in ARC:
        ids[name] = emulator.add_arc_machine(SUBSCRIPTIONS[sub], group, name, tags={
            "maintenance-pre-script": "example", "maintenance-post-script": "example"})
    if args.fail_start:
        if args.fail_start not in ids:
            print(f"--fail-start: no VM named {args.fail_start!r}; choose one of {', '.join(ids)}", file=sys.stderr)
            return 2
        emulator.fail("start", ids[args.fail_start], mode="operation", code="AllocationFailed",
                      message="Allocation failed: no capacity for the requested VM size in this region")
    before = {name: _state(emulator, rid) for name, rid in ids.items()}
    # A snapshot this toolkit made for last week's run, now past its expiry: retention removes it.
    expired = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    emulator.add_snapshot(SUBSCRIPTIONS[0], "rg-web", "mt-web-02-osdisk-lastweek",
                          source_disk_id=emulator.disk_ids(ids["web-02"])[0],
                          tags={"maintenance-toolkit": "snapshot", "maintenance-run": "weekly-sunday_lastweek",
                                "maintenance-expires": expired})

    now = datetime.now(UTC)
    run_id = (now + timedelta(minutes=40)).strftime("%Y%m%d%H%M00")
    correlation_id = f"{CONFIG_ID}/providers/Microsoft.Maintenance/applyUpdates/{run_id}"
    emulator.add_run(correlation_id, list(ids.values()))

    # The run's notices go to fakes of Azure's channels on loopback HTTPS, written out below.
    sinks = serve_notification_sinks()
    os.environ.update({
        "REQUESTS_CA_BUNDLE": sinks.ca_bundle,
        "MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT": sinks.eventgrid_endpoint,
        "MAINTENANCE_EMAIL_ENDPOINT": sinks.email_endpoint,
        "MAINTENANCE_EMAIL_SENDER": "DoNotReply@demo.azurecomm.net",
        "MAINTENANCE_EMAIL_TO": "patching-team@example.com",
        "MAINTENANCE_TEAMS_WEBHOOK_URL": sinks.teams_url,
        "MAINTENANCE_HOLD_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "MAINTENANCE_PUBLIC_URL": "https://demo-toolkit.azurewebsites.net",
        "AzureWebJobsStorage": connection_string,
        "AZURE_RESOURCE_MANAGER_ENDPOINT": ARM_ENDPOINT,
        # The emulator also plays the App Service managed identity endpoint.
        "IDENTITY_ENDPOINT": "http://127.0.0.1:41741/msi/token",
        "IDENTITY_HEADER": "demo",
        "MAINTENANCE_LEDGER_TABLE": f"DemoRuns{run_id}",
        "MAINTENANCE_POLL_INTERVAL_SECONDS": "5",
        "MAINTENANCE_DRY_RUN": "true" if args.dry_run else "false",
    })
    import function_app
    from handlers import runtime

    app_runtime = runtime.configure(transport=emulator.transport(), clock=emulator.clock)
    host = FunctionsHost(function_app.app, connection_string)
    for queue_name in host.queue_triggers():
        host.queue(queue_name).clear_messages()

    _shorten_run_id_in_logs(correlation_id)
    print(f"maintenance run {correlation_id}\n(shown as [run] below)\n", file=sys.stderr)
    host.deliver_event("pre_maintenance", _event("pre", correlation_id, now))
    host.run_queues()
    after_pre = {name: _state(emulator, rid) for name, rid in ids.items()}
    # Update Manager reports a cancelled run as such in the post event.
    status = "Canceled" if emulator.run_status(correlation_id) == "Cancelled" else "Succeeded"
    if status == "Succeeded":
        _patch_results(emulator, ids, correlation_id)
    host.deliver_event("post_maintenance", _event("post", correlation_id, now, status=status))
    host.run_queues()
    after_post = {name: _state(emulator, rid) for name, rid in ids.items()}

    records = {r.name: r for r in app_runtime.ledger.list_machines(correlation_id)}
    snapshots = snapshot_summary(app_runtime.ledger, correlation_id)
    run = app_runtime.ledger.get_run(correlation_id) or {}
    rows = [("machine", "subscription", "wave", "before", "in the guest", "snapshot", "pre event", "during window",
             "patch", "post event", "after")]
    for name in ids:
        record = records.get(name)
        pre = f"{record.pre_action}: {record.pre_outcome}" if record else "-"
        wave = "-" if record is None or record.wave is None else str(record.wave)
        guest = (f"{record.guest_pre_outcome or '-'} / {record.guest_post_outcome or '-'}"
                 if record and (record.guest_pre or record.guest_post) else "-")
        post = f"{record.restore_action or 'none'}: {record.restore_outcome or '-'}" if record else "-"
        snap = snapshots.get(ids[name].lower(), "-")
        sub = next((s for n, s, *_ in FLEET + [(a, b, c, "", {}) for a, b, c in ARC] if n == name), 0)
        patch = (record.patch_status or "-") if record else "-"
        rows.append((name, SUBSCRIPTIONS[sub][-4:], wave, before[name], guest, snap, pre, after_pre[name], patch,
                     post, after_post[name]))
    print()
    print_table(rows)
    print()
    for line in verdict_lines(app_runtime.ledger, correlation_id):
        print(line)
    print(f"run status: {emulator.run_status(correlation_id)}   post status: {run.get('RunStatus', '?')}")
    print(f"snapshot retention: {run.get('RetentionDeleted', 0)} expired snapshot(s) of earlier runs deleted")
    writes = sum(emulator.count(method=m) for m in ("PUT", "DELETE")) + emulator.count(method="POST") - \
        emulator.count(method="POST", path_contains="microsoft.resourcegraph")
    print(f"ARM requests: {len(emulator.requests)} ({writes} writes); ledger table {app_runtime.settings.ledger_table}")
    report = build_report(app_runtime.ledger, correlation_id, generated_at=datetime.now(UTC))
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(render_html(report), encoding="utf-8")
    print(f"report: {REPORT.resolve()} (also in Azurite: {run.get('ReportUrl', '-')})")
    _write_notices(sinks)
    sinks.close()
    failed = [i for i in host.invocations if not i.succeeded]
    return 1 if failed else 0


def _write_notices(sinks: NotificationSinks) -> None:
    """What the channels received, as files to open: the CloudEvents, each e-mail, each card."""
    NOTICES.mkdir(parents=True, exist_ok=True)
    for old in NOTICES.iterdir():
        old.unlink()
    (NOTICES / "cloudevents.json").write_text(json.dumps(sinks.events(), indent=1), encoding="utf-8")
    for number, email in enumerate(sinks.emails(), 1):
        (NOTICES / f"email-{number}.html").write_text(email.message["content"]["html"], encoding="utf-8")
    for number, post in enumerate(sinks.teams_posts(), 1):
        (NOTICES / f"teams-{number}.json").write_text(json.dumps(post, indent=1), encoding="utf-8")
    subjects = "; ".join(e.message["content"]["subject"] for e in sinks.emails())
    types = ", ".join(e["type"].rsplit(".", 1)[-1] for e in sinks.events())
    print(f"notices: {len(sinks.events())} CloudEvent(s) ({types}), {len(sinks.emails())} e-mail(s) ({subjects}), "
          f"{len(sinks.teams_posts())} Teams card(s): {NOTICES.resolve()}")


def _event(kind: str, correlation_id: str, now: datetime, *, status: str = "Succeeded") -> dict[str, Any]:
    start = now + timedelta(minutes=40)
    data: dict[str, Any] = {
        "correlationId": correlation_id,
        "maintenanceConfigurationId": CONFIG_ID,
        "startDateTime": _iso(start),
        "endDateTime": _iso(start + timedelta(hours=3)),
        "resourceSubscriptionIds": list(SUBSCRIPTIONS),
    }
    if kind == "pre":
        data["cancellationCutOffDateTime"] = _iso(start - timedelta(minutes=10))
    else:
        data["status"] = status
    return {
        "id": correlation_id, "topic": CONFIG_ID, "subject": CONFIG_ID.rsplit("/", 1)[-1],
        "eventType": f"Microsoft.Maintenance.{'Pre' if kind == 'pre' else 'Post'}MaintenanceEvent",
        "eventTime": _iso(now), "dataVersion": "1.0", "data": data,
    }


def _shorten_run_id_in_logs(correlation_id: str) -> None:
    """The app logs the full correlation id on every line; on a terminal one mention is enough."""

    class Shorten(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return super().format(record).replace(f"[{correlation_id}]", "[run]")

    for handler in logging.getLogger().handlers:
        handler.setFormatter(Shorten("%(levelname)-7s %(message)s"))


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _state(emulator: AzureEmulator, resource_id: str) -> str:
    if "/microsoft.hybridcompute/" in resource_id.lower():
        return "(arc)"
    return emulator.vm_power_state(resource_id).removeprefix("PowerState/")


if __name__ == "__main__":
    sys.exit(main())
