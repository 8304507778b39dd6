"""Running an event's hooks: one process group each, a timeout, the event on stdin and in env.

Output goes to a temporary file rather than a pipe: a hook that leaves a background child
holding its stdout open would otherwise keep us waiting for EOF long after the hook exited.

Hooks that prepare for an event may be given a deadline (NotBefore less a margin): each hook's
timeout shrinks to what is left of the notice, and one still running then is killed and counts
as failed, so the agent never approves an event after its hooks overran the notice.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .config import Hook
from .document import ScheduledEvent

log = logging.getLogger("scheduled_events_agent.hooks")
OUTPUT_TAIL = 2000

SUCCEEDED = "succeeded"
FAILED = "failed"  # non-zero exit
TIMED_OUT = "timed-out"
CUT_SHORT = "cut-short"  # killed (or not started) because the notice before NotBefore ran out
INTERRUPTED = "interrupted"  # the agent stopped (or died) while it ran
NOT_STARTED = "error"  # could not be started (missing executable, permissions)
SKIPPED = "skipped"  # an earlier hook of the event failed


@dataclass(frozen=True)
class HookResult:
    name: str
    status: str
    exit_code: int | None = None
    started_at: str = ""
    duration_seconds: float = 0.0
    output: str = ""  # the last OUTPUT_TAIL characters of stdout+stderr

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    def to_dict(self) -> dict[str, Any]:
        """camelCase, like the rest of the forwarded CloudEvent's data."""
        return {"name": self.name, "status": self.status, "exitCode": self.exit_code, "startedAt": self.started_at,
                "durationSeconds": self.duration_seconds, "output": self.output}

    def summary(self) -> str:
        code = f" (exit {self.exit_code})" if self.exit_code is not None else ""
        return f"{self.name}: {self.status}{code}"


def hook_environment(
    event: ScheduledEvent,
    *,
    vm_name: str,
    incarnation: int | None,
    phase: str = "scheduled",
    first_seen_status: str = "",
    deadline: datetime | None = None,
    end: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The SCHEDULED_EVENT_* variables a hook sees (on top of the agent's own environment).

    `phase` is scheduled, started (already under way when the hooks could first run) or end;
    `end` holds the end hooks' extra variables (LAST_STATUS, VANISHED_AT, START_HOOKS).
    """
    env = {
        "SCHEDULED_EVENT_ID": event.event_id,
        "SCHEDULED_EVENT_TYPE": event.event_type,
        "SCHEDULED_EVENT_STATUS": event.status,
        "SCHEDULED_EVENT_NOT_BEFORE": event.not_before,
        "SCHEDULED_EVENT_RESOURCES": ",".join(event.resources),
        "SCHEDULED_EVENT_RESOURCE_TYPE": event.resource_type,
        "SCHEDULED_EVENT_SOURCE": event.source,
        "SCHEDULED_EVENT_DURATION_SECONDS": str(event.duration_seconds),
        "SCHEDULED_EVENT_DESCRIPTION": event.description,
        "SCHEDULED_EVENT_DOCUMENT_INCARNATION": "" if incarnation is None else str(incarnation),
        "SCHEDULED_EVENT_VM_NAME": vm_name,
        "SCHEDULED_EVENT_HOOK_PHASE": phase,
        "SCHEDULED_EVENT_FIRST_SEEN_STATUS": first_seen_status or event.status,
        "SCHEDULED_EVENT_DEADLINE": deadline.isoformat() if deadline else "",
    }
    env.update({f"SCHEDULED_EVENT_{name}": value for name, value in (end or {}).items()})
    return env


class HookRunner:
    """Runs hooks; `cancel` (the agent stopping) kills what runs after `grace` seconds."""

    def __init__(self, *, kill_grace_seconds: float, now: Callable[[], datetime]) -> None:
        self._kill_grace = kill_grace_seconds
        self._now = now
        self.cancel = threading.Event()

    def run_all(self, hooks: Sequence[Hook], event: ScheduledEvent, env: Mapping[str, str], *,
                deadline: datetime | None = None) -> list[HookResult]:
        """Run hooks in order; after the first failure the rest are skipped (like `set -e`)."""
        results: list[HookResult] = []
        for hook in hooks:
            if results and not results[-1].succeeded:
                results.append(HookResult(name=hook.name, status=SKIPPED))
                continue
            results.append(self.run(hook, event, env, deadline=deadline))
        return results

    def run(self, hook: Hook, event: ScheduledEvent, env: Mapping[str, str], *,
            deadline: datetime | None = None) -> HookResult:
        now = self._now()
        started_at = now.isoformat()
        timeout, cut = hook.timeout_seconds, False
        if deadline is not None:
            left = (deadline - now).total_seconds()
            if left <= 0:
                log.warning("[%s] hook %s not started: no notice left (deadline %s)", event.event_id, hook.name,
                            deadline.isoformat())
                return HookResult(name=hook.name, status=CUT_SHORT, started_at=started_at,
                                  output=f"not started: the deadline {deadline.isoformat()} (NotBefore less the "
                                         f"margin) had passed")
            timeout, cut = min(timeout, left), left < timeout
        started = time.monotonic()
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as output:
            stdin.write(event.to_json().encode())
            stdin.seek(0)
            try:
                process = subprocess.Popen(  # noqa: S603 - the operator's configured command
                    hook.argv, stdin=stdin, stdout=output, stderr=subprocess.STDOUT,
                    env={**os.environ, **env}, start_new_session=True, close_fds=True,
                )
            except OSError as exc:
                log.error("[%s] hook %s could not start: %s", event.event_id, hook.name, exc)
                return HookResult(name=hook.name, status=NOT_STARTED, started_at=started_at,
                                  output=str(exc)[-OUTPUT_TAIL:])
            status, exit_code = self._wait(process, hook, event, timeout, cut)
            output.seek(0)
            text = output.read().decode("utf-8", "replace")[-OUTPUT_TAIL:]
        result = HookResult(name=hook.name, status=status, exit_code=exit_code, started_at=started_at,
                            duration_seconds=round(time.monotonic() - started, 3), output=text)
        if result.succeeded:
            log.info("[%s] hook %s succeeded in %.1f s", event.event_id, hook.name, result.duration_seconds)
        else:
            log.warning("[%s] hook %s after %.1f s; output: %s", event.event_id, result.summary(),
                        result.duration_seconds, text.strip()[-500:] or "(none)")
        return result

    def _wait(self, process: subprocess.Popen[bytes], hook: Hook, event: ScheduledEvent, timeout: float,
              cut: bool) -> tuple[str, int | None]:
        deadline = time.monotonic() + timeout
        while True:
            # Short waits so a stop request (cancel) is noticed promptly.
            try:
                code = process.wait(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
                return (SUCCEEDED if code == 0 else FAILED), code
            except subprocess.TimeoutExpired:
                pass
            if self.cancel.is_set():
                log.warning("[%s] hook %s interrupted: the agent is stopping", event.event_id, hook.name)
                return INTERRUPTED, self._kill_group(process)
            if time.monotonic() >= deadline and cut:
                log.warning("[%s] hook %s cut short after %.1f s: the notice before NotBefore ran out; killing its "
                            "process group", event.event_id, hook.name, timeout)
                return CUT_SHORT, self._kill_group(process)
            if time.monotonic() >= deadline:
                log.warning("[%s] hook %s timed out after %g s; killing its process group",
                            event.event_id, hook.name, hook.timeout_seconds)
                return TIMED_OUT, self._kill_group(process)

    def _kill_group(self, process: subprocess.Popen[bytes]) -> int | None:
        """SIGTERM the hook's whole process group, SIGKILL whatever is left after the grace."""
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=self._kill_grace)
        except subprocess.TimeoutExpired:
            pass
        # Also after the leader exited: its children may have ignored SIGTERM.
        _signal_group(process.pid, signal.SIGKILL)
        return process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
