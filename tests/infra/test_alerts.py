"""The log alerts fire once per thing a person must hear about: per toolkit alert (per poison
message, per run), per cancelled run, per failed invocation that nothing retries."""

from __future__ import annotations

import re
from pathlib import Path

from handlers.core import telemetry
from handlers.ledger.alerts import ALERT_MARKER

ALERTS = Path(__file__).resolve().parents[2] / "infra" / "app" / "alerts.bicep"


def _rules() -> dict[str, str]:
    """Log alert name -> its query (as the Bicep literal spells it)."""
    text = ALERTS.read_text()
    return dict(re.findall(r"name: '([\w-]+)'\n(?:.*\n){1,4}?\s+query: '((?:[^'\\]|\\.)*)'", text))


def test_every_rule_splits_by_the_alert_column_its_query_projects() -> None:
    text = ALERTS.read_text()
    assert re.search(r"dimensions: \[\s*\{\s*name: 'alert'\s*operator: 'Include'\s*values: \[\s*'\*'\s*\]", text)
    rules = _rules()
    assert set(rules) == {"function-failures", "run-cancelled", "toolkit-alert"}
    for name, query in rules.items():
        assert re.search(r"\| project [^|]*\balert\s*$", query), f"{name} projects no alert column: {query}"


def test_the_toolkit_alert_is_one_per_alert_line_by_its_telemetry_attribute() -> None:
    query = _rules()["toolkit-alert"]
    assert f'"{ALERT_MARKER}"' in query
    assert f'customDimensions["{telemetry.ALERT}"]' in query


def test_function_failures_are_only_those_of_functions_nothing_retries() -> None:
    import function_app
    from emulator.functions_host import index_functions

    unretried = set()
    for name, function in index_functions(function_app.app).items():
        for binding in function.get_bindings():
            queue = getattr(binding, "queue_name", "") or ""
            if binding.type in ("httpTrigger", "timerTrigger") or (binding.type == "queueTrigger"
                                                                   and queue.endswith("-poison")):
                unretried.add(name)
    listed = re.search(r"var unretriedFunctions = '([^']*)'", ALERTS.read_text())
    assert listed is not None
    assert set(re.findall(r'"(\w+)"', listed.group(1))) == unretried
    assert "unretriedFunctions" in _rules()["function-failures"]
