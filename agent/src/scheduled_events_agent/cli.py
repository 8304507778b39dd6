"""The `scheduled-events-agent` command: load the config, run until SIGTERM, exit cleanly.

Exit codes: 0 stopped cleanly, 2 configuration error (the unit does not restart on it),
3 another agent holds the state directory, 1 anything unexpected (systemd restarts us).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from . import __version__
from .config import DEFAULT_CONFIG_PATH, AgentConfig, ConfigError, load_config
from .state import StateLockedError

EXIT_CONFIG = 2
EXIT_LOCKED = 3


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"scheduled-events-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(args.log_level or config.log_level)
    if args.check_config:
        print(_describe(config))
        return 0

    # Imported after logging is set up: building clients may log.
    from .agent import Agent

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logging.getLogger("scheduled_events_agent").info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        agent = Agent(config)
    except StateLockedError as exc:
        print(f"scheduled-events-agent: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except ConfigError as exc:  # e.g. an unreadable key file
        print(f"scheduled-events-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.once:
        try:
            agent.run_once()
            agent.wait_for_hooks(config.stop_grace_seconds)
            agent.run_once()
        finally:
            agent.close()
        return 0
    agent.run_forever(stop)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scheduled-events-agent",
        description="Poll Azure Scheduled Events, run hooks per event type, approve events early by "
                    "policy, and forward every change to an Event Grid topic.",
    )
    parser.add_argument("--config", default=os.environ.get("SCHEDULED_EVENTS_AGENT_CONFIG", DEFAULT_CONFIG_PATH),
                        help=f"JSON config file (default: {DEFAULT_CONFIG_PATH}, or $SCHEDULED_EVENTS_AGENT_CONFIG)")
    parser.add_argument("--check-config", action="store_true", help="validate the config, print it and exit")
    parser.add_argument("--once", action="store_true", help="poll once, let hooks finish, act on them and exit")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="override the config's log_level")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _configure_logging(level: str) -> None:
    # journald stamps every line itself; elsewhere add the time.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)
    # azure-core logs every request at INFO; that is noise once a second.
    logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _describe(config: AgentConfig) -> str:
    lines = [
        f"state_dir: {config.state_dir}",
        f"scheduled_events_url: {config.scheduled_events_url} (api-version {config.api_version})",
        f"vm_name: {config.vm_name or '(from instance metadata: ' + config.instance_metadata_url + ')'}",
        f"default_approval: {config.default_approval}",
    ]
    for name, entry in sorted(config.events.items()):
        hooks = ", ".join(f"{hook.name} ({hook.timeout_seconds:g} s)" for hook in entry.hooks) or "none"
        first = ", only if first resource" if entry.approve_only_if_first_resource else ""
        ends = ", ".join(f"{hook.name} ({hook.timeout_seconds:g} s)" for hook in entry.end_hooks)
        started = "" if entry.run_hooks_for_started_events else "; not for events already started"
        lines.append(f"{name}: hooks {hooks}{started}; end hooks {ends or 'none'}; "
                     f"approval {config.approval_for(name)}{first}")
    for index, rule in enumerate(config.approval_rules):
        match = [f"type {'/'.join(rule.event_types)}" if rule.event_types else "",
                 f"source {'/'.join(rule.sources)}" if rule.sources else "",
                 f"duration under {rule.duration_under_seconds} s" if rule.duration_under_seconds is not None else ""]
        first = ", only if first resource" if rule.only_if_first_resource else ""
        lines.append(f"approval_rules[{index}] {rule.name}: {', '.join(m for m in match if m) or 'every event'} "
                     f"-> {rule.approval}{first}")
    if config.must_go_alone:
        lines.append(f"must_go_alone: {', '.join(config.must_go_alone)}")
    lines.append(f"notice_margin_seconds: {config.notice_margin_seconds:g}; events naming no VM: "
                 f"{'this VM' if config.missing_resources_mean_this_vm else 'not this VM'}")
    forwarding = config.forwarding
    lines.append(f"forwarding: {forwarding.endpoint} ({forwarding.auth})" if forwarding else "forwarding: off")
    return "\n".join(lines)
