"""After the window, through the registered functions: tags stamped on each machine (merged, not
replaced) and the `maintenance-after` tag deciding what becomes of a machine."""

from __future__ import annotations

import json

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.ledger import MachineRecord
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, SUB_B, make_event


def run_of(event: dict[str, object]) -> str:
    return str(event["data"]["correlationId"])  # type: ignore[index]


def rows(event: dict[str, object]) -> dict[str, MachineRecord]:
    return {r.name: r for r in get_runtime().ledger.list_machines(run_of(event))}


def whole_run(host: FunctionsHost, emulator: AzureEmulator, machines: list[str], results: dict[str, str] | None = None
              ) -> dict[str, object]:
    pre = make_event("pre")
    emulator.add_run(run_of(pre), machines)
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    for machine, status in (results or {}).items():
        emulator.add_patch_result(machine, run_of(pre), status=status, failed=1 if status == "Failed" else 0)
    host.deliver_event("post_maintenance", make_event("post"))
    host.run_queues()
    return pre


def test_each_machine_is_stamped_and_keeps_its_other_tags(host: FunctionsHost, emulator: AzureEmulator) -> None:
    web = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="running", tags={"owner": "team-web"})
    db = emulator.add_vm(SUB_B, "rg-db", "db-01", power_state="deallocated", tags={"Maintenance-Last-Status": "old"})
    arc = emulator.add_arc_machine(SUB_B, "rg-arc", "onprem-01", tags={"site": "dc1"})
    pre = whole_run(host, emulator, [web, db, arc], {web: "Succeeded", db: "Failed"})

    changes = emulator.tag_changes()
    assert {c.operation for c in changes} == {"Merge"}, "merged, never replaced"
    stamped = {c.machine_id.lower(): dict(c.tags) for c in changes}
    window = make_event("pre")["data"]["startDateTime"]  # type: ignore[index]
    assert stamped[web.lower()]["maintenance-last-status"] == "Succeeded"
    assert stamped[db.lower()]["maintenance-last-status"] == "Failed"
    assert stamped[arc.lower()]["maintenance-last-status"] == "not-reported"
    assert stamped[web.lower()]["maintenance-last-run"][:10] == str(window)[:10]
    graph = get_runtime().clients.compute(SUB_A).virtual_machines.get("rg-web", "web-01")
    assert graph.tags == {"owner": "team-web", "maintenance-last-run": stamped[web.lower()]["maintenance-last-run"],
                          "maintenance-last-status": "Succeeded"}
    run = get_runtime().ledger.get_run(run_of(pre))
    assert run is not None and run["TagsStamped"] == 3 and not run.get("TagsFailed")


def test_a_machine_that_cannot_be_tagged_is_recorded_and_the_report_still_written(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_ARM_RETRIES", "0")
    web = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="running")
    other = emulator.add_vm(SUB_A, "rg-web", "web-02", power_state="running")
    emulator.fail("tags", web, status=403, code="AuthorizationFailed", message="no Tag Contributor")
    pre = whole_run(host, emulator, [web, other])

    run = get_runtime().ledger.get_run(run_of(pre))
    assert run is not None and run["TagsStamped"] == 1
    assert "AuthorizationFailed" in json.loads(str(run["TagsFailed"]))[web.lower()]
    assert "tags" in json.loads(str(run["StepErrors"])) and run.get("ReportUrl")
    assert all(i.succeeded for i in host.invocations)


def test_custom_stamps_and_none(host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAINTENANCE_RESULT_TAGS", "patched-in=run-id, last-verdict=verdict")
    web = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="running")
    pre = whole_run(host, emulator, [web])
    assert [dict(c.tags) for c in emulator.tag_changes(web)] == [
        {"patched-in": run_of(pre).rsplit("/", 1)[1], "last-verdict": "ready"}]


def test_no_stamps_when_turned_off(
    host: FunctionsHost, emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_RESULT_TAGS", "none")
    web = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="running")
    whole_run(host, emulator, [web])
    assert emulator.tag_changes() == []


def test_maintenance_after_decides_what_becomes_of_a_machine(host: FunctionsHost, emulator: AzureEmulator) -> None:
    running_off = emulator.add_vm(SUB_A, "rg-app", "was-running", power_state="running",
                                  tags={"maintenance-after": "deallocate"})
    stop = emulator.add_vm(SUB_A, "rg-app", "to-stop", power_state="deallocated", tags={"maintenance-after": "stop"})
    keep = emulator.add_vm(SUB_A, "rg-app", "keep-on", power_state="deallocated",
                           tags={"maintenance-after": "leave-running"})
    default = emulator.add_vm(SUB_A, "rg-app", "default", power_state="stopped", tags={"maintenance-after": "restore"})
    odd = emulator.add_vm(SUB_A, "rg-app", "odd", power_state="deallocated", tags={"maintenance-after": "hibernate"})
    pre = whole_run(host, emulator, [running_off, stop, keep, default, odd])

    assert emulator.actions(running_off) == ["deallocate"], "turned off after patching, though it was running"
    assert emulator.actions(stop) == ["start", "powerOff"], "stopped rather than deallocated as it was"
    assert emulator.actions(keep) == ["start"] and emulator.vm_power_state(keep) == "PowerState/running"
    assert emulator.actions(default) == ["start", "powerOff"]
    assert emulator.actions(odd) == ["start", "deallocate"], "an unknown value puts it back as it was"
    recorded = rows(pre)
    assert recorded["keep-on"].restore_detail == "left running: maintenance-after=leave-running"
    assert "maintenance-after='hibernate' is not one of restore, deallocate, stop, leave-running" in \
        recorded["odd"].after_detail
    assert recorded["was-running"].restore_outcome == "succeeded"
