"""The state file (atomic, locked, recoverable) and parsing Scheduled Events documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from scheduled_events_agent.document import (
    MalformedDocumentError,
    parse_document,
    parse_event,
    parse_not_before,
    parse_rfc1123,
)
from scheduled_events_agent.state import STATE_FILE, EventRecord, StateLockedError, StateStore

DOCUMENT = {
    "DocumentIncarnation": 3,
    "Events": [{
        "EventId": "A123BC45-1234-5678-AB90-ABCDEF123456", "EventType": "Freeze", "ResourceType": "VirtualMachine",
        "Resources": ["vm-a"], "EventStatus": "Scheduled", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT",
        "Description": "Virtual machine is being paused", "EventSource": "Platform", "DurationInSeconds": 9,
    }],
}


def test_state_round_trip_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.state.last_incarnation = 4
    store.state.events["e1"] = EventRecord(event_id="e1", event={"EventId": "e1"}, first_seen_at="t0",
                                           status="Scheduled")
    store.save()
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.lock", STATE_FILE]
    again = StateStore(tmp_path)
    assert again.state.last_incarnation == 4 and again.state.events["e1"].status == "Scheduled"
    again.close()


def test_one_agent_per_state_directory(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(StateLockedError):
        StateStore(tmp_path)
    store.close()
    StateStore(tmp_path).close()


def test_an_unreadable_state_file_is_kept_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / STATE_FILE).write_text('{"events": {"e1": ')
    store = StateStore(tmp_path)
    assert store.state.events == {}
    assert any(p.name.startswith(f"{STATE_FILE}.corrupt-") for p in tmp_path.iterdir())
    assert "unreadable" in caplog.text
    store.close()


def test_vanished_events_are_forgotten_after_the_retention(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    now = datetime(2026, 11, 22, tzinfo=UTC)
    old = EventRecord("old", {}, "t", "Started", vanished_at=(now - timedelta(days=8)).isoformat())
    recent = EventRecord("recent", {}, "t", "Started", vanished_at=(now - timedelta(days=1)).isoformat())
    active = EventRecord("active", {}, "t", "Scheduled")
    store.state.events.update(old=old, recent=recent, active=active)
    assert store.state.prune(now, timedelta(days=7)) == ["old"]
    assert sorted(store.state.events) == ["active", "recent"]
    store.close()


def test_documented_document_parses() -> None:
    document = parse_document(json.dumps(DOCUMENT))
    [event] = document.events
    assert document.incarnation == 3
    assert (event.event_type, event.status, event.resources, event.duration_seconds) == (
        "Freeze", "Scheduled", ("vm-a",), 9)
    assert event.not_before_time == datetime(2016, 9, 19, 18, 29, 47, tzinfo=UTC)
    assert parse_document('{"DocumentIncarnation": 0, "Events": []}').events == ()


@pytest.mark.parametrize(("body", "words"), [
    ("<html>", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"Events": []}', "DocumentIncarnation"),
    ('{"DocumentIncarnation": 99}', "Events is missing"),
    ('{"DocumentIncarnation": 99, "Events": null}', "Events must be a list"),
    ('{"DocumentIncarnation": 1, "Events": {}}', "Events must be a list"),
    ('{"DocumentIncarnation": 1, "Events": [{"EventType": "Reboot", "EventStatus": "Scheduled"}]}',
     "Events[0].EventId"),
    ('{"DocumentIncarnation": 1, "Events": [{"EventId": "x", "EventType": "Reboot", "EventStatus": "Scheduled",'
     ' "Resources": "vm-a"}]}', "Resources"),
])
def test_malformed_documents_say_what_is_wrong(body: str, words: str) -> None:
    with pytest.raises(MalformedDocumentError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_document(body)


def test_resources_null_or_missing_is_told_apart_from_a_list() -> None:
    base = {"EventId": "x", "EventType": "Reboot", "EventStatus": "Scheduled"}
    assert parse_event({**base, "Resources": ["vm-a"]}).resources_listed
    assert not parse_event({**base, "Resources": None}).resources_listed
    assert not parse_event(base).resources_listed
    assert parse_event({**base, "Resources": []}).resources == ()


@pytest.mark.parametrize("value", [
    "Tue, 01 Dec 2026 10:00:00 GMT", "2026-12-01T10:00:00Z", "2026-12-01T10:00:00+00:00",
    "2026-12-01T12:00:00+02:00", "2026-12-01T10:00:00", "2026-12-01T10:00:00.0000000Z", "2026-12-01T10:00:00.0Z",
])
def test_not_before_in_rfc1123_or_iso8601(value: str) -> None:
    assert parse_not_before(value) == datetime(2026, 12, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("value", ["", "soon", "Tue, 99 Foo", "2026-13-01T10:00:00Z"])
def test_unreadable_not_before(value: str) -> None:
    assert parse_not_before(value) is None


def test_rfc1123() -> None:
    assert parse_rfc1123("") is None
    assert parse_rfc1123("soon") is None
    assert parse_rfc1123("Tue, 01 Dec 2026 10:00:00 GMT") == datetime(2026, 12, 1, 10, tzinfo=UTC)
