"""Fixtures for the in-VM agent: loopback IMDS and Event Grid, a config builder, a fake clock.

The agent is a separate distribution (`agent/`, installed on VMs with `pip install ./agent`);
the tests import it from its source tree rather than installing it into the app's venv.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

AGENT_SRC = Path(__file__).resolve().parents[2] / "agent" / "src"
if str(AGENT_SRC) not in sys.path:
    sys.path.insert(0, str(AGENT_SRC))

from scheduled_events_agent.agent import Agent  # noqa: E402
from scheduled_events_agent.config import AgentConfig, parse_config  # noqa: E402

from tests.agent.fakes import EventGridServer, ScheduledEventsServer  # noqa: E402

# A hook that appends one JSON line (its SCHEDULED_EVENT_* variables and stdin) to argv[1],
# then exits with argv[2] (default 0).
RECORDING_HOOK = (
    "import json, os, sys\n"
    "env = {k: v for k, v in os.environ.items() if k.startswith('SCHEDULED_EVENT_')}\n"
    "with open(sys.argv[1], 'a') as f: f.write(json.dumps({'env': env, 'stdin': sys.stdin.read()}) + '\\n')\n"
    "sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)\n"
)


def recording_hook(path: Path, *, exit_code: int = 0, timeout: float = 10, name: str = "record") -> dict[str, Any]:
    return {"name": name, "command": [sys.executable, "-c", RECORDING_HOOK, str(path), str(exit_code)],
            "timeout_seconds": timeout}


def hook_calls(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class FakeMonotonic:
    """The agent's monotonic clock: backoff waits pass when a test says so, not in real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _loopback_without_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Event Grid client honours proxy variables; loopback traffic must not go through one.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def imds() -> Iterator[ScheduledEventsServer]:
    server = ScheduledEventsServer(vm_name="vm-a")
    yield server
    server.close()


@pytest.fixture
def topic() -> Iterator[EventGridServer]:
    server = EventGridServer()
    yield server
    server.close()


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def base_config(tmp_path: Path, imds: ScheduledEventsServer, topic: EventGridServer) -> dict[str, Any]:
    """A config file's content pointing at the loopback fakes, with short timeouts."""
    key_file = tmp_path / "topic-key"
    key_file.write_text(topic.key + "\n")
    return {
        "state_dir": str(tmp_path / "state"),
        "scheduled_events_url": imds.url,
        "instance_metadata_url": imds.instance_url,
        "vm_name": "vm-a",
        "poll_interval_seconds": 0.05,
        "http_timeout_seconds": 0.5,
        "first_poll_timeout_seconds": 0.5,
        "backoff_initial_seconds": 1,
        "backoff_max_seconds": 8,
        "kill_grace_seconds": 0.5,
        "stop_grace_seconds": 2,
        "default_approval": "wait",
        "events": {},
        "forwarding": {"endpoint": topic.endpoint, "auth": "key", "key_file": str(key_file),
                       "timeout_seconds": 1, "retry_initial_seconds": 1, "retry_max_seconds": 8},
    }


AgentFactory = Callable[..., Agent]


@pytest.fixture
def make_agent(base_config: dict[str, Any], clock: FakeMonotonic) -> Iterator[AgentFactory]:
    """Build an agent from `base_config` plus overrides (top-level keys replaced)."""
    agents: list[Agent] = []

    def factory(**overrides: Any) -> Agent:
        raw = copy.deepcopy(base_config)
        raw.update(overrides)
        agent = Agent(config_of(raw), monotonic=clock)
        agents.append(agent)
        return agent

    yield factory
    for agent in agents:
        agent.close()


def config_of(raw: dict[str, Any]) -> AgentConfig:
    return parse_config(raw)


def settle(agent: Agent, condition: Callable[[], bool] | None = None, *, timeout: float = 10.0) -> None:
    """Tick until no hook runs (and `condition` holds); the fakes answer at once, so this is quick."""
    deadline = time.monotonic() + timeout
    while True:
        agent.run_once()
        if agent.hooks_running == 0 and (condition is None or condition()):
            return
        if time.monotonic() > deadline:
            raise AssertionError("agent did not settle in time")
        agent.wait_for_hooks(0.05)
