from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from handlers.core.events import parse_event
from tests.eventfixtures import EVENT_FIXTURES, load_event
from tools.send_event import main, rewrite_times

NOW = datetime(2026, 12, 6, 1, 17, 42, tzinfo=UTC)


@pytest.mark.parametrize("name", [n for n in EVENT_FIXTURES if n.startswith("pre")])
def test_rewritten_pre_events_have_a_future_cutoff_and_a_matching_run(name: str) -> None:
    event = parse_event(rewrite_times(load_event(name), now=NOW, start_in=timedelta(minutes=40)))
    assert event.start == datetime(2026, 12, 6, 1, 57, tzinfo=UTC)
    assert event.cancellation_cutoff is not None and event.cancellation_cutoff > NOW
    assert event.start - event.cancellation_cutoff == timedelta(minutes=10)
    assert event.run_name == "20261206015700"
    assert event.event_time == NOW


def test_run_id_can_be_given_for_the_post_event() -> None:
    event = parse_event(rewrite_times(load_event("post_eventgrid"), now=NOW, start_in=timedelta(minutes=40),
                                      run_id="20261206015700"))
    assert event.run_name == "20261206015700"


@pytest.fixture
def webhook() -> Iterator[list[dict[str, object]]]:
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    received.append({"url": f"http://127.0.0.1:{server.server_address[1]}"})
    yield received
    server.shutdown()
    server.server_close()


def test_posts_to_the_local_webhook_like_event_grid(webhook: list[dict[str, object]], tmp_path: Path) -> None:
    path = tmp_path / "post.json"
    path.write_text(json.dumps(load_event("post_cloudevents")))
    assert main([str(path), "--url", str(webhook[0]["url"])]) == 0
    request = webhook[1]
    assert request["path"].startswith("/runtime/webhooks/EventGrid?functionName=post_maintenance")  # type: ignore[union-attr]
    assert request["headers"]["aeg-event-type"] == "Notification"  # type: ignore[index]
    assert isinstance(request["body"], list) and len(request["body"]) == 1
