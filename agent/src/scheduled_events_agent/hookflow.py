"""When each event's hooks run: before it (or as soon as it is seen Started), and after it.

- Start hooks run once per event for this VM, on a thread of their own: no event ever waits for
  another event's hooks (a Preempt gives 30 s of notice; a Reboot's drain may take minutes).
  For a Scheduled event their deadline is NotBefore less `notice_margin_seconds`.
- End hooks run once when an event whose start hooks ran (or had none configured) vanishes,
  whether it happened or Azure cancelled it, after its start hooks finished.
- Either set is marked running in the state file before its first hook starts, so an agent that
  dies meanwhile finds it on restart, reports it interrupted (failed) and never reruns it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from datetime import datetime, timedelta

from .changes import Change, ChangeKind, record_change
from .config import AgentConfig, Hook
from .document import ScheduledEvent, parse_event
from .hooks import INTERRUPTED, HookResult, HookRunner, hook_environment
from .policy import affects, not_this_vm_reason
from .state import (
    END_FAILED,
    END_NONE,
    END_PENDING,
    END_RUNNING,
    END_SUCCEEDED,
    HOOKS_DONE,
    HOOKS_FAILED,
    HOOKS_NONE,
    HOOKS_NOT_THIS_VM,
    HOOKS_PENDING,
    HOOKS_RUNNING,
    HOOKS_SKIPPED,
    HOOKS_SUCCEEDED,
    PHASE_END,
    PHASE_SCHEDULED,
    PHASE_STARTED,
    AgentState,
    EventRecord,
)

log = logging.getLogger("scheduled_events_agent")
START, END = "start", "end"


class HookFlow:
    """Starts and collects hook sets; everything touching the state runs on the caller's thread."""

    def __init__(self, config: AgentConfig, *, now: Callable[[], datetime], save: Callable[[], None]) -> None:
        self._config = config
        self._now = now
        self._save = save
        self.runner = HookRunner(kill_grace_seconds=config.kill_grace_seconds, now=now)
        self._running: dict[tuple[str, str], Future[list[HookResult]]] = {}

    @property
    def running(self) -> int:
        return len(self._running)

    def running_ids(self) -> set[str]:
        return {event_id for event_id, _ in self._running}

    def recover(self, state: AgentState) -> list[Change]:
        """Hook sets marked running by a previous process that died: failed, and never run again."""
        changes = []
        for record in state.events.values():
            for phase in (START, END):
                running = record.hooks == HOOKS_RUNNING if phase == START else record.end_hooks == END_RUNNING
                if not running or (record.event_id, phase) in self._running:
                    continue
                started = (record.hooks_started_at if phase == START else record.end_hooks_started_at) or ""
                result = HookResult(name="(all)", status=INTERRUPTED, started_at=started,
                                    output="the agent stopped while the hooks ran; they are not run again")
                what = "hooks were" if phase == START else "end hooks were"
                log.warning("[%s] %s interrupted by an agent restart; not rerun%s", record.event_id, what,
                            ", event not approved" if phase == START else "")
                changes.append(self._finish(state, record, phase, [result]))
        return changes

    def start(self, state: AgentState, vm_name: str) -> None:
        """Start what is due: hooks of new events for this VM, end hooks of vanished ones."""
        for record in state.events.values():
            if record.active and record.hooks == HOOKS_PENDING:
                self._start_hooks(state, record, vm_name)
            elif not record.active and record.end_hooks == END_PENDING and record.hooks != HOOKS_RUNNING:
                self._start_end_hooks(state, record, vm_name)

    def collect(self, state: AgentState) -> list[Change]:
        """Record the hook sets that finished; returns their changes."""
        changes = []
        for (event_id, phase), future in list(self._running.items()):
            if not future.done():
                continue
            del self._running[(event_id, phase)]
            try:
                results = future.result()
            except Exception as exc:  # a bug in the runner: record it as a failure, never approve
                log.exception("[%s] running the hooks failed", event_id)
                results = [HookResult(name="(all)", status="error", output=repr(exc))]
            changes.append(self._finish(state, state.events[event_id], phase, results))
        return changes

    def wait(self, timeout: float | None = None) -> bool:
        """Block until running hooks finish (their results are recorded by `collect`)."""
        _, pending = wait_futures(list(self._running.values()), timeout=timeout)
        return not pending

    def stop(self, grace: float) -> None:
        """Let running hooks finish within `grace` seconds, then interrupt them and wait."""
        if self._running:
            log.info("stopping: waiting up to %g s for %d running hook set(s)", grace, len(self._running))
            if not self.wait(grace):
                self.runner.cancel.set()
                self.wait()

    # -- internals -----------------------------------------------------------------------------

    def _start_hooks(self, state: AgentState, record: EventRecord, vm_name: str) -> None:
        event = parse_event(record.event)
        type_config = self._config.for_type(event.event_type)
        if not affects(event, vm_name, missing_means_this_vm=self._config.missing_resources_mean_this_vm):
            record.hooks = HOOKS_NOT_THIS_VM
            if not event.resources:  # another VM's event is routine; one naming no VM is not
                log.warning("[%s] %s: %s", event.event_id, event.event_type, not_this_vm_reason(event, vm_name))
            return
        if event.started and not type_config.run_hooks_for_started_events:
            record.hooks = HOOKS_SKIPPED
            log.info("[%s] %s already started: hooks not run (run_hooks_for_started_events is off)",
                     event.event_id, event.event_type)
            return
        record.hooks_phase = PHASE_STARTED if event.started else PHASE_SCHEDULED
        if not type_config.hooks:
            record.hooks = HOOKS_NONE
            return
        deadline = None if event.started else self._deadline(event)
        env = hook_environment(event, vm_name=vm_name, incarnation=state.last_incarnation,
                               phase=record.hooks_phase, first_seen_status=record.first_seen_status,
                               deadline=deadline)
        record.hooks = HOOKS_RUNNING
        record.hooks_started_at = self._now().isoformat()
        self._save()  # before the first hook starts: at most once, even across a crash
        log.info("[%s] %s (%s): running %d hook(s)%s: %s", event.event_id, event.event_type, event.status,
                 len(type_config.hooks), f" until {deadline.isoformat()}" if deadline else "",
                 ", ".join(hook.name for hook in type_config.hooks))
        self._spawn((event.event_id, START), type_config.hooks, event, env, deadline)

    def _start_end_hooks(self, state: AgentState, record: EventRecord, vm_name: str) -> None:
        if record.hooks not in HOOKS_DONE:
            record.end_hooks = ""  # its hooks never ran (another VM's event, skipped): nothing to undo
            return
        event = parse_event(record.event)
        end_hooks = self._config.for_type(event.event_type).end_hooks
        if not end_hooks:
            record.end_hooks = END_NONE
            return
        env = hook_environment(event, vm_name=vm_name, incarnation=state.last_incarnation, phase=PHASE_END,
                               first_seen_status=record.first_seen_status,
                               end={"LAST_STATUS": record.status, "VANISHED_AT": record.vanished_at or "",
                                    "START_HOOKS": record.hooks})
        record.end_hooks = END_RUNNING
        record.end_hooks_started_at = self._now().isoformat()
        self._save()
        log.info("[%s] %s is over (last seen %s): running %d end hook(s): %s", event.event_id, event.event_type,
                 record.status, len(end_hooks), ", ".join(hook.name for hook in end_hooks))
        self._spawn((event.event_id, END), end_hooks, event, env, None)

    def _deadline(self, event: ScheduledEvent) -> datetime | None:
        not_before = event.not_before_time
        if not_before is None:
            if event.not_before:
                log.warning("[%s] NotBefore %r is neither RFC 1123 nor ISO 8601: hooks get only their own timeouts",
                            event.event_id, event.not_before)
            return None
        return not_before - timedelta(seconds=self._config.notice_margin_seconds)

    def _spawn(self, key: tuple[str, str], hooks: Sequence[Hook], event: ScheduledEvent, env: dict[str, str],
               deadline: datetime | None) -> None:
        future: Future[list[HookResult]] = Future()

        def run() -> None:
            future.set_running_or_notify_cancel()
            try:
                future.set_result(self.runner.run_all(hooks, event, env, deadline=deadline))
            except BaseException as exc:  # handed to collect(), which records it as a failure
                future.set_exception(exc)

        self._running[key] = future
        threading.Thread(target=run, name=f"hooks-{key[1]}-{event.event_id[:8]}", daemon=True).start()

    def _finish(self, state: AgentState, record: EventRecord, phase: str, results: list[HookResult]) -> Change:
        succeeded = all(result.succeeded for result in results)
        if phase == START:
            record.hook_results = [result.to_dict() for result in results]
            record.hooks = HOOKS_SUCCEEDED if succeeded else HOOKS_FAILED
            kind = ChangeKind.HOOK_SUCCEEDED if succeeded else ChangeKind.HOOK_FAILED
        else:
            record.end_hook_results = [result.to_dict() for result in results]
            record.end_hooks = END_SUCCEEDED if succeeded else END_FAILED
            kind = ChangeKind.END_HOOK_SUCCEEDED if succeeded else ChangeKind.END_HOOK_FAILED
        return record_change(kind, record, self._now(), state.last_incarnation, tuple(results))
