"""A run's milestones through Azure's own channels, with the real SDK clients: CloudEvents to an
Event Grid topic, ACS e-mail, a Teams Workflows webhook (fakes on loopback HTTPS that record what
they receive). Each milestone reaches each channel once, redeliveries included; a failing channel
is recorded and never fails the phase; a dry run labels or skips."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from emulator.notify_sinks import NotificationSinks, serve_notification_sinks
from handlers.phases.run_end import PhaseEnd, PhaseEnding
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, SUB_B, make_event

KEY = base64.b64encode(bytes(range(32))).decode()
TYPES = "UpdateManagerToolkit.Run."


def run_of(event: dict[str, object]) -> str:
    return str(event["data"]["correlationId"])  # type: ignore[index]


@pytest.fixture
def sinks(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotificationSinks]:
    with serve_notification_sinks() as served:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", served.ca_bundle)
        monkeypatch.setenv("MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT", served.eventgrid_endpoint)
        monkeypatch.setenv("MAINTENANCE_EMAIL_ENDPOINT", served.email_endpoint)
        monkeypatch.setenv("MAINTENANCE_EMAIL_SENDER", "DoNotReply@maintenance.example.test")
        monkeypatch.setenv("MAINTENANCE_EMAIL_TO", "ops@example.test, oncall@example.test")
        monkeypatch.setenv("MAINTENANCE_TEAMS_WEBHOOK_URL", served.teams_url)
        monkeypatch.setenv("MAINTENANCE_HOLD_KEY", KEY)
        monkeypatch.setenv("MAINTENANCE_PUBLIC_URL", "https://toolkit.example.test")
        yield served


@pytest.fixture
def fleet(emulator: AzureEmulator) -> list[str]:
    return [emulator.add_vm(SUB_A, "rg-app", "app-01", power_state="deallocated"),
            emulator.add_vm(SUB_A, "rg-app", "app-02", power_state="running"),
            emulator.add_vm(SUB_B, "rg-db", "db-01", power_state="running")]


def whole_run(host: FunctionsHost, emulator: AzureEmulator, machines: list[str], *, twice: bool = False,
              results: bool = True) -> dict[str, object]:
    pre, post = make_event("pre"), make_event("post")
    emulator.add_run(run_of(pre), machines)
    for _ in range(2 if twice else 1):
        host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    if results:
        emulator.add_patch_result(machines[0], run_of(pre), status="Succeeded", installed=3, reboot_status="Required")
        emulator.add_patch_result(machines[1], run_of(pre), status="Failed", installed=1, failed=2)
    for _ in range(2 if twice else 1):
        host.deliver_event("post_maintenance", post)
    host.run_queues()
    return pre


def notices(pre: dict[str, object]) -> dict[str, dict[str, object]]:
    return {str(r["RowKey"]): r for r in get_runtime().ledger.list_notices(run_of(pre))}


def card_text(post: dict[str, object]) -> str:
    card = post["attachments"][0]["content"]  # type: ignore[index]
    return json.dumps(card)


def test_each_milestone_reaches_each_channel_once(
    host: FunctionsHost, emulator: AzureEmulator, sinks: NotificationSinks, fleet: list[str]
) -> None:
    pre = whole_run(host, emulator, fleet, twice=True)  # every event delivered twice

    events = sinks.events()
    assert [e["type"] for e in events] == [TYPES + t for t in ("PreReceived", "Ready", "PostCompleted", "ReportReady")]
    assert len({e["id"] for e in events}) == 4
    received = events[0]
    assert received["source"] == str(pre["data"]["maintenanceConfigurationId"])  # type: ignore[index]
    assert received["subject"] == run_of(pre) and received["specversion"] == "1.0"
    assert received["data"]["machines"] == 3 and received["data"]["toStart"] == 1
    assert received["data"]["dryRun"] is False
    completed = events[2]["data"]
    assert completed["patches"]["patched"] == 1 and completed["patches"]["failed"] == 1
    assert completed["patches"]["not_reported"] == 1 and completed["patches"]["needs_reboot"] == 1
    assert events[3]["data"]["reportUrl"].endswith("/report.html")

    emails = [e.message for e in sinks.emails()]
    assert len(emails) == 2, [e["content"]["subject"] for e in emails]
    notice, summary = emails
    assert [r["address"] for r in notice["recipients"]["to"]] == ["ops@example.test", "oncall@example.test"]
    assert notice["senderAddress"] == "DoNotReply@maintenance.example.test"
    assert "3 machine(s) to be patched" in notice["content"]["subject"]
    text = notice["content"]["plainText"]
    assert "app-01 (rg-app) - off: started for patching" in text
    assert "app-02 (rg-app)\n" in text, "a running machine is listed without a state" and "1 machine(s) are off" in text
    hold = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Hold this run: "))
    assert urlsplit(hold).path == "/api/maintenance/hold" and html.escape(hold) in notice["content"]["html"]
    assert "1 patched, 1 failed, 1 need reboot, 1 not reported" in summary["content"]["subject"]
    assert "app-02: patching failed (2 update(s))" in summary["content"]["plainText"]
    assert "/report.html" in summary["content"]["html"]

    posts = sinks.teams_posts()
    assert len(posts) == 2
    assert posts[0]["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert posts[0]["attachments"][0]["content"]["type"] == "AdaptiveCard"
    assert "Hold this run" in card_text(posts[0]) and "Open the report" in card_text(posts[1])

    rows = notices(pre)
    assert {k: r["Outcome"] for k, r in rows.items()} == {
        f"notice-{m}-{c}": "sent" for m, c in [
            ("pre-received", "eventgrid"), ("pre-received", "email"), ("pre-received", "teams"),
            ("run-ready", "eventgrid"), ("post-completed", "eventgrid"), ("post-completed", "email"),
            ("post-completed", "teams"), ("report-ready", "eventgrid")]}

    # The phase's end heard again (a retried message that redoes its last write): nothing new goes out.
    from handlers.core.events import parse_event
    from handlers.phases.notify import notify_on_end
    notify_on_end(PhaseEnding(get_runtime(), parse_event(make_event("post")), "post", PhaseEnd.COMPLETED))
    assert (len(sinks.events()), len(sinks.emails()), len(sinks.teams_posts())) == (4, 2, 2)


def test_the_hold_link_of_the_notice_holds_the_run(
    host: FunctionsHost, emulator: AzureEmulator, sinks: NotificationSinks, fleet: list[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.add_vm(SUB_A, "rg-app", "app-03", power_state="running", tags={"maintenance-hold": "true"})
    pre = make_event("pre")
    emulator.add_run(run_of(pre), fleet)
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    [notice] = [e.message for e in sinks.emails()]
    hold = next(line.split(": ", 1)[1] for line in notice["content"]["plainText"].splitlines()
                if line.startswith("Hold this run: "))
    parts = urlsplit(hold)
    response = host.call_http("POST", parts.path, body=parts.query.encode(),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.get_body()
    assert emulator.run_status(run_of(pre)) == "Cancelled", "held after its ready verdict: cancelled at once"


def test_a_cancelled_run_tells_people_why(
    host: FunctionsHost, emulator: AzureEmulator, sinks: NotificationSinks
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-app", "app-01", power_state="running", tags={"maintenance-hold": "yes"})
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [vm])
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert [e["type"] for e in sinks.events()] == [TYPES + t for t in ("PreReceived", "ChecksFailed", "Cancelled")]
    assert sinks.events()[2]["data"]["cancel"] == "accepted"
    cancelled = sinks.emails()[1].message["content"]
    assert "is cancelled" in cancelled["subject"]
    assert "carries the hold tag maintenance-hold=yes" in cancelled["plainText"]
    assert "is cancelled" in card_text(sinks.teams_posts()[1])


def test_a_failing_channel_is_recorded_and_never_fails_the_phase(
    host: FunctionsHost, emulator: AzureEmulator, sinks: NotificationSinks, fleet: list[str]
) -> None:
    sinks.fail("teams", status=500)
    sinks.fail("eventgrid", status=403)

    pre = whole_run(host, emulator, fleet)

    assert all(i.succeeded for i in host.invocations), [i.error for i in host.invocations if not i.succeeded]
    run = get_runtime().ledger.get_run(run_of(pre)) or {}
    assert run.get("ReportUrl") and run.get("PostEndedHow") == "completed"
    rows = notices(pre)
    assert rows["notice-pre-received-email"]["Outcome"] == "sent" and len(sinks.emails()) == 2
    for key in ("notice-pre-received-teams", "notice-post-completed-teams", "notice-pre-received-eventgrid"):
        assert rows[key]["Outcome"] == "failed", key
    teams_error = str(rows["notice-post-completed-teams"]["Detail"])
    assert "500" in teams_error
    secret = urlsplit(sinks.teams_url).query.rsplit("sig=", 1)[1]
    assert all(secret not in str(r.get("Detail")) for r in rows.values()), "the webhook's signature is a secret"
    assert "403" in str(rows["notice-pre-received-eventgrid"]["Detail"])
    assert sinks.requests_seen("teams") >= 2 and sinks.teams_posts() == []


@pytest.mark.parametrize("mode", ["label", "skip"])
def test_a_dry_run_labels_its_notices_or_sends_none(
    host: FunctionsHost, emulator: AzureEmulator, sinks: NotificationSinks, fleet: list[str],
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("MAINTENANCE_DRY_RUN", "true")
    monkeypatch.setenv("MAINTENANCE_NOTIFY_DRY_RUN", mode)

    pre = whole_run(host, emulator, fleet, results=False)

    if mode == "skip":
        assert (sinks.events(), sinks.emails(), sinks.teams_posts()) == ([], [], [])
        assert {r["Outcome"] for r in notices(pre).values()} == {"skipped"}
        return
    assert sinks.events() and all(e["data"]["dryRun"] is True for e in sinks.events())
    subjects = [e.message["content"]["subject"] for e in sinks.emails()]
    assert subjects and all(s.startswith("[Maintenance] [dry run] ") for s in subjects)
    assert all("[dry run]" in card_text(p) for p in sinks.teams_posts())


def test_no_channel_configured_sends_nothing_and_records_nothing(
    host: FunctionsHost, emulator: AzureEmulator, fleet: list[str]
) -> None:
    pre = whole_run(host, emulator, fleet)
    assert notices(pre) == {}
    assert (get_runtime().ledger.get_run(run_of(pre)) or {}).get("ReportUrl"), "the run itself went through"
