"""The edge under storage faults, measured once per benchmark (`python -m bench`).

Event Grid waits about 30 s for an answer and then delivers again while the first invocation
still runs, so an acknowledgement must succeed or fail well inside that. Measured through the
registered functions with the app's storage behind a fault-injecting proxy (emulator.storage_faults):

- the acknowledgement of a pre event with storage healthy;
- the same with the queue service refusing connections, and with it accepting and never answering:
  seconds until `pre_maintenance` fails (so Event Grid redelivers), and the queue attempts made;
- one Storage-queue delivery of 1500 malformed events: seconds until all are refused and recorded,
  and the ledger requests that took (refusals go 100 to a transaction).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from emulator.azurite import Azurite

ACK_LIMIT = 30.0  # Event Grid's wait before it redelivers
ACK_TARGET = 25.0  # what we hold the failing acknowledgement to
MALFORMED = 1500
REFUSALS_TARGET_SECONDS = 3.0


def measure(azurite: Azurite) -> dict[str, Any]:
    """Every figure above, or {"error": ...}; the app's settings are this process's environment
    for the duration (restored after)."""
    saved = dict(os.environ)
    # The app logs every refusal at ERROR: formatted, as in production, but to /dev/null, not the report.
    logger = logging.getLogger("maintenance")
    sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - closed below
    logger.addHandler(sink)
    logger.propagate = False
    try:
        return _measure(azurite)
    except Exception as exc:  # reported beside the other figures
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        logger.removeHandler(sink)
        logger.propagate = True
        sink.stream.close()
        os.environ.clear()
        os.environ.update(saved)


def _measure(azurite: Azurite) -> dict[str, Any]:
    import azure.functions as func

    import function_app
    from bench.fleet import correlation_id_for, pre_event
    from emulator.functions_host import FunctionsHost
    from emulator.storage_faults import StorageFaultProxy
    from handlers import runtime

    def event(n: int) -> dict[str, Any]:
        now = datetime.now(UTC)
        return pre_event(correlation_id_for(now, n), ["00000000-0000-0000-0000-0000000000e1"], now,
                         now + timedelta(minutes=30))

    for name in [name for name in os.environ if name.startswith("MAINTENANCE_")]:
        del os.environ[name]
    results: dict[str, Any] = {}
    with StorageFaultProxy(azurite) as proxy:
        os.environ.update({"AzureWebJobsStorage": proxy.connection_string,
                           "MAINTENANCE_LEDGER_TABLE": f"Edge{uuid.uuid4().hex[:12]}"})
        runtime.configure()
        host = FunctionsHost(function_app.app, azurite.connection_string)
        host.deliver_event("pre_maintenance", event(1))  # warm: clients, table, queue
        results["ack_healthy"] = _ack(host, event(2))
        for n, outage in enumerate(("unreachable", "blackhole"), start=3):
            before = proxy.stats["queue"].faulted
            rule = getattr(proxy, outage)("queue")
            results[f"ack_queue_{outage}"] = _ack(host, event(n))
            results[f"ack_queue_{outage}"]["queue_attempts"] = rule.fired or proxy.stats["queue"].faulted - before
            proxy.clear()
        # Small ones: a queue message holds 64 KiB, and a larger delivery is refused whole.
        malformed = [{"id": f"b{i}"} for i in range(MALFORMED)]
        body = base64.b64encode(json.dumps(malformed, separators=(",", ":")).encode())
        table_before = proxy.stats["table"].forwarded
        started = time.perf_counter()
        host.call("maintenance_events_queue", func.QueueMessage(body=body))
        results["refusals"] = {"events": MALFORMED, "seconds": time.perf_counter() - started,
                               "table_requests": proxy.stats["table"].forwarded - table_before,
                               "recorded": _rejected_rows(runtime.get_runtime())}
    runtime.reset()
    return results


def _rejected_rows(app: Any) -> int:
    from handlers.ledger.store import REJECTED_PARTITION

    rows = app.clients.ledger_table().query_entities("PartitionKey eq @pk", parameters={"pk": REJECTED_PARTITION},
                                                     select=["RowKey"])
    return sum(1 for _ in rows)


def _ack(host: Any, event: dict[str, Any]) -> dict[str, Any]:
    host.deliver_event("pre_maintenance", event)
    invocation = host.invocations[-1]
    return {"seconds": invocation.seconds, "succeeded": invocation.succeeded,
            "error": type(invocation.error).__name__ if invocation.error else ""}


def targets(edge: dict[str, Any]) -> list[tuple[str, bool]]:
    failing = [edge[f"ack_queue_{o}"] for o in ("unreachable", "blackhole")]
    refusals = edge["refusals"]
    return [
        (f"a failing acknowledgement fails within {ACK_TARGET:.0f} s (Event Grid waits {ACK_LIMIT:.0f})",
         all(not a["succeeded"] and a["seconds"] < ACK_TARGET for a in failing)),
        (f"{MALFORMED} malformed events refused in under {REFUSALS_TARGET_SECONDS:.0f} s, in at most "
         f"{MALFORMED // 100 + 2} ledger requests",
         refusals["seconds"] < REFUSALS_TARGET_SECONDS and refusals["table_requests"] <= MALFORMED // 100 + 2
         and refusals["recorded"] == MALFORMED),
    ]


def print_edge(edge: dict[str, Any], out: Any = print) -> None:
    if "error" in edge:
        out(f"\nedge: {edge['error']}")
        return
    out("\nThe edge under storage faults (real seconds; Event Grid redelivers after about 30 s)")
    out(f"  acknowledgement, storage healthy: {edge['ack_healthy']['seconds']:.2f} s")
    for outage in ("unreachable", "blackhole"):
        ack = edge[f"ack_queue_{outage}"]
        attempts = f", {ack['queue_attempts']} queue attempts" if ack["queue_attempts"] else ""
        out(f"  acknowledgement, queue service {outage}: failed after {ack['seconds']:.1f} s "
            f"({ack['error']}{attempts})")
    refusals = edge["refusals"]
    out(f"  one queue delivery of {refusals['events']} malformed events: {refusals['seconds']:.2f} s, "
        f"{refusals['table_requests']} ledger requests, {refusals['recorded']} refusals recorded")
    for name, passed in targets(edge):
        out(f"  {'PASS' if passed else 'FAIL'}  {name}")
