"""Whole maintenance runs with only the roles infra/ assigns: Reader and the custom roles, read from
the Bicep, granted in the emulator, which then refuses anything else with ARM's 403. Every request
the app makes is covered, and every action of the custom roles is used; a role without an action the
code needs is refused with ARM's 403."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.ledger import run_key
from handlers.runtime import get_runtime
from tests.conftest import CONFIG_ID, SUB_A, SUB_B, make_event
from tests.infra.bicep_tree import load
from tests.infra.test_least_privilege import ROLE_FILES, literal_actions, operator_json

STOP = "maintenance-stop-services"


def run_of(event: dict[str, object]) -> str:
    return str(event["data"]["correlationId"])  # type: ignore[index]


def grant_the_deployed_roles(emulator: AzureEmulator, *, leave_out: str = "") -> set[str]:
    """What main.bicep assigns with snapshots and guest actions on, both subscriptions as targets;
    returns the custom roles' actions."""
    operator = operator_json()
    custom: dict[str, set[str]] = {
        "operator": set(operator["actions"]) | set(operator["snapshotActions"]),
        "guest": literal_actions(load(ROLE_FILES["guest"])),
        "cancel": literal_actions(load(ROLE_FILES["cancel"])),
    }
    for subscription in (SUB_A, SUB_B):
        scope = f"/subscriptions/{subscription}"
        emulator.grant(scope, ["*/read"])  # Reader
        emulator.grant(scope, sorted(custom["operator"] - {leave_out}))
        emulator.grant(scope, sorted(custom["guest"]))
    emulator.grant(CONFIG_ID, sorted(custom["cancel"]))
    return set().union(*custom.values())


def refusals(emulator: AzureEmulator) -> list[str]:
    return [f"{r.method} {r.path}" for r in emulator.requests if r.status == 403]


def test_a_whole_run_needs_nothing_beyond_the_deployed_roles_and_uses_all_of_them(
    host: FunctionsHost, emulator: AzureEmulator
) -> None:
    granted = grant_the_deployed_roles(emulator)
    started = emulator.add_vm(SUB_A, "rg-web", "web-01", power_state="deallocated", tags={STOP: "nginx"})
    stopped = emulator.add_vm(SUB_A, "rg-web", "web-02", power_state="stopped")
    running = emulator.add_vm(SUB_B, "rg-db", "sql-01", power_state="running", os_type="Windows",
                              tags={STOP: "MSSQLSERVER"})
    arc = emulator.add_arc_machine(SUB_B, "rg-arc", "onprem-01", tags={STOP: "nginx"})
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    earlier = run_of(make_event("pre", run="20261101020000"))
    emulator.add_snapshot(SUB_A, "rg-web", "earlier-run", source_disk_id=emulator.disk_ids(started)[0], tags={
        "maintenance-toolkit": "snapshot", "maintenance-run": run_key(earlier), "maintenance-expires": past})

    pre = make_event("pre")
    emulator.add_run(run_of(pre), [started, stopped, running, arc])
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    host.deliver_event("post_maintenance", make_event("post"))
    host.run_queues()
    # A second run, held: its cancel.
    held = make_event("pre", run="20261129020000")
    emulator.add_vm(SUB_A, "rg-app", "held-01", power_state="running", tags={"maintenance-hold": "INC-1"})
    emulator.add_run(run_of(held), [f"/subscriptions/{SUB_A}/resourceGroups/rg-app/providers/"
                                    "Microsoft.Compute/virtualMachines/held-01"])
    host.deliver_event("pre_maintenance", held)
    host.run_queues()

    assert refusals(emulator) == [], "a call the deployed roles do not allow"
    assert all(i.succeeded for i in host.invocations)
    assert emulator.run_status(run_of(held)) == "Cancelled"
    assert emulator.actions(started) == ["start", "deallocate"] and emulator.actions(stopped) == ["start", "powerOff"]
    row = get_runtime().ledger.get_run(run_of(pre))
    assert row is not None and row["RetentionDeleted"] == 1 and row["TagsStamped"] == 4
    changes = {a for a in granted if not a.lower().endswith("/read")}
    unused = sorted(changes - set(emulator.actions_called))
    assert unused == [], f"the roles grant {unused}, which no request of a whole run used"


def test_an_action_no_role_grants_is_refused_as_arm_refuses_it(host: FunctionsHost, emulator: AzureEmulator) -> None:
    grant_the_deployed_roles(emulator, leave_out="Microsoft.Compute/virtualMachines/powerOff/action")
    emulator.add_vm(SUB_A, "rg-web", "web-02", power_state="running")
    compute = get_runtime().clients.compute(SUB_A).virtual_machines
    with pytest.raises(HttpResponseError) as refused:
        compute.begin_power_off("rg-web", "web-02").result()
    assert refused.value.status_code == 403 and refused.value.error is not None
    assert refused.value.error.code == "AuthorizationFailed"
    assert "Microsoft.Compute/virtualMachines/powerOff/action" in str(refused.value)
    compute.begin_deallocate("rg-web", "web-02").result()  # granted
    assert refusals(emulator) == [f"POST /subscriptions/{SUB_A}/resourceGroups/rg-web/providers/"
                                  "Microsoft.Compute/virtualMachines/web-02/powerOff"]
