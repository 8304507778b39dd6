"""Subscriptions are sent to in lanes of their own: one that ARM keeps throttling (another caller
drains its bucket) must not hold up the starts in the others, many subscriptions must not mean
many times MAINTENANCE_PARALLELISM threads, and a run over more subscriptions than one worker
takes is split into queue messages, with the verdict after the last (or at the deadline)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.adapters.inventory import MachineKind, RunMachine
from handlers.adapters.operations import MAX_SEND_WORKERS, MIN_LANE_WORKERS, Operation, run_operations
from handlers.adapters.power import power_operation
from handlers.core.ids import subscription_of
from handlers.core.logs import run_logger
from handlers.ledger import PHASE_LEASE, MachineRecord
from handlers.phases.pre.fan_out import LANE_PHASE_PREFIX, lane_phase
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, SUB_B, make_event, wait_for_fallback_verdict


@pytest.fixture
def emulator() -> AzureEmulator:
    # Slower simulated time than the other tests': retries wait on Retry-After (1 simulated s) and
    # must take clearly longer than a request's own CPU.
    return AzureEmulator(time_scale=0.01, latency=0.1)


def test_a_throttled_subscription_does_not_hold_up_the_others(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_PARALLELISM", "4")
    monkeypatch.setenv("MAINTENANCE_SNAPSHOT_DISKS", "none")
    throttled = [emulator.add_vm(SUB_A, "rg-a", f"a{i}", power_state="deallocated") for i in range(8)]
    free = [emulator.add_vm(SUB_B, "rg-b", f"b{i}", power_state="deallocated") for i in range(8)]
    for vm in throttled:
        emulator.fail("start", vm, status=429, code="TooManyRequests", times=8)
    pre = make_event("pre")
    emulator.add_run(run_of(pre), throttled + free)

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    accepted = {r.path.lower().removesuffix("/start"): r.time for r in emulator.requests
                if r.method == "POST" and r.path.lower().endswith("/start") and r.status == 202}
    assert len(accepted) == 16, "every VM is started, the throttled ones after their retries"
    last_free = max(accepted[vm.lower()] for vm in free)
    first_throttled = min(accepted[vm.lower()] for vm in throttled)
    assert last_free < first_throttled, (
        f"subscription B's starts waited on A's retries: last B start at {last_free:.1f} s, "
        f"first A start accepted at {first_throttled:.1f} s")


def test_many_subscriptions_share_a_bounded_number_of_send_threads(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    subscriptions = [f"00000000-0000-0000-0000-{i:012d}" for i in range(1, 71)]
    machines = [stopped_vm(emulator, sub, f"vm{n}") for sub in subscriptions for n in range(6)]
    clients = get_runtime().clients
    senders: set[int] = set()

    def slowly(operation: Operation) -> Operation:
        def send() -> Any:
            senders.add(threading.get_ident())
            time.sleep(0.2)  # every task of a lane is handed over before the first is answered
            return operation.send()
        return replace(operation, send=send)

    tasks = [[slowly(power_operation(clients, m, "start"))] for m in machines]
    results = run_operations(clients, tasks, parallelism=32, deadline=datetime.now(UTC) + timedelta(minutes=5),
                             log=run_logger(None))

    assert {r.outcome for r in results.values()} == {"succeeded"} and len(results) == 420
    per_lane = max(MIN_LANE_WORKERS, MAX_SEND_WORKERS // 70)
    assert len(senders) == 70 * per_lane, "each lane gets its share of the cap, not 6 threads of its own"


SUB_C = "00000000-0000-0000-0000-00000000000c"


def test_a_run_over_more_subscriptions_than_a_worker_takes_is_split_into_queue_messages(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_SUBSCRIPTIONS_PER_WORKER", "2")
    vms = [emulator.add_vm(sub, "rg", f"vm{n}", power_state="deallocated")
           for sub in (SUB_A, SUB_B, SUB_C) for n in range(3)]
    pre = make_event("pre", subscriptions=(SUB_A, SUB_B, SUB_C))
    emulator.add_run(run_of(pre), vms)

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    runs = [i for i in host.invocations if i.function == "maintenance_worker"]
    # The pre event, a message per group of two subscriptions, the verdict (queued twice when
    # two groups finish together; the second finds it taken).
    assert len(runs) in (1 + 2 + 1, 1 + 2 + 2) and all(i.succeeded for i in runs)
    ledger = get_runtime().ledger
    groups = ledger.phase_statuses(run_of(pre), LANE_PHASE_PREFIX)
    assert set(groups) == {lane_phase([SUB_A.lower(), SUB_B.lower()]), lane_phase([SUB_C.lower()])}
    assert set(groups.values()) == {"completed"}
    assert all(emulator.actions(vm) == ["start"] for vm in vms)
    assert {r.lane for r in ledger.list_machines(run_of(pre))} == {SUB_A.lower(), SUB_B.lower(), SUB_C.lower()}
    assert ledger.get_phase(run_of(pre), "pre-verdict")["Attempts"] == 1  # type: ignore[index]
    assert ledger.get_run(run_of(pre))["Verdict"] == "ready"  # type: ignore[index]
    assert ledger.get_phase(run_of(pre), "pre")["Status"] == "completed"  # type: ignore[index]


def test_a_split_group_retried_after_its_worker_died_starts_nothing_twice(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_SUBSCRIPTIONS_PER_WORKER", "1")
    monkeypatch.setenv("MAINTENANCE_SNAPSHOT_DISKS", "none")
    sent = emulator.add_vm(SUB_A, "rg", "sent-before", power_state="deallocated")
    unsent = emulator.add_vm(SUB_A, "rg", "not-sent-yet", power_state="stopped")
    other = emulator.add_vm(SUB_B, "rg", "other-lane", power_state="deallocated")
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [sent, unsent, other])
    host.deliver_event("pre_maintenance", pre)
    # An earlier coordinator stored these rows; the worker of subscription A started one VM and died.
    ledger = get_runtime().ledger
    ledger.add_rows(run_of(pre), [
        MachineRecord(resource_id=vm, kind="vm", subscription_id=SUB_A, resource_group="rg", name=name,
                      location="westeurope", original_power_state=state, pre_action="start", lane=subscription_of(vm))
        for vm, name, state in ((sent, "sent-before", "deallocated"), (unsent, "not-sent-yet", "stopped"))
    ])
    group = lane_phase([SUB_A.lower()])
    assert ledger.claim_phase(run_of(pre), group, now=datetime.now(UTC) - PHASE_LEASE - timedelta(minutes=1))
    emulator.set_power_state(sent, "running")

    host.run_queues()

    assert emulator.actions(sent) == [], "the retried group reads its state first: running, not started again"
    assert emulator.actions(unsent) == ["start"] and emulator.actions(other) == ["start"]
    assert ledger.get_phase(run_of(pre), group)["Attempts"] == 2  # type: ignore[index]
    rows = {r.name: r for r in ledger.list_machines(run_of(pre))}
    assert rows["sent-before"].pre_outcome == "succeeded"
    assert rows["sent-before"].original_power_state == "deallocated"


def test_a_group_that_never_finishes_is_timed_out_by_the_verdict_at_the_deadline(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_SUBSCRIPTIONS_PER_WORKER", "1")
    monkeypatch.setenv("MAINTENANCE_SNAPSHOT_DISKS", "none")
    monkeypatch.setenv("MAINTENANCE_CUTOFF_SAFETY_SECONDS", "8")
    stuck = emulator.add_vm(SUB_A, "rg", "stuck", power_state="deallocated")
    fine = emulator.add_vm(SUB_B, "rg", "fine", power_state="deallocated")
    pre = make_event("pre", cutoff_in=timedelta(seconds=12))  # the deadline 4 s from now
    emulator.add_run(run_of(pre), [stuck, fine])
    host.deliver_event("pre_maintenance", pre)
    # Subscription A's work is taken by a worker that will never finish (a fresh claim: the
    # message is a duplicate).
    assert get_runtime().ledger.claim_phase(run_of(pre), lane_phase([SUB_A.lower()]))

    host.run_queues()
    assert get_runtime().ledger.get_phase(run_of(pre), "pre")["Status"] == "dispatched"  # type: ignore[index]
    wait_for_fallback_verdict(pre, 8)
    host.run_queues()

    assert emulator.actions(stuck) == [] and emulator.actions(fine) == ["start"]
    run = get_runtime().ledger.get_run(run_of(pre))
    assert run is not None and run["Verdict"] == "failed"
    assert f"{stuck}: not running: not recorded" in run["FailingReasons"], "its group never recorded it"
    assert emulator.run_status(run_of(pre)) == "Cancelled"
    assert get_runtime().ledger.get_phase(run_of(pre), "pre")["Status"] == "completed"  # type: ignore[index]


def run_of(event: dict[str, Any]) -> str:
    return str(event["data"]["correlationId"])


def stopped_vm(emulator: AzureEmulator, subscription: str, name: str) -> RunMachine:
    """A deallocated VM in resource group `rg`, as the run's inventory describes it."""
    resource_id = emulator.add_vm(subscription, "rg", name, power_state="deallocated")
    return RunMachine(resource_id, MachineKind.VM, subscription, "rg", name)


def test_what_was_sent_first_is_polled_while_the_rest_is_still_being_sent(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    # A fleet's sending takes minutes at ARM's pace; an operation that ended early must be known
    # then, not in one sweep of every poll after the last send (which held up the verdict).
    emulator.operation_durations["start"] = 5.0
    clients = get_runtime().clients
    first, second = (stopped_vm(emulator, SUB_A, name) for name in ("early", "late"))
    ended: list[str] = []
    known_when_second_sent: list[str] = []

    def tasks() -> Any:
        yield [power_operation(clients, first, "start")]
        give_up = emulator.clock.now() + 120  # simulated seconds: far more than the start and two polls
        while not ended and emulator.clock.now() < give_up:
            yield []  # the sending is still going on (rows being stored, ARM's pace)
            emulator.clock.sleep(0.5)
        known_when_second_sent.extend(ended)
        yield [power_operation(clients, second, "start")]

    results = run_operations(clients, tasks(), parallelism=4, total=2, subscriptions=1,
                             deadline=datetime.now(UTC) + timedelta(minutes=5), log=run_logger(None),
                             on_result=lambda result: ended.append(result.resource_id))

    assert known_when_second_sent == [first.resource_id], "the first start was known before the second was sent"
    assert ended == [first.resource_id, second.resource_id]
    assert {r.outcome for r in results.values()} == {"succeeded"}


def test_outcomes_are_stored_in_chunks_as_they_come_not_all_after_the_wait(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handlers.phases.pre import send

    monkeypatch.setenv("MAINTENANCE_SNAPSHOT_DISKS", "none")
    monkeypatch.setattr(send.Outcomes, "CHUNK", 2)
    vms = [emulator.add_vm(SUB_A, "rg-o", f"vm{i}", power_state="deallocated") for i in range(5)]
    pre = make_event("pre", subscriptions=(SUB_A,))
    emulator.add_run(run_of(pre), vms)
    stored: list[tuple[int, float]] = []  # (rows, simulated time) of each ledger write of outcomes
    save_rows = get_runtime().ledger.__class__.save_rows

    def counting(self: Any, correlation_id: str, records: Any) -> None:
        rows = list(records)
        if any(getattr(r, "pre_outcome", "") == "succeeded" for r in rows):
            stored.append((len(rows), emulator.clock.now()))
        save_rows(self, correlation_id, rows)

    monkeypatch.setattr(get_runtime().ledger.__class__, "save_rows", counting)
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert [n for n, _ in stored] == [2, 2, 1], "two chunks while waiting, the last row at the end"
    assert all(emulator.vm_power_state(vm) == "PowerState/running" for vm in vms)
    assert {r.pre_outcome for r in get_runtime().ledger.list_machines(run_of(pre))} == {"succeeded"}


def test_what_one_subscription_answered_is_waited_on_while_another_is_still_sending(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    # Sends are settled as they are answered, whichever lane: subscription A's sending (minutes at
    # ARM's pace) must not keep B's accepted operations from being polled.
    clients = get_runtime().clients
    slow, quick = stopped_vm(emulator, SUB_A, "slow-lane"), stopped_vm(emulator, SUB_B, "quick-lane")
    quick_known = threading.Event()
    known_before_slow_sent: list[bool] = []
    ended: list[str] = []

    def once_the_other_is_known(operation: Operation) -> Operation:
        def send() -> Any:
            known_before_slow_sent.append(quick_known.wait(timeout=20))  # real seconds
            return operation.send()
        return replace(operation, send=send)

    def on_result(outcome: Any) -> None:
        ended.append(outcome.resource_id)
        quick_known.set()

    results = run_operations(clients, [[once_the_other_is_known(power_operation(clients, slow, "start"))],
                                       [power_operation(clients, quick, "start")]],
                             parallelism=4, deadline=datetime.now(UTC) + timedelta(minutes=5), log=run_logger(None),
                             on_result=on_result)

    assert known_before_slow_sent == [True], "B's start ended while A's request was still on its way out"
    assert ended == [quick.resource_id, slow.resource_id]
    assert {r.outcome for r in results.values()} == {"succeeded"}


def test_one_subscriptions_slow_polls_do_not_take_every_poll_thread(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    # A poll waits in its thread (ARM's Retry-After on a 429, the read bucket): while subscription
    # A's polls are queued up, B's due poll takes the next free thread, not the place after A's.
    emulator.operation_durations["start"] = 1.0
    clients = get_runtime().clients
    busy = [stopped_vm(emulator, SUB_A, f"busy{i}") for i in range(8)]
    other = stopped_vm(emulator, SUB_B, "other")
    for machine in busy:
        emulator.fail("operationStatus", machine.resource_id, status=429, code="TooManyRequests", times=3)
    ended: list[str] = []

    def tasks() -> Any:
        yield from ([power_operation(clients, m, "start")] for m in busy)
        give_up = emulator.clock.now() + 120  # simulated seconds
        while emulator.count("GET", "/operations/", status=429) < 2 and emulator.clock.now() < give_up:
            yield []  # A's polls are being throttled
            emulator.clock.sleep(0.2)
        yield [power_operation(clients, other, "start")]

    results = run_operations(clients, tasks(), parallelism=2, total=9, subscriptions=2,
                             deadline=datetime.now(UTC) + timedelta(minutes=5), log=run_logger(None),
                             on_result=lambda outcome: ended.append(outcome.resource_id))

    assert {r.outcome for r in results.values()} == {"succeeded"} and len(results) == 9
    assert ended.index(other.resource_id) <= 2, f"B's start waited behind A's throttled polls: {ended}"


def test_a_retried_group_records_the_snapshot_its_dead_attempt_made_before_the_verdict_reads_it(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A group's worker made a snapshot and died before storing its outcome. The retried group finds
    # the snapshot (Resource Graph, by the run's tag) and reuses it; the verdict, in another
    # invocation, reads the ledger: the row must say so there, not only in the retried worker.
    from handlers.adapters.snapshots import MARKER_TAG, MARKER_VALUE, RUN_TAG, snapshot_name
    from handlers.core.keys import run_key
    from handlers.ledger import SnapshotRecord

    monkeypatch.setenv("MAINTENANCE_SUBSCRIPTIONS_PER_WORKER", "1")
    monkeypatch.setenv("MAINTENANCE_SNAPSHOT_DISKS", "os")
    made = emulator.add_vm(SUB_A, "rg", "made-before", power_state="running")
    other = emulator.add_vm(SUB_B, "rg", "other-lane", power_state="running")
    pre = make_event("pre")
    run = run_of(pre)
    emulator.add_run(run, [made, other])
    host.deliver_event("pre_maintenance", pre)
    disk = emulator.disk_ids(made)[0]
    name = snapshot_name(disk, run)
    snapshot = emulator.add_snapshot(SUB_A, "rg", name, source_disk_id=disk,
                                     tags={MARKER_TAG: MARKER_VALUE, RUN_TAG: run_key(run)})
    ledger = get_runtime().ledger
    ledger.add_rows(run, [
        MachineRecord(resource_id=made, kind="vm", subscription_id=SUB_A, resource_group="rg", name="made-before",
                      location="westeurope", original_power_state="running", pre_outcome="not-needed",
                      lane=subscription_of(made)),
        SnapshotRecord(disk_id=disk, vm_id=made, snapshot_id=snapshot, snapshot_name=name, location="westeurope",
                       lane=subscription_of(made)),
    ])
    group = lane_phase([SUB_A.lower()])
    assert ledger.claim_phase(run, group, now=datetime.now(UTC) - PHASE_LEASE - timedelta(minutes=1))

    host.run_queues()

    rows = {r.vm_id.lower(): r for r in ledger.list_snapshots(run)}
    assert rows[made.lower()].outcome == "reused"
    assert emulator.count("PUT", f"/snapshots/{name}") == 0, "the snapshot was not made again"
    assert ledger.get_run(run)["Verdict"] == "ready", ledger.get_run(run)["FailingReasons"]  # type: ignore[index]


def test_the_groups_of_a_split_run_take_their_machines_from_the_coordinator_not_from_resource_graph(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Resource Graph's quota is the identity's, shared by every instance: the coordinator asks for
    # the run's machines, the unreadable subscriptions and the machines' views once; the groups
    # read theirs from its hand-off; the verdict (every group finished) reads the tags again only.
    from handlers.core.keys import run_key

    monkeypatch.setenv("MAINTENANCE_SUBSCRIPTIONS_PER_WORKER", "1")
    monkeypatch.setenv("MAINTENANCE_SNAPSHOT_DISKS", "os")
    vms = [emulator.add_vm(sub, "rg", f"vm{n}", power_state=state)
           for sub in (SUB_A, SUB_B, SUB_C) for n, state in enumerate(("deallocated", "running"))]
    pre = make_event("pre", subscriptions=(SUB_A, SUB_B, SUB_C))
    emulator.add_run(run_of(pre), vms)

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    runtime = get_runtime()
    row = runtime.ledger.get_run(run_of(pre))
    assert row is not None and row["Verdict"] == "ready", row
    assert row["SplitMessages"] == 3 and row["HandedOff"] == 3
    assert emulator.count("POST", "/providers/Microsoft.ResourceGraph/resources") == 3 + 1
    assert [emulator.actions(vm) for vm in vms] == [["start"], []] * 3
    assert len(runtime.ledger.list_snapshots(run_of(pre))) == 6
    container = runtime.clients.blob_container(runtime.settings.handoff_container)
    assert list(container.list_blobs(name_starts_with=run_key(run_of(pre)))) == [], "the verdict deleted them"


def test_the_verdict_of_a_split_run_reads_the_hold_tag_a_person_set_after_the_groups_planned(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_SUBSCRIPTIONS_PER_WORKER", "1")
    monkeypatch.setenv("MAINTENANCE_SNAPSHOT_DISKS", "none")
    held, free = (emulator.add_vm(sub, "rg", "app", power_state="running") for sub in (SUB_A, SUB_B))
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [held, free])
    # A person tags the machine once the coordinator has read the views it hands the groups.
    from handlers.phases.pre import fan_out

    hand_off = fan_out._hand_off

    def then_tagged(run: Any) -> Any:
        store = hand_off(run)
        with emulator.lock:
            emulator.find_vm(held).tags = {"maintenance-hold": "INC-42"}
        return store

    monkeypatch.setattr(fan_out, "_hand_off", then_tagged)

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    row = get_runtime().ledger.get_run(run_of(pre))
    assert row is not None and row["Verdict"] == "failed"
    assert str(row["FailingReasons"]).count("carries the hold tag") == 1 and "INC-42" in str(row["FailingReasons"])
    assert emulator.run_status(run_of(pre)) == "Cancelled"
