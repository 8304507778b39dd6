"""The post phase never outruns functionTimeout: restores that take longer than one invocation
may run go on in new invocations, and what ran beside them there is not run again."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.core.events import parse_event
from handlers.core.work import WorkMessage
from handlers.ledger import REJECTED_PARTITION
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, make_event

TIMEOUT_SECONDS = 10  # functionTimeout for this test: each invocation may wait 8 s
DEALLOCATE_SECONDS = 20  # real seconds a deallocation takes: three invocations' worth of waiting


@pytest.fixture
def short_timeout(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AzureFunctionsJobHost__functionTimeout", f"00:00:{TIMEOUT_SECONDS:02d}")
    monkeypatch.setenv("MAINTENANCE_LEASE_SECONDS", "4")


def test_a_restore_longer_than_an_invocation_still_restores_every_vm_and_runs_retention(
    short_timeout: None, host: FunctionsHost, emulator: AzureEmulator
) -> None:
    vms = [emulator.add_vm(SUB_A, "rg-app", f"app-{i}", power_state="deallocated") for i in range(3)]
    pre = make_event("pre", subscriptions=(SUB_A,))
    correlation_id = str(pre["data"]["correlationId"])
    emulator.add_run(correlation_id, vms)
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    assert all(emulator.vm_power_state(vm) == "PowerState/running" for vm in vms)

    emulator.operation_durations["deallocate"] = DEALLOCATE_SECONDS / emulator.clock.time_scale
    host.invocations.clear()
    host.deliver_event("post_maintenance", make_event("post", subscriptions=(SUB_A,)))
    host.run_queues()

    assert all(emulator.vm_power_state(vm) == "PowerState/deallocated" for vm in vms)
    assert all(emulator.actions(vm) == ["start", "deallocate"] for vm in vms), "each VM deallocated once"
    worker = [i for i in host.invocations if i.function == "maintenance_worker"]
    assert all(i.succeeded for i in worker)
    assert max(i.seconds for i in worker) < TIMEOUT_SECONDS, [round(i.seconds, 1) for i in worker]
    assert len(worker) >= 3, "three rounds of restoring"
    ledger = get_runtime().ledger
    assert {r.restore_outcome for r in ledger.list_machines(correlation_id)} == {"succeeded"}
    run = ledger.get_run(correlation_id) or {}
    assert run.get("RetentionSeen") == 3, "retention ran beside the restores (and saw this run's snapshots)"
    assert run.get("RetentionDeleted") == 0
    assert run.get("PostEndedHow") == "completed"
    post = ledger.get_phase(correlation_id, "post") or {}
    assert post.get("Status") == "completed" and post.get("Resume") == "restore-power"
    # The steps that finished beside the restores in the first invocation were not run again.
    tag_writes = [r for r in emulator.requests if r.method == "PATCH" and r.path.endswith("/tags/default")]
    assert len(tag_writes) == 3, "each VM tagged once, in the first invocation"
    assert run.get("ReportUrl"), "the report was written once the restores had ended"


@pytest.mark.parametrize(("resume", "done", "named"), [
    ("tag-the-vms", (), "message.resume"),
    ("restore-power", ("tags", "tag-the-vms"), "message.done"),
    ("", ("tags",), "message.done"),
])
def test_a_message_resuming_at_a_step_the_phase_does_not_have_is_recorded_and_dropped(
    host: FunctionsHost, emulator: AzureEmulator, resume: str, done: tuple[str, ...], named: str
) -> None:
    post = parse_event(make_event("post", subscriptions=(SUB_A,)))
    body = replace(WorkMessage(post), resume=resume, done=done, rounds=1).to_json()
    host.queue(get_runtime().settings.work_queue).send_message(base64.b64encode(body.encode()).decode())
    host.run_queues()

    table = get_runtime().clients.ledger_table()
    refused = [str(r["Reason"]) for r in table.query_entities("PartitionKey eq @pk",
                                                               parameters={"pk": REJECTED_PARTITION})]
    assert any(named in reason and ("'tag-the-vms'" in reason or "needs resume" in reason)
               for reason in refused), refused
    assert all(i.succeeded for i in host.invocations), "dropped, not retried into the poison queue"
    assert emulator.requests == []
