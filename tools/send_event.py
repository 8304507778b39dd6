"""Post a sample event to a local func host's Event Grid webhook: `./dev send-event FILE`.

Times are rewritten relative to now (window start in 40 minutes, the sample's cutoff offset and
duration kept), so the cutoff is ahead and the pre event does real work; the run id in the
correlation id follows the new start unless `--run-id` names one (use the id printed for the pre
event when sending its post event).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

_TIME_KEYS = ("startdatetime", "enddatetime", "cancellationcutoffdatetime")
WEBHOOK = "/runtime/webhooks/EventGrid"


def rewrite_times(
    raw: dict[str, Any], *, now: datetime, start_in: timedelta, run_id: str | None = None
) -> dict[str, Any]:
    """A copy of the event with its window moved to start `start_in` from now (any key casing)."""
    event = copy.deepcopy(raw)
    data = event.get("data")
    if not isinstance(data, dict):
        return event
    keys = {k.lower(): k for k in data}
    start = (now + start_in).replace(second=0, microsecond=0)
    old = {name: _parse(data.get(keys.get(name, ""))) for name in _TIME_KEYS}
    duration = (old["enddatetime"] - old["startdatetime"]) if old["enddatetime"] and old["startdatetime"] else None
    lead = (old["startdatetime"] - old["cancellationcutoffdatetime"]) if old["startdatetime"] and \
        old["cancellationcutoffdatetime"] else None
    new = {
        "startdatetime": start,
        "enddatetime": start + (duration or timedelta(hours=3)),
        "cancellationcutoffdatetime": start - (lead or timedelta(minutes=10)),
    }
    for name, value in new.items():
        if name in keys:
            data[keys[name]] = _iso(value)
    run = run_id or f"{start:%Y%m%d%H%M%S}"
    if "correlationid" in keys and isinstance(data[keys["correlationid"]], str):
        old_id = data[keys["correlationid"]]
        new_id = old_id.rstrip("/").rsplit("/", 1)[0] + "/" + run
        data[keys["correlationid"]] = new_id
        if event.get("id") == old_id:
            event["id"] = new_id
    for key in ("eventTime", "time"):
        if key in event:
            event[key] = _iso(now)
    return event


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev send-event", description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="an event JSON file, e.g. samples/pre_eventgrid.json")
    parser.add_argument("--url", default="http://localhost:7071", help="the func host (http://localhost:7071)")
    parser.add_argument("--function", help="target function (default: by event type)")
    parser.add_argument("--start-in", type=int, default=40, metavar="MIN", help="window start from now (40)")
    parser.add_argument("--run-id", help="yyyyMMddHHmmss of the run (default: from the new start time)")
    parser.add_argument("--keep-times", action="store_true", help="send the file's times unchanged")
    args = parser.parse_args(argv)

    raw = json.loads(args.file.read_text(encoding="utf-8-sig"))
    events = raw if isinstance(raw, list) else [raw]
    now = datetime.now(UTC)
    if not args.keep_times:
        events = [rewrite_times(e, now=now, start_in=timedelta(minutes=args.start_in), run_id=args.run_id)
                  for e in events]
    function = args.function or _function_for(events[0])
    response = requests.post(
        f"{args.url.rstrip('/')}{WEBHOOK}", params={"functionName": function},
        headers={"aeg-event-type": "Notification", "Content-Type": "application/json"},
        data=json.dumps(events), timeout=30,
    )
    correlation = next((v for k, v in (events[0].get("data") or {}).items() if k.lower() == "correlationid"), "?")
    print(f"{function}: HTTP {response.status_code}; run {correlation}")
    if response.status_code >= 300:
        print(response.text[:2000], file=sys.stderr)
        return 1
    return 0


def _function_for(event: dict[str, Any]) -> str:
    event_type = str(event.get("eventType") or event.get("type") or "")
    return "post_maintenance" if "post" in event_type.lower() else "pre_maintenance"


def _parse(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


if __name__ == "__main__":
    sys.exit(main())
