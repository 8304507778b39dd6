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
    ({"events": {"Reboot": {"approval": "yes"}}}, "events.Reboot.approval", "approve, approve-immediately, wait"),
    ({"default_approval": "now"}, "default_approval", "approve, approve-immediately, wait"),
    ({"forwarding": {"endpoint": "http://topic/api/events"}}, "forwarding.endpoint", "https://"),
    ({"forwarding": {"endpoint": "https://t/api/events", "auth": "key"}}, "forwarding.key_file", "required"),
    ({"forwarding": {"endpoint": "https://t/api/events", "auth": "sas"}}, "forwarding.auth", "managed-identity"),
    ({"scheduled_events_url": "169.254.169.254"}, "scheduled_events_url", "http://"),
    ({"poll_interval_seconds": "1"}, "poll_interval_seconds", "a number"),
    ({"events": {"Reboot": {"approve_only_if_first_resource": "true"}}},
     "events.Reboot.approve_only_if_first_resource", "true or false"),
    ({"events": {"Reboot": {"end_hooks": {"command": "x"}}}}, "events.Reboot.end_hooks", "list of hooks"),
    ({"events": {"Reboot": {"end_hooks": [{"command": ""}]}}}, "events.Reboot.end_hooks[0].command", "non-empty"),
    ({"events": {"Reboot": {"run_hooks_for_started_events": 1}}},
     "events.Reboot.run_hooks_for_started_events", "true or false"),
    ({"approval_rules": {"sources": ["User"]}}, "approval_rules", "must be a list"),
    ({"approval_rules": [{"sources": ["User"]}]}, "approval_rules[0].approval", "required: one of approve"),
    ({"approval_rules": [{"sources": ["user"], "approval": "approve"}]}, "approval_rules[0].sources[0]",
     "Platform, User; got 'user'"),
    ({"approval_rules": [{"event_types": ["Freez"], "approval": "approve"}]}, "approval_rules[0].event_types[0]",
     "Freeze, Reboot"),
    ({"approval_rules": [{"event_types": ["Freeze"], "duration_under_seconds": 0, "approval": "approve"}]},
     "approval_rules[0].duration_under_seconds", "from 1 to"),
    ({"approval_rules": [{"event_types": ["Freeze"], "duration_below": 9, "approval": "approve"}]},
     "approval_rules[0].duration_below", "unknown key"),
    ({"approval_rules": [{"approval": "wait", "name": "everything"}, {"sources": ["User"], "approval": "approve"}]},
     "approval_rules[1]", "never applies: everything before it matches every event"),
    ({"must_go_alone": "vm-db"}, "must_go_alone", "must be a list"),
    ({"must_go_alone": ["vm-db", ""]}, "must_go_alone[1]", "non-empty string"),
    ({"missing_resources_mean_this_vm": "no"}, "missing_resources_mean_this_vm", "true or false"),
    ({"notice_margin_seconds": -1}, "notice_margin_seconds", "from 0"),
    ({"incarnation_reset_seconds": 0}, "incarnation_reset_seconds", "from 1"),
])
def test_errors_name_the_key(raw: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_new_settings_parse() -> None:
    config = parse_config({
        "approval_rules": [{"name": "short-freeze", "event_types": ["Freeze"], "duration_under_seconds": 9,
                            "approval": "approve-immediately"},
                           {"sources": ["User"], "approval": "approve", "only_if_first_resource": True}],
        "must_go_alone": ["vm-db"],
        "events": {"Freeze": {"end_hooks": [{"command": "systemctl start myapp", "timeout_seconds": 60}],
                              "run_hooks_for_started_events": False}},
    })
    first, second = config.approval_rules
    assert (first.name, first.event_types, first.duration_under_seconds, first.approval) == (
        "short-freeze", ("Freeze",), 9, "approve-immediately")
    assert (second.name, second.sources, second.only_if_first_resource) == ("approval_rules[1]", ("User",), True)
    assert config.must_go_alone == ("vm-db",)
    freeze = config.for_type("Freeze")
    assert freeze.end_hooks[0].argv == ("/bin/sh", "-c", "systemctl start myapp")
    assert not freeze.run_hooks_for_started_events and config.for_type("Reboot").run_hooks_for_started_events


def test_an_old_config_file_still_loads() -> None:
    # What config.example.json and the README showed before end hooks and approval rules.
    config = parse_config({
        "default_approval": "wait", "hook_workers": 2, "backoff_initial_seconds": 5,
        "events": {"Reboot": {"hooks": [{"command": ["/usr/local/sbin/drain-node"], "timeout_seconds": 300}],
                              "approval": "approve", "approve_only_if_first_resource": True},
                   "Freeze": {"hooks": [{"command": "logger freeze", "timeout_seconds": 10}], "approval": "wait"}},
    })
    assert config.approval_for("Reboot") == "approve" and config.for_type("Reboot").approve_only_if_first_resource
    assert config.approval_rules == () and config.for_type("Reboot").end_hooks == ()
    assert config.backoff_max_seconds == 5, "an initial delay above the new default cap is not an error"


def test_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("state_dir = '/tmp'\n")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)
    path.write_text(json.dumps([1]))
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_config(path)
