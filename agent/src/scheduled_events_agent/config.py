"""The agent's configuration: one JSON file, read once into frozen dataclasses and validated.

JSON rather than TOML because the agent supports Python 3.10, which has no `tomllib`, and a
daemon's config reader should not need a third-party parser. Every error names the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .config_reader import ConfigError, Section

__all__ = ["AgentConfig", "ApprovalRule", "ConfigError", "EventTypeConfig", "ForwardingConfig", "Hook",
           "load_config", "parse_config"]

EVENT_TYPES = ("Freeze", "Reboot", "Redeploy", "Preempt", "Terminate")
EVENT_SOURCES = ("Platform", "User")
# approve: once this VM's hooks succeeded; approve-immediately: at once, hooks run meanwhile.
APPROVE = "approve"
APPROVE_IMMEDIATELY = "approve-immediately"
WAIT = "wait"
APPROVALS = (APPROVE, APPROVE_IMMEDIATELY, WAIT)
AUTH_MODES = ("managed-identity", "default", "key")
DEFAULT_CONFIG_PATH = "/etc/scheduled-events-agent/config.json"
DEFAULT_STATE_DIR = "/var/lib/scheduled-events-agent"
DEFAULT_SCHEDULED_EVENTS_URL = "http://169.254.169.254/metadata/scheduledevents"
DEFAULT_INSTANCE_METADATA_URL = "http://169.254.169.254/metadata/instance"


@dataclass(frozen=True)
class Hook:
    """One command run for an event: argv (a string command runs through /bin/sh -c)."""

    name: str
    argv: tuple[str, ...]
    timeout_seconds: float


@dataclass(frozen=True)
class EventTypeConfig:
    """What to do for one event type. `approval` None means the top-level default."""

    hooks: tuple[Hook, ...] = ()
    # Run once when an event whose hooks ran vanishes (it happened, or Azure cancelled it).
    end_hooks: tuple[Hook, ...] = ()
    approval: str | None = None
    approve_only_if_first_resource: bool = False
    # An event already Started when its hooks could first run (no notice: a host failure).
    run_hooks_for_started_events: bool = True


@dataclass(frozen=True)
class ApprovalRule:
    """One entry of `approval_rules`: the first rule matching an event decides its approval.

    Empty `event_types`/`sources` match any; `duration_under_seconds` matches 0 <= duration < it,
    never an unknown duration (-1).
    """

    name: str
    approval: str
    event_types: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    duration_under_seconds: int | None = None
    only_if_first_resource: bool = False

    @property
    def matches_everything(self) -> bool:
        return not self.event_types and not self.sources and self.duration_under_seconds is None


@dataclass(frozen=True)
class ForwardingConfig:
    """Where changes go: an Event Grid custom topic (CloudEvents input schema)."""

    endpoint: str
    auth: str = "managed-identity"
    client_id: str | None = None
    key_file: str | None = None
    timeout_seconds: float = 10.0
    backlog_max_events: int = 1000
    batch_max_events: int = 100
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 60.0


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    scheduled_events_url: str = DEFAULT_SCHEDULED_EVENTS_URL
    instance_metadata_url: str = DEFAULT_INSTANCE_METADATA_URL
    api_version: str = "2020-07-01"
    vm_name: str | None = None
    resource_id: str | None = None
    poll_interval_seconds: float = 1.0
    http_timeout_seconds: float = 10.0
    # Microsoft documents that the first call can take up to two minutes (the service starts).
    first_poll_timeout_seconds: float = 120.0
    backoff_initial_seconds: float = 1.0
    # Near the poll interval: a Preempt gives 30 s of notice.
    backoff_max_seconds: float = 2.0
    default_approval: str = WAIT
    events: Mapping[str, EventTypeConfig] = field(default_factory=lambda: MappingProxyType({}))
    approval_rules: tuple[ApprovalRule, ...] = ()
    # VMs an approval must never release together with other VMs (approval releases all listed).
    must_go_alone: tuple[str, ...] = ()
    missing_resources_mean_this_vm: bool = False
    # Hooks before NotBefore must end this much earlier; no approval is sent later than that.
    notice_margin_seconds: float = 1.0
    # A lower DocumentIncarnation served this long without a break is taken as a restarted counter.
    incarnation_reset_seconds: float = 60.0
    forwarding: ForwardingConfig | None = None
    hook_workers: int = 4  # accepted for old config files; every event's hooks get their own thread
    kill_grace_seconds: float = 5.0
    stop_grace_seconds: float = 20.0
    vanished_retention_days: float = 7.0
    log_level: str = "INFO"

    def for_type(self, event_type: str) -> EventTypeConfig:
        return self.events.get(event_type) or EventTypeConfig()

    def approval_for(self, event_type: str) -> str:
        return self.for_type(event_type).approval or self.default_approval


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate a JSON config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("", f"{path} is not valid JSON: {exc}") from exc
    return parse_config(raw)


def parse_config(raw: Any) -> AgentConfig:
    """Validate a config mapping (as read from JSON)."""
    top = Section(raw, "")
    config = AgentConfig(
        state_dir=Path(top.text("state_dir", DEFAULT_STATE_DIR)),
        scheduled_events_url=top.url("scheduled_events_url", DEFAULT_SCHEDULED_EVENTS_URL),
        instance_metadata_url=top.url("instance_metadata_url", DEFAULT_INSTANCE_METADATA_URL),
        api_version=top.text("api_version", "2020-07-01"),
        vm_name=top.optional_text("vm_name"),
        resource_id=top.optional_text("resource_id"),
        poll_interval_seconds=top.number("poll_interval_seconds", 1.0, 0.01, 60),
        http_timeout_seconds=top.number("http_timeout_seconds", 10.0, 0.05, 300),
        first_poll_timeout_seconds=top.number("first_poll_timeout_seconds", 120.0, 0.05, 600),
        backoff_initial_seconds=top.number("backoff_initial_seconds", 1.0, 0.01, 600),
        # An old file setting only the initial delay above the new default cap keeps working.
        backoff_max_seconds=top.number("backoff_max_seconds",
                                       max(2.0, top.number("backoff_initial_seconds", 1.0, 0.01, 600)), 0.01, 3600),
        default_approval=top.choice("default_approval", WAIT, APPROVALS),
        events=MappingProxyType(_events(top)),
        approval_rules=_rules(top),
        must_go_alone=top.texts("must_go_alone"),
        missing_resources_mean_this_vm=top.flag("missing_resources_mean_this_vm", False),
        notice_margin_seconds=top.number("notice_margin_seconds", 1.0, 0, 600),
        incarnation_reset_seconds=top.number("incarnation_reset_seconds", 60.0, 1, 86400),
        forwarding=_forwarding(top),
        hook_workers=int(top.number("hook_workers", 4, 1, 32, integer=True)),
        kill_grace_seconds=top.number("kill_grace_seconds", 5.0, 0, 300),
        stop_grace_seconds=top.number("stop_grace_seconds", 20.0, 0, 3600),
        vanished_retention_days=top.number("vanished_retention_days", 7.0, 0, 3650),
        log_level=top.choice("log_level", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
    )
    top.reject_unknown()
    if config.backoff_max_seconds < config.backoff_initial_seconds:
        raise ConfigError("backoff_max_seconds", "must not be below backoff_initial_seconds")
    return config


def _events(top: Section) -> dict[str, EventTypeConfig]:
    section = top.section("events")
    if section is None:
        return {}
    result: dict[str, EventTypeConfig] = {}
    for name in section.keys():
        if name not in EVENT_TYPES:
            raise ConfigError(f"events.{name}", f"unknown event type; valid: {', '.join(EVENT_TYPES)}")
        entry = section.section(name)
        if entry is None:  # `"Freeze": null`
            raise ConfigError(f"events.{name}", "must be a JSON object")
        result[name] = EventTypeConfig(
            hooks=tuple(_hook(item, key) for item, key in _hook_list(entry, "hooks")),
            end_hooks=tuple(_hook(item, key) for item, key in _hook_list(entry, "end_hooks")),
            approval=entry.choice("approval", None, APPROVALS),
            approve_only_if_first_resource=entry.flag("approve_only_if_first_resource", False),
            run_hooks_for_started_events=entry.flag("run_hooks_for_started_events", True),
        )
        entry.reject_unknown()
    return result


def _hook_list(entry: Section, name: str) -> list[tuple[Any, str]]:
    if entry.has(name) and not isinstance(entry.get(name), list):
        raise ConfigError(entry.key(name), "must be a list of hooks")
    return entry.items(name)


def _rules(top: Section) -> tuple[ApprovalRule, ...]:
    rules: list[ApprovalRule] = []
    for item, key in top.items("approval_rules"):
        entry = Section(item, key)
        duration = entry.get("duration_under_seconds")
        rule = ApprovalRule(
            name=entry.text("name", key),
            approval=entry.choice("approval", None, APPROVALS),
            event_types=entry.texts("event_types", allowed=EVENT_TYPES),
            sources=entry.texts("sources", allowed=EVENT_SOURCES),
            duration_under_seconds=None if duration is None else
            int(entry.number("duration_under_seconds", 0, 1, 86400, integer=True)),
            only_if_first_resource=entry.flag("only_if_first_resource", False),
        )
        if rule.approval is None:
            raise ConfigError(f"{key}.approval", f"required: one of {', '.join(APPROVALS)}")
        entry.reject_unknown()
        if rules and rules[-1].matches_everything:
            raise ConfigError(key, f"never applies: {rules[-1].name} before it matches every event")
        rules.append(rule)
    return tuple(rules)


def _hook(raw: Any, key: str) -> Hook:
    entry = Section(raw, key)
    command = entry.get("command")
    argv: tuple[str, ...]
    if isinstance(command, str) and command.strip():
        argv = ("/bin/sh", "-c", command)
        default_name = Path(command.split()[0]).name
    elif isinstance(command, list) and command and all(isinstance(part, str) and part for part in command):
        argv = tuple(command)
        default_name = Path(command[0]).name
    else:
        raise ConfigError(f"{key}.command", "required: a non-empty string (run by /bin/sh -c) or list of strings")
    hook = Hook(
        name=entry.text("name", default_name),
        argv=argv,
        timeout_seconds=entry.number("timeout_seconds", 300.0, 0.01, 86400),
    )
    entry.reject_unknown()
    return hook


def _forwarding(top: Section) -> ForwardingConfig | None:
    section = top.section("forwarding")
    if section is None:
        return None
    endpoint = section.url("endpoint", None)
    auth = section.choice("auth", "managed-identity", AUTH_MODES)
    key_file = section.optional_text("key_file")
    if auth == "key" and not key_file:
        raise ConfigError("forwarding.key_file", "required when forwarding.auth is 'key'")
    if auth != "key" and not endpoint.startswith("https://"):
        # azure-core refuses to send bearer tokens over plain HTTP.
        raise ConfigError("forwarding.endpoint", f"must be https:// with auth {auth!r}")
    forwarding = ForwardingConfig(
        endpoint=endpoint,
        auth=auth,
        client_id=section.optional_text("client_id"),
        key_file=key_file,
        timeout_seconds=section.number("timeout_seconds", 10.0, 0.05, 300),
        backlog_max_events=int(section.number("backlog_max_events", 1000, 1, 1_000_000, integer=True)),
        batch_max_events=int(section.number("batch_max_events", 100, 1, 1000, integer=True)),
        retry_initial_seconds=section.number("retry_initial_seconds", 1.0, 0.01, 3600),
        retry_max_seconds=section.number("retry_max_seconds", 60.0, 0.01, 86400),
    )
    section.reject_unknown()
    return forwarding
