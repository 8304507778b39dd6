"""Event fixtures (tests/fixtures/events/*.json), loaded by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).parent / "fixtures" / "events"
EVENT_FIXTURES = tuple(sorted(path.stem for path in EVENTS_DIR.glob("*.json")))


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of fixture `name` ("pre_eventgrid" or "pre_eventgrid.json")."""
    path = EVENTS_DIR / (name if name.endswith(".json") else f"{name}.json")
    with path.open(encoding="utf-8") as handle:
        event: dict[str, Any] = json.load(handle)
    return event
