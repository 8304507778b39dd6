"""What the Functions host allows one invocation: `functionTimeout`.

Read as the host reads it: the app setting `AzureFunctionsJobHost__functionTimeout` overrides
host.json's `functionTimeout`; without either, the plan's default (Flex Consumption: 30 minutes).
"-1" (unbounded, Flex Consumption and Premium) counts as the default: an invocation that waits
for hours is still not what a phase should be.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from handlers.core.errors import SettingsError

TIMEOUT_SETTING = "AzureFunctionsJobHost__functionTimeout"
DEFAULT_FUNCTION_TIMEOUT = 30 * 60
HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"
_TIMESPAN = re.compile(r"(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})")


def function_timeout_seconds(environ: Mapping[str, str], host_json: Path = HOST_JSON) -> int:
    """The function timeout in seconds; SettingsError naming where a bad value came from."""
    value = (environ.get(TIMEOUT_SETTING) or "").strip()
    source = TIMEOUT_SETTING
    if not value:
        source = "host.json functionTimeout"
        try:
            value = str(json.loads(host_json.read_text(encoding="utf-8")).get("functionTimeout") or "")
        except (OSError, ValueError, AttributeError):
            value = ""
    if not value or value == "-1":
        return DEFAULT_FUNCTION_TIMEOUT
    match = _TIMESPAN.fullmatch(value)
    if match is None:
        raise SettingsError(source, f"{value!r} is not a time span like 00:30:00 (or -1)")
    seconds = (int(match["days"] or 0) * 86400 + int(match["h"]) * 3600 + int(match["m"]) * 60 + int(match["s"]))
    if seconds < 10:
        raise SettingsError(source, f"{value!r} is under 10 seconds: no phase step fits in it")
    return seconds


def invocation_budget_seconds(function_timeout: int) -> float:
    """How long one invocation's steps may wait: the timeout less a margin for finishing (the
    ledger writes and the message that continues the phase), a fifth of it, at most 2 minutes."""
    return function_timeout - min(120.0, function_timeout / 5)
