from __future__ import annotations

import re

from handlers.ledger import MachineRecord, machine_row_key, run_key

RUN = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
       "Microsoft.Maintenance/maintenanceConfigurations/mc-weekly/providers/Microsoft.Maintenance/"
       "applyUpdates/20261122020000")
# Characters the Table service forbids in PartitionKey/RowKey.
FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


def test_run_key_is_readable_valid_and_case_insensitive() -> None:
    key = run_key(RUN)
    assert key.startswith("mc-weekly_20261122020000_")
    assert not FORBIDDEN.search(key) and len(key) < 1024
    assert run_key(RUN.replace("providers/Microsoft.Maintenance", "providers/microsoft.maintenance")) == key


def test_run_keys_differ_between_configurations_with_the_same_name() -> None:
    other = RUN.replace("resourceGroups/rg/", "resourceGroups/rg2/")
    assert run_key(other) != run_key(RUN)


def test_machine_row_key_is_stable_and_valid() -> None:
    vm = "/subscriptions/x/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM1"
    assert machine_row_key(vm) == machine_row_key(vm.lower())
    assert machine_row_key(vm).startswith("machine-") and not FORBIDDEN.search(machine_row_key(vm))


def test_machine_record_round_trips_through_an_entity() -> None:
    record = MachineRecord(resource_id="/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/"
                           "virtualMachines/vm1", kind="vm", original_power_state="stopped", pre_action="start",
                           opted_out=False)
    entity = record.to_entity("p")
    assert entity["OriginalPowerState"] == "stopped" and entity["PreAction"] == "start"
    assert MachineRecord.from_entity(entity) == record
