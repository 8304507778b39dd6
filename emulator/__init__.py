"""An in-process fake of the Azure Resource Manager endpoints this app uses.

Plugged into azure-core as a transport, so the real SDK clients run their real auth, retry and
LRO polling policies against it. For tests, the benchmark and the demo; production code never
imports it.

    emu = AzureEmulator(time_scale=0.001)          # 1 simulated second = 1 real millisecond
    vm = emu.add_vm(sub, "rg", "vm1", power_state="deallocated")
    client = ComputeManagementClient(credential, sub, base_url="https://management.emulator.test",
                                     transport=emu.transport(), polling_interval=1,
                                     credential_scopes=["https://management.emulator.test/.default"])
    client.virtual_machines.begin_start("rg", "vm1").result()
    assert emu.vm_power_state(vm) == "PowerState/running"

Run Command (VMs and Arc machines): `emu.script_behaviour(vm, exit_code=1, contains="apt")` decides
what scripts do; `emu.run_command_executions(vm)` records what ran (run_command_api.py).

Update Manager's installation results in Resource Graph (`patchinstallationresources`):
`emu.add_patch_result(vm, correlation_id, status="InProgress", appears_after=120)` and
`emu.set_patch_status(result_id, "Failed", failed=1)` (patches.py). The Tags API of VMs and Arc
machines (tags.py): `emu.tag_changes(vm)` records what was changed.

Faults between the app and Azure: `emu.fail(..., mode="reset" | "refused" | "lost-answer" |
"applied-error")`, `emu.inject_faults(rate, seed=...)` (faults.py); for Storage, the proxy in
front of Azurite (storage_faults.py).
"""

from __future__ import annotations

from .clock import EmulatorClock
from .faults import FaultStats
from .messages import ArmError, DroppedConnection
from .run_command_model import RunCommandExecution, RunCommandInfo, ScriptRule
from .service import AzureEmulator
from .state import FailureRule, RecordedRequest, TagChange
from .throttle import DEFAULT_BUCKETS, BucketSpec
from .transport import EmulatorResponse, EmulatorTransport, LegacyEmulatorResponse

__all__ = [
    "DEFAULT_BUCKETS",
    "ArmError",
    "AzureEmulator",
    "BucketSpec",
    "DroppedConnection",
    "EmulatorClock",
    "EmulatorResponse",
    "EmulatorTransport",
    "FailureRule",
    "FaultStats",
    "LegacyEmulatorResponse",
    "RecordedRequest",
    "RunCommandExecution",
    "RunCommandInfo",
    "ScriptRule",
    "TagChange",
]
