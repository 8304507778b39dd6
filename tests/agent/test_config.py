"""Config files: the documented example, defaults, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scheduled_events_agent.config import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "agent" / "config.example.json"


def test_the_shipped_example_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.scheduled_events_url == "http://169.254.169.254/metadata/scheduledevents"
    reboot = config.for_type("Reboot")
    assert reboot.hooks and reboot.hooks[0].timeout_seconds > 0
    assert config.approval_for("Reboot") == "approve"
    assert config.forwarding is not None and config.forwarding.auth == "managed-identity"


def test_defaults() -> None:
    config = parse_config({})
    assert str(config.state_dir) == "/var/lib/scheduled-events-agent"
    assert config.instance_metadata_url == "http://169.254.169.254/metadata/instance"
    assert (config.api_version, config.poll_interval_seconds, config.default_approval) == ("2020-07-01", 1.0, "wait")
    assert config.forwarding is None
    assert config.approval_for("Preempt") == "wait" and config.for_type("Preempt").hooks == ()


def test_string_commands_run_through_the_shell() -> None:
    config = parse_config({"events": {"Freeze": {"hooks": [{"command": "/usr/bin/sync && echo ok"}]}}})
    [hook] = config.for_type("Freeze").hooks
    assert hook.argv == ("/bin/sh", "-c", "/usr/bin/sync && echo ok")
    assert (hook.name, hook.timeout_seconds) == ("sync", 300.0)


@pytest.mark.parametrize(("raw", "key", "words"), [
    ({"poll_intervall_seconds": 1}, "poll_intervall_seconds", "unknown key"),
    ({"events": {"reboot": {}}}, "events.reboot", "Freeze, Reboot, Redeploy, Preempt, Terminate"),
    ({"events": {"Reboot": {"hooks": [{"command": []}]}}}, "events.Reboot.hooks[0].command", "non-empty"),
    ({"events": {"Reboot": {"hooks": [{"command": "x", "timeout_seconds": 0}]}}},
     "events.Reboot.hooks[0].timeout_seconds", "from 0.01"),
    ({"events": {"Reboot": {"approval": "yes"}}}, "events.Reboot.approval", "approve, wait"),
    ({"default_approval": "now"}, "default_approval", "approve, wait"),
    ({"forwarding": {"endpoint": "http://topic/api/events"}}, "forwarding.endpoint", "https://"),
    ({"forwarding": {"endpoint": "https://t/api/events", "auth": "key"}}, "forwarding.key_file", "required"),
    ({"forwarding": {"endpoint": "https://t/api/events", "auth": "sas"}}, "forwarding.auth", "managed-identity"),
    ({"scheduled_events_url": "169.254.169.254"}, "scheduled_events_url", "http://"),
    ({"poll_interval_seconds": "1"}, "poll_interval_seconds", "a number"),
    ({"events": {"Reboot": {"approve_only_if_first_resource": "true"}}},
     "events.Reboot.approve_only_if_first_resource", "true or false"),
])
def test_errors_name_the_key(raw: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("state_dir = '/tmp'\n")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)
    path.write_text(json.dumps([1]))
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_config(path)
