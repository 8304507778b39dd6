"""The forwarder with the real EventGridPublisherClient against a loopback topic."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.core.credentials import AzureKeyCredential
from scheduled_events_agent.backoff import Backoff
from scheduled_events_agent.changes import Change, ChangeKind
from scheduled_events_agent.forwarder import Forwarder, change_record
from scheduled_events_agent.hooks import HookResult
from scheduled_events_agent.publisher import EventGridPublisher

from tests.agent.conftest import FakeMonotonic
from tests.agent.fakes import EventGridServer


def change(event_id: str, kind: ChangeKind = ChangeKind.NEW,
           hook_results: tuple[HookResult, ...] | None = None) -> Change:
    return Change(kind=kind, event_id=event_id, event={"EventId": event_id, "EventType": "Reboot"},
                  observed_at=datetime(2026, 11, 22, 2, 0, tzinfo=UTC),
                  first_seen_at="2026-11-22T01:59:00+00:00", incarnation=5, hook_results=hook_results)


def forwarder(tmp_path: Path, topic: EventGridServer, clock: FakeMonotonic, **kwargs: int) -> Forwarder:
    publisher = EventGridPublisher(topic.endpoint, AzureKeyCredential(topic.key), timeout_seconds=1)
    return Forwarder(publisher, backlog_path=tmp_path / "backlog.json", backoff=Backoff(1, 4, monotonic=clock),
                     monotonic=clock, **kwargs)


def records(*ids: str) -> list[dict[str, object]]:
    return [change_record(change(i), vm_name="vm-a", resource_id=None) for i in ids]


def test_cloud_event_shape_and_key_header(tmp_path: Path, topic: EventGridServer, clock: FakeMonotonic) -> None:
    sender = forwarder(tmp_path, topic, clock)
    hook = HookResult(name="drain", status="succeeded", exit_code=0)
    sender.enqueue([change_record(change("e1", ChangeKind.HOOK_SUCCEEDED, hook_results=(hook,)),
                                  vm_name="vm-a", resource_id="/subscriptions/s/vm-a")])
    assert sender.flush() == 1
    [event] = topic.received
    assert event["type"] == "Azure.ScheduledEvents.HookSucceeded"
    assert event["source"] == "/subscriptions/s/vm-a"
    assert event["subject"] == "e1"
    assert event["time"].startswith("2026-11-22T02:00:00")
    assert event["data"] == {
        "change": "hook-succeeded", "vmName": "vm-a", "eventId": "e1", "resourceId": "/subscriptions/s/vm-a",
        "event": {"EventId": "e1", "EventType": "Reboot"}, "observedAt": "2026-11-22T02:00:00+00:00",
        "firstSeenAt": "2026-11-22T01:59:00+00:00", "documentIncarnation": 5,
        "hookResults": [{"name": "drain", "status": "succeeded", "exitCode": 0, "startedAt": "",
                         "durationSeconds": 0.0, "output": ""}],
    }
    assert sender.pending == []


def test_a_full_backlog_drops_the_oldest_with_a_log_line(
    tmp_path: Path, topic: EventGridServer, clock: FakeMonotonic, caplog: pytest.LogCaptureFixture
) -> None:
    topic.down()
    sender = forwarder(tmp_path, topic, clock, max_events=3)
    sender.enqueue(records("e1", "e2"))
    sender.flush()
    sender.enqueue(records("e3", "e4", "e5"))
    assert [r["subject"] for r in sender.pending] == ["e3", "e4", "e5"]
    dropped = [r.getMessage() for r in caplog.records if "backlog full" in r.getMessage()]
    assert len(dropped) == 2 and "event e1" in dropped[0]

    topic.up()
    clock.advance(5)
    sender.flush()
    assert [e["subject"] for e in topic.received] == ["e3", "e4", "e5"]


def test_the_backlog_is_on_disk_and_ids_are_stable(tmp_path: Path, topic: EventGridServer,
                                                   clock: FakeMonotonic) -> None:
    topic.down()
    first = forwarder(tmp_path, topic, clock)
    first.enqueue(records("e1", "e2"))
    ids = [r["id"] for r in first.pending]
    assert first.flush() == 0

    topic.up()
    second = forwarder(tmp_path, topic, clock)  # a restarted agent
    assert second.flush() == 2
    assert [e["id"] for e in topic.received] == ids


def test_batches_keep_order(tmp_path: Path, topic: EventGridServer, clock: FakeMonotonic) -> None:
    sender = forwarder(tmp_path, topic, clock, batch_max_events=2)
    sender.enqueue(records(*[f"e{i}" for i in range(5)]))
    assert sender.flush() == 5
    assert [e["subject"] for e in topic.received] == [f"e{i}" for i in range(5)]
    assert topic.posts == 3


def test_a_refusing_topic_keeps_the_changes_and_logs_the_answer(
    tmp_path: Path, topic: EventGridServer, clock: FakeMonotonic, caplog: pytest.LogCaptureFixture
) -> None:
    # A 400 is usually the topic's input schema (Event Grid schema instead of CloudEvents):
    # fixable by the operator, so nothing is dropped.
    topic.status = 400
    sender = forwarder(tmp_path, topic, clock)
    sender.enqueue(records("e1"))
    with caplog.at_level(logging.ERROR):
        assert sender.flush() == 0
    assert len(sender.pending) == 1
    assert "HTTP 400" in caplog.text and "refused by test" in caplog.text


def test_a_wrong_key_is_an_outage_not_a_loss(tmp_path: Path, topic: EventGridServer, clock: FakeMonotonic) -> None:
    sender = forwarder(tmp_path, topic, clock)
    topic.key = "rotated"
    sender.enqueue(records("e1"))
    assert sender.flush() == 0 and len(sender.pending) == 1
    topic.key = "test-topic-key"
    clock.advance(2)
    assert sender.flush() == 1
