"""Snapshots, pre-checks, the verdict and retention, through the registered functions."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.adapters.snapshots import snapshot_name
from handlers.ledger import run_key
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, SUB_B, make_event


def run_of(event: dict[str, object]) -> str:
    return str(event["data"]["correlationId"])  # type: ignore[index]


def snapshot_puts(emulator: AzureEmulator) -> int:
    return emulator.count(method="PUT", path_contains="/providers/microsoft.compute/snapshots/")


def run_row(event: dict[str, object]) -> dict[str, object]:
    row = get_runtime().ledger.get_run(run_of(event))
    assert row is not None
    return row


def test_all_disks_snapshotted_incrementally_with_tags(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_SNAPSHOT_DISKS", "all")
    vm = emulator.add_vm(SUB_A, "rg-app", "app-01", power_state="deallocated", data_disks=2)
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [vm])

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    snapshots = emulator.snapshots()
    disks = emulator.disk_ids(vm)
    assert len(disks) == 3 and len(snapshots) == 3
    assert {s["source"].lower() for s in snapshots} == {d.lower() for d in disks}
    for snapshot in snapshots:
        tags = snapshot["tags"]
        assert tags["maintenance-toolkit"] == "snapshot"
        assert tags["maintenance-correlation-id"] == run_of(pre)
        assert tags["maintenance-run"] == run_key(run_of(pre))
        assert tags["maintenance-source-vm"] == vm
        assert tags["maintenance-source-disk"].lower() == snapshot["source"].lower()
        expires = datetime.fromisoformat(tags["maintenance-expires"].replace("Z", "+00:00"))
        assert timedelta(days=6) < expires - datetime.now(UTC) <= timedelta(days=7)
        assert snapshot["provisioningState"] == "Succeeded"
        assert snapshot["name"] == snapshot_name(snapshot["source"], run_of(pre))
    assert all(s.get("incremental") is True for s in snapshots)
    assert emulator.run_status(run_of(pre)) != "Cancelled"
    assert emulator.vm_power_state(vm) == "PowerState/running"


def test_same_event_twice_and_a_retried_worker_make_one_snapshot_per_disk(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_ARM_RETRIES", "0")
    vm = emulator.add_vm(SUB_A, "rg-app", "app-02", power_state="stopped")
    failing = emulator.add_vm(SUB_A, "rg-app", "app-03", power_state="stopped")
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [vm, failing])
    emulator.fail("start", failing, mode="operation", code="AllocationFailed")
    emulator.fail("cancel", status=503, code="ServiceUnavailable", times=1)  # first worker attempt dies here

    host.deliver_event("pre_maintenance", pre)
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert len(emulator.snapshots()) == 2
    assert snapshot_puts(emulator) == 2, "the retried worker reuses the snapshots the first attempt made"
    assert emulator.run_status(run_of(pre)) == "Cancelled"
    outcomes = {s.vm_id: s.outcome for s in get_runtime().ledger.list_snapshots(run_of(pre))}
    assert set(outcomes.values()) <= {"succeeded", "reused"}


def test_ephemeral_and_vhd_disks_are_skipped_with_reasons(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    ephemeral = emulator.add_vm(SUB_A, "rg-x", "eph-01", power_state="running", os_disk="ephemeral")
    vhd = emulator.add_vm(SUB_B, "rg-x", "vhd-01", power_state="running", os_disk="unmanaged")
    arc = emulator.add_arc_machine(SUB_B, "rg-x", "arc-01")
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [ephemeral, vhd, arc])

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert snapshot_puts(emulator) == 0
    reasons = {s.vm_id: (s.outcome, s.detail) for s in get_runtime().ledger.list_snapshots(run_of(pre))}
    assert reasons[ephemeral][0] == "skipped" and "ephemeral" in reasons[ephemeral][1]
    assert reasons[vhd][0] == "skipped" and "VHD" in reasons[vhd][1]
    assert reasons[arc][0] == "skipped" and "Arc" in reasons[arc][1]
    assert emulator.run_status(run_of(pre)) != "Cancelled"


def test_failed_snapshot_cancels_the_run(host: FunctionsHost, emulator: AzureEmulator) -> None:
    vm = emulator.add_vm(SUB_A, "rg-app", "app-04", power_state="running")
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [vm])
    emulator.fail("snapshot", mode="operation", code="InternalDiskManagementError", message="copy failed")

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled"
    row = run_row(pre)
    assert "snapshots-succeeded" in str(row["FailingReasons"]) and "copy failed" in str(row["FailingReasons"])
    assert row["CancelOutcome"] == "accepted"


def test_dropped_connections_on_a_snapshot_are_retried_up_to_the_arm_retries_setting(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    # azure-core retries a dropped connection only 3 times unless told otherwise; the setting
    # (10 by default) promises retries for dropped connections too, and a snapshot has no state to
    # read back, so a fourth reset in a row would fail it and cancel the run.
    vm = emulator.add_vm(SUB_A, "rg-app", "app-05", power_state="running")
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [vm])
    emulator.fail("snapshot", mode="reset", times=6)

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert snapshot_puts(emulator) == 7, "six dropped, the seventh answered"
    assert run_row(pre)["Verdict"] == "ready"
    assert emulator.run_status(run_of(pre)) != "Cancelled"


def test_hold_tag_cancels_the_run(host: FunctionsHost, emulator: AzureEmulator) -> None:
    held = emulator.add_vm(SUB_A, "rg-app", "app-05", power_state="running", tags={"maintenance-hold": "INC-1234"})
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [held])

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled"
    assert "INC-1234" in str(run_row(pre)["FailingReasons"])
    record = get_runtime().ledger.list_machines(run_of(pre))[0]
    assert "no-hold-tag" in record.check_failures


@pytest.mark.parametrize(("status", "cancelled"), [(200, False), (503, True), (None, True)])
def test_http_probe(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch, probe_server: dict[str, object],
    status: int | None, cancelled: bool,
) -> None:
    url = str(probe_server["url"])
    if status is None:  # nothing listens there
        url = url.replace(url.split(":")[2].split("/")[0], "9")
    else:
        probe_server["answers"] = [status]
    monkeypatch.setenv("MAINTENANCE_PRE_CHECKS", "http-probe")
    monkeypatch.setenv("MAINTENANCE_HTTP_PROBE_URL", url)
    monkeypatch.setenv("MAINTENANCE_HTTP_PROBE_TIMEOUT_SECONDS", "2")
    vm = emulator.add_vm(SUB_A, "rg-app", "app-06", power_state="running")
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [vm])

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert (emulator.run_status(run_of(pre)) == "Cancelled") is cancelled
    assert ("http-probe" in str(run_row(pre).get("FailingReasons", ""))) is cancelled


def test_snapshot_pending_at_deadline_cancels_before_cutoff(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_CUTOFF_SAFETY_SECONDS", "2")
    emulator.operation_durations["snapshot"] = 10_000_000.0
    vm = emulator.add_vm(SUB_A, "rg-app", "app-07", power_state="running")
    pre = make_event("pre", cutoff_in=timedelta(seconds=4))
    emulator.add_run(run_of(pre), [vm])

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled"
    assert "still being created at the deadline" in str(run_row(pre)["FailingReasons"])


def test_vm_agent_check(host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAINTENANCE_CHECK_VM_AGENT", "true")
    vm = emulator.add_vm(SUB_A, "rg-app", "app-08", power_state="running")
    emulator.set_agent_ready(vm, False)
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [vm])

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    assert emulator.run_status(run_of(pre)) == "Cancelled"
    assert "VM agent is not Ready" in str(run_row(pre)["FailingReasons"])


def test_retention_deletes_only_expired_toolkit_snapshots(
    host: FunctionsHost, emulator: AzureEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-app", "app-09", power_state="running")
    disk = emulator.disk_ids(vm)[0]
    pre = make_event("pre", run="20261122020000")
    emulator.add_run(run_of(pre), [vm])
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old_run = run_of(make_event("pre", run="20261101020000"))
    failed_run = run_of(make_event("pre", run="20261108020000"))

    def seed(name: str, run: str, expires: str, toolkit: bool = True) -> str:
        tags = {"maintenance-toolkit": "snapshot", "maintenance-run": run_key(run), "maintenance-expires": expires}
        return emulator.add_snapshot(SUB_A, "rg-app", name, source_disk_id=disk, tags=tags if toolkit else {})

    expired = seed("old-expired", old_run, past)
    not_yet = seed("old-not-expired", old_run, future)
    foreign = seed("someone-elses", old_run, past, toolkit=False)
    failed = seed("failed-run-expired", failed_run, past)
    current = seed("current-run", run_of(pre), past)
    get_runtime().ledger.update_run(failed_run, {"RunStatus": "failed"})

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    with caplog.at_level(logging.INFO):
        host.deliver_event("post_maintenance", make_event("post", run="20261122020000"))
        host.run_queues()

    remaining = {s["id"] for s in emulator.snapshots()}
    assert expired not in remaining
    assert {not_yet, foreign, failed, current} <= remaining
    assert run_row(pre)["RetentionDeleted"] == 1


def test_retention_in_dry_run_only_reports(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MAINTENANCE_DRY_RUN", "true")
    vm = emulator.add_vm(SUB_A, "rg-app", "app-10", power_state="running")
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = emulator.add_snapshot(SUB_A, "rg-app", "old", source_disk_id=emulator.disk_ids(vm)[0], tags={
        "maintenance-toolkit": "snapshot", "maintenance-run": "mc_2026_x", "maintenance-expires": past})
    post = make_event("post")

    with caplog.at_level(logging.INFO):
        host.deliver_event("post_maintenance", post)
        host.run_queues()

    assert old in {s["id"] for s in emulator.snapshots()}
    assert any("would delete expired snapshot" in r.getMessage() and old in r.getMessage() for r in caplog.records)


def test_a_snapshot_name_taken_by_another_disk_is_an_error_not_a_reuse(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    vm = emulator.add_vm(SUB_A, "rg-app", "app-11", power_state="running")
    other = emulator.add_vm(SUB_A, "rg-app", "app-12", power_state="running")
    pre = make_event("pre")
    emulator.add_run(run_of(pre), [vm])
    ours = snapshot_name(emulator.disk_ids(vm)[0], run_of(pre))
    emulator.add_snapshot(SUB_A, "rg-app", ours, source_disk_id=emulator.disk_ids(other)[0])

    host.deliver_event("pre_maintenance", pre)
    host.run_queues()

    [record] = [s for s in get_runtime().ledger.list_snapshots(run_of(pre))]
    assert record.outcome == "failed" and "409" in record.detail
    assert emulator.run_status(run_of(pre)) == "Cancelled"
    taken = [s for s in emulator.snapshots() if s["name"] == ours]
    assert len(taken) == 1 and taken[0]["source"].lower() == emulator.disk_ids(other)[0].lower()
