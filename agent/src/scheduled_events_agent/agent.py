"""The agent's loop: poll, diff into changes, run hooks, approve, forward.

One `run_once()` is one tick. Hooks run on threads of their own (`hookflow`), so polling and
every other event go on while they run; everything that touches the state happens on the
calling thread. Before anything is recorded as done, the changes it produced are in the
forwarding backlog: a crash in between forwards a change twice, never zero times.

A document is only believed when it is well formed (it has `Events`) and its
`DocumentIncarnation` does not go back; otherwise it is logged and skipped, and the last good
view stays. A lower incarnation served without a break for `incarnation_reset_seconds` is taken
as a restarted counter (the state's event ids still keep every event's hooks to once).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from .backoff import Backoff, OutageLog
from .changes import Change, ChangeKind, observe, record_change
from .config import AgentConfig
from .document import Document, MalformedDocumentError, parse_event
from .forwarder import Forwarder, change_record
from .hookflow import HookFlow
from .identity import VmIdentity
from .imds import EndpointError, ImdsClient
from .policy import APPROVE, affects, decide
from .publisher import Publisher
from .state import APPROVAL_HOOKS_FAILED, APPROVAL_NOT_NEEDED, APPROVED, AgentState, StateStore

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
        self._monotonic = monotonic
        self._identity = VmIdentity(self._imds, vm_name=config.vm_name, resource_id=config.resource_id,
                                    backoff=self._backoff(), monotonic=monotonic)
        self._hooks = HookFlow(config, now=clock, save=self._save)
        self._poll_backoff = self._backoff()
        self._outage = OutageLog("Scheduled Events endpoint", log, monotonic=monotonic)
        self._approval_backoff: dict[str, Backoff] = {}
        self._held: list[Change] = []  # observed before this VM's name was known
        self._lower_since: float | None = None
        self._recovered = False
        self._polled = False
        self._saved = json.dumps(self.state.to_dict(), sort_keys=True)
        self._closed = False

    @property
    def state(self) -> AgentState:
        return self._store.state

    @property
    def vm_name(self) -> str | None:
        return self._identity.name

    @property
    def forwarder(self) -> Forwarder:
        return self._forwarder

    @property
    def hooks_running(self) -> int:
        return self._hooks.running

    # -- the loop ------------------------------------------------------------------------------

    def run_once(self) -> None:
        """One tick: collect finished hooks, poll (unless backing off), start hooks, approve, forward."""
        if not self._recovered:
            self._recovered = True
            self._commit(self._hooks.recover(self.state))
        self._commit(self._hooks.collect(self.state))
        vm_name = self._identity.refresh()
        if self._poll_backoff.ready():
            document = self._poll()
            if document is not None:
                self._observe(document)
        if vm_name is not None:
            self._hooks.start(self.state, vm_name)
            self._commit(self._approve(vm_name))
        self._forwarder.flush()

    def run_forever(self, stop: threading.Event) -> None:
        """Tick about every `poll_interval_seconds` until `stop` is set, then `close()`."""
        log.info("agent started: VM %s, polling %s every %g s, state in %s, forwarding %s",
                 self.vm_name or "(from instance metadata)", self.config.scheduled_events_url,
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
        return self._hooks.wait(timeout)

    def close(self) -> None:
        """Let running hooks finish within `stop_grace_seconds`, kill the rest, record, flush, save."""
        if self._closed:
            return
        self._closed = True
        try:
            self._hooks.stop(self.config.stop_grace_seconds)
            self._commit(self._hooks.collect(self.state))
            self._forwarder.flush()
            self._store.save()
            log.info("agent stopped; %d change(s) left in the forwarding backlog", len(self._forwarder.pending))
        finally:
            self._forwarder.close()
            self._imds.close()
            self._store.close()

    # -- steps ---------------------------------------------------------------------------------

    def _backoff(self) -> Backoff:
        return Backoff(self.config.backoff_initial_seconds, self.config.backoff_max_seconds, monotonic=self._monotonic)

    def _poll(self) -> Document | None:
        timeout = self.config.http_timeout_seconds if self._polled else self.config.first_poll_timeout_seconds
        try:
            document = self._imds.get_document(timeout=timeout)
        except EndpointError as exc:
            self._endpoint_failed(str(exc), exc)
            return None
        except MalformedDocumentError as exc:
            self._endpoint_failed(f"malformed document skipped, the last good view kept: {exc}", None,
                                  level=logging.ERROR)
            return None
        self._polled = True
        if not self._believable(document):
            return None
        self._poll_backoff.succeeded()
        self._outage.recovered(f"DocumentIncarnation {document.incarnation}")
        return document

    def _believable(self, document: Document) -> bool:
        """False for a document whose incarnation went back (until that lasts long enough)."""
        last = self.state.last_incarnation
        if last is None or document.incarnation >= last:
            self._lower_since = None
            return True
        now = self._monotonic()
        if self._lower_since is None:
            self._lower_since = now
        if now - self._lower_since >= self.config.incarnation_reset_seconds:
            log.warning("DocumentIncarnation stayed below %d (now %d) for %.0f s: taken as a restarted counter",
                        last, document.incarnation, now - self._lower_since)
            self._lower_since = None
            return True
        self._endpoint_failed(f"DocumentIncarnation went back from {last} to {document.incarnation}: document "
                              f"skipped, the last good view kept", None)
        return False

    def _endpoint_failed(self, reason: str, exc: EndpointError | None, *, level: int = logging.WARNING) -> None:
        if exc is not None and exc.is_bad_request:
            level = logging.ERROR  # a 400 is our request's fault (header, api-version): its body says why
        self._outage.failed(reason, retry_in=self._poll_backoff.failed(), level=level)

    def _observe(self, document: Document) -> None:
        now = self._now()
        changes = observe(self.state, document, now)
        retention = timedelta(days=self.config.vanished_retention_days)
        for gone in self.state.prune(now, retention, keep=self._hooks.running_ids()):
            self._approval_backoff.pop(gone, None)
        self._commit(changes)

    def _approve(self, vm_name: str) -> list[Change]:
        changes = []
        now = self._now()
        for record in self.state.events.values():
            if record.approval in _FINAL_APPROVALS:
                continue
            event = parse_event(record.event)
            decision = decide(record, event, self.config, vm_name, now)
            if decision is None:
                continue
            if decision.outcome != APPROVE:
                if (record.approval, record.approval_detail) != (decision.outcome, decision.reason):
                    log.info("[%s] %s: %s", record.event_id, event.event_type, decision.reason)
                    record.approval, record.approval_detail = decision.outcome, decision.reason
                continue
            backoff = self._approval_backoff.setdefault(record.event_id, self._backoff())
            if not backoff.ready():
                continue
            try:
                self._imds.approve([record.event_id])
            except EndpointError as exc:
                log.warning("[%s] approval failed: %s; retrying in %.1f s", record.event_id, exc, backoff.failed())
                continue
            log.info("[%s] %s: %s", record.event_id, event.event_type, decision.reason)
            record.approval, record.approval_detail = APPROVED, decision.reason
            record.approved_at = self._now().isoformat()
            changes.append(record_change(ChangeKind.APPROVED, record, self._now(), self.state.last_incarnation))
        return changes

    def _commit(self, changes: list[Change]) -> None:
        """Forward (backlog first), then save the state if anything in it changed.

        Until this VM's name is known nothing can say which changes are about this VM: they wait.
        """
        vm_name = self._identity.name
        if vm_name is None:
            self._held.extend(changes)
        elif changes or self._held:
            changes, self._held = self._held + changes, []
            # Another VM's event would read as maintenance of this VM at the central side.
            missing = self.config.missing_resources_mean_this_vm
            changes = [change for change in changes
                       if affects(parse_event(change.event), vm_name, missing_means_this_vm=missing)]
            for change in changes:
                event = change.event
                log.info("[%s] %s %s: status %s, NotBefore %s, resources %s", change.event_id,
                         event.get("EventType", "?"), change.kind.value, event.get("EventStatus", "?"),
                         event.get("NotBefore") or "-", ",".join(event.get("Resources") or []) or "-")
            self._forwarder.enqueue(change_record(change, vm_name=vm_name, resource_id=self._identity.resource_id)
                                    for change in changes)
        self._save()

    def _save(self) -> None:
        snapshot = json.dumps(self.state.to_dict(), sort_keys=True)
        if snapshot != self._saved:
            self._store.save()
            self._saved = snapshot
