"""The pre notice's links, through the registered HTTP function: a person holds a run (before its
verdict, or after a "ready" one) or, in approval mode, approves it; every bad link is refused
with nothing recorded."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.core.keys import run_key
from handlers.core.run_links import make_link
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, make_event, wait_for_fallback_verdict

KEY = bytes(range(32))
PUBLIC = "https://toolkit.example.test"
SAFETY = 8


def run_of(event: dict[str, object]) -> str:
    return str(event["data"]["correlationId"])  # type: ignore[index]


def cutoff_of(event: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(event["data"]["cancellationCutOffDateTime"]))  # type: ignore[index]


def link(event: dict[str, object], action: str = "hold", *, expires: datetime | None = None) -> str:
    return make_link(KEY, PUBLIC, correlation_id=run_of(event), action=action, expires=expires or cutoff_of(event))


def follow(host: FunctionsHost, url: str, method: str = "POST", **changes: str) -> tuple[int, str]:
    """What a browser does: GET the link; POST the form the page holds (its run and token)."""
    parts = urlsplit(url)
    fields = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    if method == "GET":
        response = host.call_http("GET", f"{parts.path}?{urlencode(fields)}")
    else:
        response = host.call_http("POST", parts.path, body=urlencode(fields).encode(),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    return response.status_code, response.get_body().decode()


def row(event: dict[str, object]) -> dict[str, object]:
    return get_runtime().ledger.get_run(run_of(event)) or {}


@pytest.fixture
def links_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAINTENANCE_HOLD_KEY", base64.b64encode(KEY).decode())
    monkeypatch.setenv("MAINTENANCE_PUBLIC_URL", PUBLIC)


@pytest.fixture
def one_vm(emulator: AzureEmulator) -> str:
    return emulator.add_vm(SUB_A, "rg-app", "app-01", power_state="running")


def test_a_hold_before_the_verdict_fails_the_hold_check_and_cancels_the_run(
    host: FunctionsHost, emulator: AzureEmulator, links_on: None, one_vm: str
) -> None:
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [one_vm])
    host.deliver_event("pre_maintenance", pre)

    status, page = follow(host, link(pre), "GET")
    assert status == 200 and "<form method=\"post\">" in page and "Hold this run" in page
    assert "HeldAt" not in row(pre), "opening the link (as a mail scanner does) holds nothing"
    status, page = follow(host, link(pre))
    assert status == 200 and "held" in page
    host.run_queues()

    recorded = row(pre)
    assert recorded["Verdict"] == "failed" and recorded["CancelOutcome"] == "accepted"
    assert "held by a person through the hold link" in str(recorded["FailingReasons"])
    assert '"no-hold-tag": "failed"' in str(recorded["Checks"])
    assert emulator.run_status(run_of(pre)) == "Cancelled"
    status, page = follow(host, link(pre))
    assert status == 409 and "cancelled already" in page, "a second hold changes nothing"


def test_a_hold_after_a_ready_verdict_cancels_the_run_at_once(
    host: FunctionsHost, emulator: AzureEmulator, links_on: None, one_vm: str
) -> None:
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [one_vm])
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    assert row(pre)["Verdict"] == "ready" and emulator.run_status(run_of(pre)) != "Cancelled"

    status, page = follow(host, link(pre))

    assert status == 200 and "cancelled now" in page
    assert emulator.run_status(run_of(pre)) == "Cancelled"
    recorded = row(pre)
    assert recorded["CancelOutcome"] == "accepted" and recorded["Verdict"] == "failed"
    assert recorded["HeldVia"] == "hold link"


def test_in_approval_mode_an_approval_lets_the_run_go_ahead_at_once(
    host: FunctionsHost, emulator: AzureEmulator, links_on: None, one_vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_APPROVAL_MODE", "approve")
    monkeypatch.setenv("MAINTENANCE_TEAMS_WEBHOOK_URL", "https://127.0.0.1:9/teams/unused")  # a channel for the link
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [one_vm])
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    waiting = row(pre)
    assert "AwaitingApprovalSince" in waiting and "Verdict" not in waiting, "no verdict without a person"

    status, page = follow(host, link(pre, "approve"))
    assert status == 200 and "approved" in page
    host.run_queues()

    recorded = row(pre)
    assert recorded["Verdict"] == "ready" and recorded["CancelOutcome"] == "not-needed"
    assert emulator.run_status(run_of(pre)) != "Cancelled"
    assert get_runtime().ledger.get_phase(run_of(pre), "pre")["Status"] == "completed"  # type: ignore[index]
    assert follow(host, link(pre, "approve"))[0] == 409, "approved once is enough"


def test_in_approval_mode_no_approval_cancels_the_run_at_the_deadline(
    host: FunctionsHost, emulator: AzureEmulator, links_on: None, one_vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_APPROVAL_MODE", "approve")
    monkeypatch.setenv("MAINTENANCE_TEAMS_WEBHOOK_URL", "https://127.0.0.1:9/teams/unused")
    monkeypatch.setenv("MAINTENANCE_CUTOFF_SAFETY_SECONDS", str(SAFETY))
    pre = make_event("pre", subscriptions=(SUB_A,), cutoff_in=timedelta(seconds=16))
    emulator.add_run(run_of(pre), [one_vm])
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    assert "Verdict" not in row(pre)

    wait_for_fallback_verdict(pre, SAFETY)
    host.run_queues()

    recorded = row(pre)
    assert recorded["Verdict"] == "failed" and recorded["CancelOutcome"] == "accepted"
    assert "not approved before the deadline" in str(recorded["FailingReasons"])
    assert emulator.run_status(run_of(pre)) == "Cancelled"


@pytest.mark.parametrize("case", ["changed", "other-key", "expired", "other-run", "other-action", "truncated"])
def test_a_bad_link_is_refused_with_nothing_recorded(
    host: FunctionsHost, emulator: AzureEmulator, links_on: None, one_vm: str, case: str
) -> None:
    pre = make_event("pre", subscriptions=(SUB_A,))
    other = make_event("pre", subscriptions=(SUB_A,), run="20261129020000")
    for event in (pre, other):
        emulator.add_run(run_of(event), [one_vm])
        host.deliver_event("pre_maintenance", event)
    good = link(pre)
    token = parse_qs(urlsplit(good).query)["token"][0]
    changes: dict[str, str] = {}
    url = good
    if case == "changed":
        changes["token"] = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    elif case == "other-key":
        url = make_link(bytes(32), PUBLIC, correlation_id=run_of(pre), action="hold", expires=cutoff_of(pre))
    elif case == "expired":
        url = link(pre, expires=datetime.now(UTC) - timedelta(seconds=1))
    elif case == "other-run":
        changes["run"] = run_key(run_of(other))  # a good token of one run, sent for another
    elif case == "other-action":
        url = link(pre, "approve").replace("/approve?", "/hold?")
    else:
        changes["token"] = token[:-3]

    status, page = follow(host, url, **changes)

    assert status == 403, page
    expected = {"expired": "expired", "other-run": "another run", "other-action": "approve link"}.get(case, "not valid")
    assert expected in page
    for event in (pre, other):
        assert not {"HeldAt", "ApprovedAt"} & set(row(event)), "nothing recorded"
    host.run_queues()
    assert emulator.run_status(run_of(pre)) != "Cancelled"


def test_a_link_after_the_cutoff_is_refused(
    host: FunctionsHost, emulator: AzureEmulator, links_on: None, one_vm: str
) -> None:
    pre = make_event("pre", subscriptions=(SUB_A,), cutoff_in=timedelta(seconds=2))
    emulator.add_run(run_of(pre), [one_vm])
    host.deliver_event("pre_maintenance", pre)
    time.sleep(2.5)
    # Signed to last longer than the run's cutoff: the run's own cutoff still refuses it.
    status, page = follow(host, link(pre, expires=datetime.now(UTC) + timedelta(hours=1)))
    assert status == 409 and "cutoff has passed" in page
    assert "HeldAt" not in row(pre)
    assert follow(host, link(pre))[0] == 403, "and the link as sent has expired with the cutoff"


def test_links_are_refused_when_the_app_has_no_key_and_for_a_run_it_does_not_know(
    host: FunctionsHost, emulator: AzureEmulator, one_vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pre = make_event("pre", subscriptions=(SUB_A,))
    assert follow(host, link(pre))[0] == 404, "no MAINTENANCE_HOLD_KEY: no links"
    monkeypatch.setenv("MAINTENANCE_HOLD_KEY", base64.b64encode(KEY).decode())
    monkeypatch.setenv("MAINTENANCE_PUBLIC_URL", PUBLIC)
    status, page = follow(host, link(pre))
    assert status == 404 and "no record of the run" in page
    assert host.call_http("GET", "/api/maintenance/delete").status_code == 404
    response = host.call_http("POST", "/api/maintenance/hold", body=b"x" * 5000)
    assert response.status_code == 400


def test_an_approval_before_the_preparation_ends_lets_the_phase_decide_itself(
    host: FunctionsHost, emulator: AzureEmulator, links_on: None, one_vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_APPROVAL_MODE", "approve")
    monkeypatch.setenv("MAINTENANCE_TEAMS_WEBHOOK_URL", "https://127.0.0.1:9/teams/unused")
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [one_vm])
    host.deliver_event("pre_maintenance", pre)

    status, page = follow(host, link(pre, "approve"))
    assert status == 200 and "as soon as its preparation is done" in page
    queued = get_runtime().work_queue().peek_messages(max_messages=32)
    assert len(queued) == 1, "the pre phase's own message only: no verdict is queued before it waits"
    host.run_queues()

    recorded = row(pre)
    assert recorded["Verdict"] == "ready" and "AwaitingApprovalSince" not in recorded
    assert get_runtime().ledger.get_phase(run_of(pre), "pre")["Status"] == "completed"  # type: ignore[index]


def test_a_hold_after_a_ready_verdict_does_not_cancel_when_cancel_on_failure_is_off(
    host: FunctionsHost, emulator: AzureEmulator, links_on: None, one_vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_CANCEL_ON_FAILURE", "false")
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), [one_vm])
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    status, page = follow(host, link(pre))

    assert status == 200 and "MAINTENANCE_CANCEL_ON_FAILURE is false" in page
    assert emulator.run_status(run_of(pre)) != "Cancelled" and "HeldAt" in row(pre)
