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

EVENT_TYPES = ("Freeze", "Reboot", "Redeploy", "Preempt", "Terminate")
APPROVALS = ("approve", "wait")
AUTH_MODES = ("managed-identity", "default", "key")
DEFAULT_CONFIG_PATH = "/etc/scheduled-events-agent/config.json"
DEFAULT_STATE_DIR = "/var/lib/scheduled-events-agent"
DEFAULT_SCHEDULED_EVENTS_URL = "http://169.254.169.254/metadata/scheduledevents"
DEFAULT_INSTANCE_METADATA_URL = "http://169.254.169.254/metadata/instance"


class ConfigError(ValueError):
    """A configuration value we cannot use; `key` names it (dotted path)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config {key}: {problem}" if key else f"config: {problem}")


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
    approval: str | None = None
    approve_only_if_first_resource: bool = False


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
    backoff_max_seconds: float = 15.0
    default_approval: str = "wait"
    events: Mapping[str, EventTypeConfig] = field(default_factory=lambda: MappingProxyType({}))
    forwarding: ForwardingConfig | None = None
    hook_workers: int = 4
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
    top = _Section(raw, "")
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
        backoff_max_seconds=top.number("backoff_max_seconds", 15.0, 0.01, 3600),
        default_approval=top.choice("default_approval", "wait", APPROVALS),
        events=MappingProxyType(_events(top)),
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


def _events(top: _Section) -> dict[str, EventTypeConfig]:
    section = top.section("events")
    if section is None:
        return {}
    result: dict[str, EventTypeConfig] = {}
    for name in section.keys():
        if name not in EVENT_TYPES:
            raise ConfigError(f"events.{name}", f"unknown event type; valid: {', '.join(EVENT_TYPES)}")
        entry = section.section(name)
        assert entry is not None
        hooks_raw = entry.get("hooks", [])
        if not isinstance(hooks_raw, list):
            raise ConfigError(f"events.{name}.hooks", "must be a list of hooks")
        hooks = tuple(_hook(item, f"events.{name}.hooks[{index}]") for index, item in enumerate(hooks_raw))
        result[name] = EventTypeConfig(
            hooks=hooks,
            approval=entry.choice("approval", None, APPROVALS),
            approve_only_if_first_resource=entry.flag("approve_only_if_first_resource", False),
        )
        entry.reject_unknown()
    return result


def _hook(raw: Any, key: str) -> Hook:
    entry = _Section(raw, key)
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


def _forwarding(top: _Section) -> ForwardingConfig | None:
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


class _Section:
    """Typed reads from one JSON object, remembering which keys were used."""

    def __init__(self, raw: Any, prefix: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(prefix, "must be a JSON object")
        self._raw: dict[str, Any] = raw
        self._prefix = prefix
        self._used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def keys(self) -> list[str]:
        self._used.update(self._raw)
        return list(self._raw)

    def get(self, name: str, default: Any = None) -> Any:
        self._used.add(name)
        value = self._raw.get(name, default)
        return default if value is None else value

    def section(self, name: str) -> _Section | None:
        value = self.get(name)
        return None if value is None else _Section(value, self.key(name))

    def text(self, name: str, default: str | None) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(self.key(name), "required: a non-empty string")
        return value.strip()

    def optional_text(self, name: str) -> str | None:
        value = self.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ConfigError(self.key(name), "must be a string")
        return value.strip() or None

    def url(self, name: str, default: str | None) -> str:
        value = self.text(name, default).rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ConfigError(self.key(name), f"must be an http:// or https:// URL, got {value!r}")
        return value

    def number(self, name: str, default: float, low: float, high: float, *, integer: bool = False) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and value != int(value)):
            raise ConfigError(self.key(name), f"must be {'an integer' if integer else 'a number'} from {low} to {high}")
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"must be from {low} to {high}, got {value}")
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), "must be true or false")
        return value

    def choice(self, name: str, default: str | None, allowed: tuple[str, ...]) -> Any:
        value = self.get(name, default)
        if value is None:
            return None
        if value not in allowed:
            raise ConfigError(self.key(name), f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def reject_unknown(self) -> None:
        unknown = sorted(set(self._raw) - self._used)
        if unknown:
            raise ConfigError(self.key(unknown[0]), f"unknown key; valid keys here: {', '.join(sorted(self._used))}")
