"""The post phase's order in ARM's write budget: the restores' requests go out before any tag,
however long they take to go out, although the tags' patch results are read long before."""

from __future__ import annotations

import pytest

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from tests.conftest import SUB_A, make_event


@pytest.fixture
def emulator() -> AzureEmulator:
    # Slower simulated time than the other tests': a throttled restore's Retry-After waits (1
    # simulated s each) must take longer in real time than reading and storing the patch results.
    return AzureEmulator(time_scale=0.01)


def test_the_tags_wait_until_every_restore_is_sent(host: FunctionsHost, emulator: AzureEmulator) -> None:
    vms = [emulator.add_vm(SUB_A, "rg-app", f"app-{i}", power_state="deallocated") for i in range(3)]
    pre = make_event("pre", subscriptions=(SUB_A,))
    run = str(pre["data"]["correlationId"])
    emulator.add_run(run, vms)
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    for vm in vms:
        emulator.add_patch_result(vm, run)
    emulator.fail("deallocate", vms[2], status=429, code="TooManyRequests", times=40)

    host.deliver_event("post_maintenance", make_event("post", subscriptions=(SUB_A,)))
    host.run_queues()

    sent = [r.time for r in emulator.requests
            if r.method == "POST" and r.path.endswith("/deallocate") and r.status == 202]
    tagged = [r.time for r in emulator.requests if r.method == "PATCH" and r.path.endswith("/tags/default")]
    assert len(sent) == 3 and len(tagged) == 3
    assert max(sent) < min(tagged), f"a tag went out {max(sent) - min(tagged):.1f} s before the last restore"
