"""One way to run a claimed step: claim → heartbeat → run → release on failure → finish.

A worker claims a step's phase row in the ledger with a short lease (MAINTENANCE_LEASE_SECONDS)
and renews it from a heartbeat thread while it is alive, so a worker that dies loses its claim
within one lease, not after the longest a phase can take. What a message does when the phase is
claimed by someone else depends on whether it is a first delivery:

- a first delivery (dequeue count 1) is a duplicate of a message another live worker is on:
  acknowledged and dropped;
- a retried message (dequeue count > 1: its earlier invocation failed or its worker died), or a
  copy queued by such a one, may be the only message left for the phase: it is queued again,
  invisible until the lease has run out, and then takes the phase over and resumes from the
  ledger if the lease was not renewed in between.

Everything after the claim releases it when it fails (conditional on the claim's ETag, so a
worker that lost its claim cannot undo the one who took it over), and the exception goes back
to the Functions host, which retries the message and finally moves it to the poison queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from handlers.core import telemetry
from handlers.core.logs import RunLogger
from handlers.core.work import WorkMessage, send_work
from handlers.ledger import LeaseLostError, PhaseBusy, PhaseClaim, PhaseStatus
from handlers.ledger.alerts import AlertKind, raise_alert
from handlers.phases.run_end import PhaseEnd, phase_ended
from handlers.phases.signals import ContinueLater, DeferredError
from handlers.runtime import Runtime

# A retried message that found the phase held this many times in a row has waited for hours of
# renewed leases: something renews a claim without finishing it.
MAX_TAKEOVER_WAITS = 120


@dataclass(frozen=True)
class Claimed:
    """What a claimed run returns: its summary, DISPATCHED when messages of its own finish it,
    and how the run's phase ended when it did (`handlers.phases.run_end`)."""

    summary: dict[str, Any]
    status: PhaseStatus = PhaseStatus.COMPLETED
    ends: PhaseEnd | None = None


class Heartbeat:
    """Keeps a claim alive from a thread of its own; other periodic duties ride on its ticks."""

    def __init__(self, runtime: Runtime, claim: PhaseClaim, log: RunLogger) -> None:
        self._runtime = runtime
        self._lease = timedelta(seconds=runtime.settings.lease_seconds)
        self._claim = claim
        self._log = log
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._duties: list[Callable[[], bool]] = []
        self._thread = telemetry.thread(self._beat, name="heartbeat")

    @property
    def claim(self) -> PhaseClaim:
        with self._lock:
            return self._claim

    @property
    def lost(self) -> bool:
        """True once another worker has taken the phase over: stop acting."""
        return self._lost.is_set()

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> PhaseClaim:
        """Stop renewing; returns the claim as last renewed (for the finishing write)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.claim

    def record(self, values: dict[str, Any]) -> None:
        """Merge values into the claimed phase row now (conditional on the claim)."""
        with self._lock:
            self._claim = self._runtime.ledger.renew_claim(self._claim, lease=self._lease, values=values)

    def add_duty(self, duty: Callable[[], bool]) -> None:
        """Call `duty` on every beat until it returns True (done) or the heartbeat stops."""
        with self._lock:
            self._duties.append(duty)

    def _beat(self) -> None:
        interval = max(1.0, self._lease.total_seconds() / 4)
        warned = False
        while not self._stop.wait(interval):
            try:
                self.record({})
                warned = False
            except LeaseLostError:
                self._log.warning("phase %s was taken over by another worker (this worker's lease ran out); "
                                  "this worker stops sending", self._claim.phase)
                self._lost.set()
                return
            except Exception as exc:  # storage down: keep trying; the lease says how long we may
                if not warned:
                    self._log.warning("could not renew the claim on phase %s (retrying every %.0f s): %s",
                                      self._claim.phase, interval, exc)
                    warned = True
            with self._lock:
                duties = list(self._duties)
            for duty in duties:
                try:
                    done = duty()
                except Exception as exc:
                    self._log.warning("a periodic duty failed (retried on the next beat): %s", exc)
                    done = False
                if done:
                    with self._lock:
                        self._duties.remove(duty)


def run_claimed(
    runtime: Runtime, message: WorkMessage, *, dequeue_count: int, log: RunLogger,
    work: Callable[[Heartbeat], Claimed],
) -> dict[str, Any] | None:
    """Claim the message's phase, run `work` under a heartbeat, record the end; None when there
    was nothing to do here (done, a duplicate, waiting for a lease, deferred)."""
    ledger = runtime.ledger
    event = message.event
    what = message.describe()
    claim = ledger.claim_phase(event.correlation_id, message.ledger_phase,
                               lease=timedelta(seconds=runtime.settings.lease_seconds))
    if claim is None:
        log.info("%s already done; this message is a duplicate", what)
        return None
    if isinstance(claim, PhaseBusy):
        _wait_for_lease(runtime, message, claim, dequeue_count, log)
        return None
    log.info("%s started (attempt %d)", what, claim.attempt)
    heartbeat = Heartbeat(runtime, claim, log).start()
    try:
        outcome = work(heartbeat)
    except DeferredError as deferred:
        _release(runtime, heartbeat.stop(), str(deferred), log)
        if deferred.message is not None:
            send_work(runtime.work_queue(), deferred.message, delay_seconds=deferred.seconds)
        return None
    except ContinueLater as later:
        # Released first, then sent: if the send fails, the host retries this message, which
        # finds the phase claimable and runs from its own step again.
        _release(runtime, heartbeat.stop(), "", log, status=PhaseStatus.CONTINUED, resume=later.step)
        log.info("%s goes on at step %s in a new invocation (%s)", what, later.step, later)
        send_work(runtime.work_queue(), replace(message, resume=later.step, done=later.done,
                                                rounds=message.rounds + 1, takeovers=0))
        return None
    except LeaseLostError:
        heartbeat.stop()
        log.warning("%s stopped here: another worker took it over and finishes it", what)
        return None
    except BaseException as exc:
        _release(runtime, heartbeat.stop(), f"{type(exc).__name__}: {exc}", log)
        log.warning("%s failed on attempt %d; the message will be retried: %s", what, claim.attempt, exc)
        raise
    final = heartbeat.stop()
    try:
        ledger.finish_phase(final, summary=outcome.summary, status=outcome.status)
    except LeaseLostError:
        log.warning("%s finished here after another worker took it over; that worker records its end", what)
        return outcome.summary
    if outcome.ends is not None:
        phase_ended(runtime, event, event.kind.value, outcome.ends, outcome.summary)
    return outcome.summary


def _wait_for_lease(runtime: Runtime, message: WorkMessage, busy: PhaseBusy, dequeue_count: int,
                    log: RunLogger) -> None:
    what = message.describe()
    if dequeue_count <= 1 and not message.takeovers:
        log.info("%s is being run by another worker (lease until %s); this message is a duplicate", what,
                 busy.lease_until.isoformat())
        return
    if message.takeovers >= MAX_TAKEOVER_WAITS:
        raise_alert(runtime.ledger, message.event.correlation_id, AlertKind.STALE_TAKEOVER,
                    f"{what} has been held by a renewed claim through {message.takeovers} checks; "
                    "this message gives up waiting for it", phase=message.ledger_phase)
        return
    wait = max(1.0, runtime.clock.seconds_until(busy.lease_until) + 1)
    log.warning("%s is claimed by a worker that may have died (attempt %d, lease until %s): checking again in "
                "%.0f s, then taking it over if the lease was not renewed", what, busy.attempt,
                busy.lease_until.isoformat(), wait)
    send_work(runtime.work_queue(), replace(message, takeovers=message.takeovers + 1), delay_seconds=wait)


def _release(runtime: Runtime, claim: PhaseClaim, error: str, log: RunLogger, *,
             status: PhaseStatus = PhaseStatus.RETRYING, resume: str = "") -> None:
    try:
        runtime.ledger.release_phase(claim, error=error, status=status, resume=resume)
    except LeaseLostError:
        log.warning("phase %s was taken over by another worker; nothing to release", claim.phase)
    except Exception as exc:  # the ledger is down too: the lease runs out and a retry takes over
        log.warning("could not release phase %s (%s); its lease ends at %s and a retried message takes "
                    "it over then", claim.phase, exc, claim.lease_until.isoformat())
