"""Every way a phase ends goes through one hook (`handlers.phases.run_end`): recorded on the run
row and heard by every listener, once per end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.phases import post, run_end
from handlers.phases.post.state import PostWork
from handlers.phases.steps import PhaseRun, Step
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, SUB_B, make_event


@pytest.fixture
def heard(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, str]]]:
    """What a listener (a report, a notification) hears: (run, phase, how) for each end."""
    ends: list[tuple[str, str, str]] = []
    monkeypatch.setattr(run_end, "LISTENERS", [*run_end.LISTENERS,
                                                lambda e: ends.append((e.event.correlation_id, e.phase, e.how.value))])
    yield ends


def run_row(event: dict[str, object]) -> dict[str, object]:
    return dict(get_runtime().ledger.get_run(str(event["data"]["correlationId"])) or {})  # type: ignore[index]


def test_a_run_in_one_worker_ends_each_phase_once(
    host: FunctionsHost, emulator: AzureEmulator, heard: list[tuple[str, str, str]]
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-e", "vm-off", power_state="deallocated")
    pre = make_event("pre", subscriptions=(SUB_A,))
    run = str(pre["data"]["correlationId"])  # type: ignore[index]
    emulator.add_run(run, [vm])
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    host.deliver_event("post_maintenance", make_event("post", subscriptions=(SUB_A,)))
    host.run_queues()

    assert heard == [(run, "pre", "completed"), (run, "post", "completed")]
    row = run_row(pre)
    assert row["PreEndedHow"] == "completed" and row["PostEndedHow"] == "completed"
    assert row["PreEnded"] <= row["PostEnded"]  # type: ignore[operator]


def test_a_split_run_ends_its_pre_phase_with_the_verdict_not_with_a_group(
    host: FunctionsHost, emulator: AzureEmulator, heard: list[tuple[str, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAINTENANCE_SUBSCRIPTIONS_PER_WORKER", "1")
    vms = [emulator.add_vm(SUB_A, "rg-e", "vm-a", power_state="deallocated"),
           emulator.add_vm(SUB_B, "rg-e", "vm-b", power_state="running")]
    pre = make_event("pre")
    run = str(pre["data"]["correlationId"])  # type: ignore[index]
    emulator.add_run(run, vms)
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert heard == [(run, "pre", "verdict")]
    assert run_row(pre)["SplitMessages"] == 2


def test_a_late_pre_event_ends_its_phase_at_intake(
    host: FunctionsHost, emulator: AzureEmulator, heard: list[tuple[str, str, str]]
) -> None:
    pre = make_event("pre", subscriptions=(SUB_A,), cutoff_in=-timedelta(minutes=15))  # the window began 5 min ago
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert heard == [(str(pre["data"]["correlationId"]), "pre", "late")]  # type: ignore[index]
    assert emulator.requests == []


def test_a_failing_listener_does_not_keep_the_end_from_the_others(
    host: FunctionsHost, emulator: AzureEmulator, heard: list[tuple[str, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(ending: run_end.PhaseEnding) -> None:
        raise RuntimeError("the mail server is down")

    monkeypatch.setattr(run_end, "LISTENERS", [broken, *run_end.LISTENERS])
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(str(pre["data"]["correlationId"]), [])  # type: ignore[index]
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert [how for _, _, how in heard] == ["completed"]
    assert run_row(pre)["PreEndedHow"] == "completed"
    assert all(i.succeeded for i in host.invocations)


def test_a_failed_step_that_is_not_essential_is_recorded_and_the_steps_after_it_still_run(
    host: FunctionsHost, emulator: AzureEmulator, heard: list[tuple[str, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[str] = []

    def after_retention(run: PhaseRun[PostWork]) -> None:  # what the report step will be
        ran.append(run.event.correlation_id)

    monkeypatch.setattr(post, "STEPS", [*post.STEPS, Step("report", "post", after_retention, "a later step",
                                                          essential=False)])
    emulator.fail("graph", status=400, code="BadRequest", message="retention's query refused")
    event = make_event("post", subscriptions=(SUB_A,))
    host.deliver_event("post_maintenance", event)
    host.run_queues()

    run = str(event["data"]["correlationId"])  # type: ignore[index]
    assert ran == [run]
    assert "retention" in json.loads(str(run_row(event)["StepErrors"]))
    assert "BadRequest" in json.loads(str(run_row(event)["StepErrors"]))["retention"]
    assert heard == [(run, "post", "completed")]
    assert all(i.succeeded for i in host.invocations)
