"""The agent's loop: poll, diff into changes, run hooks, approve, forward.

One `run_once()` is one tick. Hooks run on worker threads so polling goes on while they run
(a short-notice Preempt must not wait behind a long Reboot hook); everything that touches the
state happens on the calling thread. Before anything is recorded as done, the changes it
produced are in the forwarding backlog: a crash in between forwards a change twice, never zero
times.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import datetime, timedelta, timezone

from .backoff import Backoff, OutageLog
from .changes import Change, ChangeKind, observe, record_change
from .config import AgentConfig
from .document import Document, MalformedDocumentError, parse_event
from .forwarder import Forwarder, change_record
from .hooks import INTERRUPTED, HookResult, HookRunner, hook_environment
from .imds import EndpointError, ImdsClient
from .policy import APPROVE, affects, decide
from .publisher import Publisher
from .state import (
    APPROVAL_HOOKS_FAILED,
    APPROVAL_NOT_NEEDED,
    APPROVED,
    HOOKS_FAILED,
    HOOKS_NONE,
    HOOKS_NOT_THIS_VM,
    HOOKS_PENDING,
    HOOKS_RUNNING,
    HOOKS_SUCCEEDED,
    AgentState,
    StateStore,
)

log = logging.getLogger("scheduled_events_agent")
_FINAL_APPROVALS = (APPROVED, APPROVAL_NOT_NEEDED, APPROVAL_HOOKS_FAILED)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Agent:
    """The in-VM agent over one state directory. Call `close()` (or use `run_forever`) when done."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        imds: ImdsClient | None = None,
        publisher: Publisher | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._now = clock
        self._store = StateStore(config.state_dir)
        try:
            self._forwarder = Forwarder.from_config(config, monotonic=monotonic, publisher=publisher)
        except BaseException:
            self._store.close()
            raise
        self._imds = imds or ImdsClient(config.scheduled_events_url, config.instance_metadata_url,
                                        api_version=config.api_version, timeout=config.http_timeout_seconds)
        self._runner = HookRunner(kill_grace_seconds=config.kill_grace_seconds, now=clock)
        self._executor = ThreadPoolExecutor(max_workers=config.hook_workers, thread_name_prefix="hooks")
        self._running: dict[str, Future[list[HookResult]]] = {}
        self._monotonic = monotonic
        self._poll_backoff = Backoff(config.backoff_initial_seconds, config.backoff_max_seconds, monotonic=monotonic)
        self._outage = OutageLog("Scheduled Events endpoint", log, monotonic=monotonic)
        self._approval_backoff: dict[str, Backoff] = {}
        self._vm_name = config.vm_name
        self._resource_id = config.resource_id
        self._polled = False
        self._saved = json.dumps(self.state.to_dict(), sort_keys=True)
        self._closed = False

    @property
    def state(self) -> AgentState:
        return self._store.state

    @property
    def vm_name(self) -> str | None:
        return self._vm_name

    @property
    def forwarder(self) -> Forwarder:
        return self._forwarder

    @property
    def hooks_running(self) -> int:
        return len(self._running)

    # -- the loop ------------------------------------------------------------------------------

    def run_once(self) -> None:
        """One tick: collect finished hooks, poll (unless backing off), act, forward."""
        self._commit(self._collect_hooks())
        if self._poll_backoff.ready():
            document = self._poll()
            if document is not None:
                first = not self._polled
                self._polled = True
                changes = self._interrupted_by_restart() if first else []
                now = self._now()
                changes += observe(self.state, document, now)
                retention = timedelta(days=self.config.vanished_retention_days)
                for gone in self.state.prune(now, retention, keep=self._running.keys()):
                    self._approval_backoff.pop(gone, None)
                self._commit(changes)
                self._start_hooks(document.incarnation)
                self._commit(self._approve())
        self._forwarder.flush()

    def run_forever(self, stop: threading.Event) -> None:
        """Tick about every `poll_interval_seconds` until `stop` is set, then `close()`."""
        log.info("agent started: VM %s, polling %s every %g s, state in %s, forwarding %s",
                 self._vm_name or "(from instance metadata)", self.config.scheduled_events_url,
                 self.config.poll_interval_seconds, self.config.state_dir,
                 self.config.forwarding.endpoint if self.config.forwarding else "off")
        try:
            while not stop.is_set():
                started = self._monotonic()
                self.run_once()
                stop.wait(max(0.0, self.config.poll_interval_seconds - (self._monotonic() - started)))
        finally:
            self.close()

    def wait_for_hooks(self, timeout: float | None = None) -> bool:
        """Block until running hooks finish (their results are recorded by the next tick)."""
        done, pending = wait_futures(list(self._running.values()), timeout=timeout)
        return not pending

    def close(self) -> None:
        """Let running hooks finish within `stop_grace_seconds`, kill the rest, record, flush, save."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._running:
                grace = self.config.stop_grace_seconds
                log.info("stopping: waiting up to %g s for %d running hook set(s)", grace, len(self._running))
                if not self.wait_for_hooks(grace):
                    self._runner.cancel.set()
                    self.wait_for_hooks()
            self._commit(self._collect_hooks())
            self._executor.shutdown(wait=True)
            self._forwarder.flush()
            self._store.save()
            log.info("agent stopped; %d change(s) left in the forwarding backlog", len(self._forwarder.pending))
        finally:
            self._forwarder.close()
            self._imds.close()
            self._store.close()

    # -- steps ---------------------------------------------------------------------------------

    def _poll(self) -> Document | None:
        if self._vm_name is None:
            try:
                self._vm_name = self._imds.get_vm_name()
                self._resource_id = self._resource_id or self._imds.get_resource_id()
                log.info("VM name %s, resource id %s (from instance metadata)", self._vm_name,
                         self._resource_id or "unknown")
            except EndpointError as exc:
                self._endpoint_failed(f"instance metadata (VM name): {exc}", exc)
                return None
        timeout = self.config.http_timeout_seconds if self._polled else self.config.first_poll_timeout_seconds
        try:
            document = self._imds.get_document(timeout=timeout)
        except EndpointError as exc:
            self._endpoint_failed(str(exc), exc)
            return None
        except MalformedDocumentError as exc:
            self._endpoint_failed(f"malformed document skipped: {exc}", None, level=logging.ERROR)
            return None
        self._poll_backoff.succeeded()
        self._outage.recovered(f"DocumentIncarnation {document.incarnation}")
        return document

    def _endpoint_failed(self, reason: str, exc: EndpointError | None, *, level: int = logging.WARNING) -> None:
        if exc is not None and exc.is_bad_request:
            level = logging.ERROR  # a 400 is our request's fault (header, api-version): its body says why
        self._outage.failed(reason, retry_in=self._poll_backoff.failed(), level=level)

    def _interrupted_by_restart(self) -> list[Change]:
        """Hooks marked running by a previous process that died: failed, and never run again."""
        changes = []
        for record in self.state.events.values():
            if record.hooks == HOOKS_RUNNING and record.event_id not in self._running:
                result = HookResult(name="(all)", status=INTERRUPTED, started_at=record.hooks_started_at or "",
                                    output="the agent stopped while the hooks ran; they are not run again")
                record.hooks = HOOKS_FAILED
                record.hook_results = [result.to_dict()]
                log.warning("[%s] hooks were interrupted by an agent restart; not rerun, event not approved",
                            record.event_id)
                changes.append(record_change(ChangeKind.HOOK_FAILED, record, self._now(),
                                             self.state.last_incarnation, (result,)))
        return changes

    def _start_hooks(self, incarnation: int) -> None:
        assert self._vm_name is not None
        for record in self.state.events.values():
            if not record.active or record.hooks != HOOKS_PENDING:
                continue
            event = parse_event(record.event)
            hooks = self.config.for_type(event.event_type).hooks
            if not affects(event, self._vm_name):
                record.hooks = HOOKS_NOT_THIS_VM  # logged once, by the approval decision
                continue
            if not hooks:
                record.hooks = HOOKS_NONE
                continue
            record.hooks = HOOKS_RUNNING
            record.hooks_started_at = self._now().isoformat()
            self._save()  # before the first hook starts: at most once, even across a crash
            log.info("[%s] %s: running %d hook(s): %s", event.event_id, event.event_type, len(hooks),
                     ", ".join(hook.name for hook in hooks))
            env = hook_environment(event, vm_name=self._vm_name, incarnation=incarnation)
            self._running[event.event_id] = self._executor.submit(self._runner.run_all, hooks, event, env)

    def _collect_hooks(self) -> list[Change]:
        changes = []
        for event_id, future in list(self._running.items()):
            if not future.done():
                continue
            del self._running[event_id]
            record = self.state.events[event_id]
            try:
                results = future.result()
            except Exception as exc:  # a bug in the runner: record it as a failure, never approve
                log.exception("[%s] running the hooks failed", event_id)
                results = [HookResult(name="(all)", status="error", output=repr(exc))]
            record.hook_results = [result.to_dict() for result in results]
            succeeded = all(result.succeeded for result in results)
            record.hooks = HOOKS_SUCCEEDED if succeeded else HOOKS_FAILED
            kind = ChangeKind.HOOK_SUCCEEDED if succeeded else ChangeKind.HOOK_FAILED
            changes.append(record_change(kind, record, self._now(), self.state.last_incarnation, tuple(results)))
        return changes

    def _approve(self) -> list[Change]:
        assert self._vm_name is not None
        changes = []
        for record in self.state.events.values():
            if record.approval in _FINAL_APPROVALS:
                continue
            event = parse_event(record.event)
            decision = decide(record, event, self.config, self._vm_name)
            if decision is None:
                continue
            if decision.outcome != APPROVE:
                if (record.approval, record.approval_detail) != (decision.outcome, decision.reason):
                    log.info("[%s] %s: %s", record.event_id, event.event_type, decision.reason)
                    record.approval, record.approval_detail = decision.outcome, decision.reason
                continue
            backoff = self._approval_backoff.setdefault(record.event_id, Backoff(
                self.config.backoff_initial_seconds, self.config.backoff_max_seconds, monotonic=self._monotonic))
            if not backoff.ready():
                continue
            try:
                self._imds.approve([record.event_id])
            except EndpointError as exc:
                log.warning("[%s] approval failed: %s; retrying in %.1f s", record.event_id, exc, backoff.failed())
                continue
            record.approval, record.approval_detail = APPROVED, decision.reason
            record.approved_at = self._now().isoformat()
            changes.append(record_change(ChangeKind.APPROVED, record, self._now(), self.state.last_incarnation))
        return changes

    def _commit(self, changes: list[Change]) -> None:
        """Forward (backlog first), then save the state if anything in it changed."""
        vm_name = self._vm_name
        if changes and vm_name is not None:
            # Another VM's event would read as maintenance of this VM at the central side.
            changes = [change for change in changes if affects(parse_event(change.event), vm_name)]
            for change in changes:
                event = change.event
                log.info("[%s] %s %s: status %s, NotBefore %s, resources %s", change.event_id,
                         event.get("EventType", "?"), change.kind.value, event.get("EventStatus", "?"),
                         event.get("NotBefore") or "-", ",".join(event.get("Resources") or []) or "-")
            self._forwarder.enqueue(
                change_record(change, vm_name=vm_name, resource_id=self._resource_id) for change in changes)
        self._save()

    def _save(self) -> None:
        snapshot = json.dumps(self.state.to_dict(), sort_keys=True)
        if snapshot != self._saved:
            self._store.save()
            self._saved = snapshot
