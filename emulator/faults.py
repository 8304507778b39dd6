"""Transport-level faults between the app and ARM: failure modes, and random faults at a rate.

A fault either strikes before the request reaches the service (nothing is applied) or after the
service applied it (the answer is lost, or replaced by an error). Clients cannot tell the two apart
from the response alone; that is exactly what a reliability test needs to exercise.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from .messages import ArmError, DroppedConnection, Reply, error_reply

# Modes of AzureEmulator.fail. Before the service: "request" (an error answer), "reset" (the
# connection drops), "refused" (no connection). After the service applied the request:
# "lost-answer" (the connection drops), "applied-error" (an error answer). "operation": accepted,
# then the async operation fails.
BEFORE_MODES = ("request", "reset", "refused")
AFTER_MODES = ("lost-answer", "applied-error")
FAILURE_MODES = ("request", "operation", "reset", "refused", "lost-answer", "applied-error")
DROP_MODES = frozenset({"reset", "refused", "lost-answer"})

FAULT_KINDS = ("500", "502", "503", "504", "reset", "refused")
# Routes whose fault may strike after the write was applied (inject_faults' applied_share).
WRITE_OPERATIONS = frozenset(
    {"start", "deallocate", "powerOff", "snapshot", "deleteSnapshot", "cancel", "runCommand", "deleteRunCommand"}
    | {"tags"}
)

# What ARM's front door answers for each status (no Retry-After: clients use their own backoff).
_STATUS_ERRORS = {
    500: ArmError("InternalServerError", "Encountered internal server error. Please retry the request."),
    502: ArmError("BadGateway", "The gateway received an invalid response from the resource provider."),
    503: ArmError("ServiceUnavailable", "The server is currently unable to receive requests. Please retry."),
    504: ArmError(
        "GatewayTimeout", "The gateway did not receive a response from the resource provider within the time period."
    ),
}


def status_error(status: int) -> ArmError:
    """The ARM error body for an injected status."""
    return _STATUS_ERRORS.get(status, ArmError("InternalServerError", f"Injected HTTP {status}."))


@dataclass
class FaultStats:
    """What `inject_faults` injected so far: `injected` per kind ("503", "reset", ...), and how many
    of them struck after the write was applied (`applied`). Updated live, under the emulator's lock."""

    injected: dict[str, int] = field(default_factory=dict)
    applied: int = 0

    @property
    def total(self) -> int:
        return sum(self.injected.values())


@dataclass(frozen=True)
class Fault:
    """One drawn fault: its kind, and whether it is meant to strike after the write is applied."""

    kind: str
    after_write: bool

    def mode(self, applied: bool) -> str:
        """The failure mode this fault takes (see FAILURE_MODES)."""
        if self.kind in ("reset", "refused"):
            return "lost-answer" if applied and self.kind == "reset" else self.kind
        return "applied-error" if applied else "request"


class FaultInjector:
    """Draws random faults, deterministically from `seed`; the emulator's lock serialises draws."""

    def __init__(
        self,
        rate: float,
        *,
        seed: int,
        kinds: Sequence[str],
        operations: Collection[str] | None,
        applied_share: float,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, not {rate!r}")
        if not 0.0 <= applied_share <= 1.0:
            raise ValueError(f"applied_share must be between 0 and 1, not {applied_share!r}")
        if not kinds:
            raise ValueError("kinds must name at least one fault kind")
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind {unknown[0]!r}; expected some of {', '.join(FAULT_KINDS)}")
        self.rate = rate
        self.kinds = tuple(kinds)
        self.operations = None if operations is None else frozenset(operations)
        self.applied_share = applied_share
        self.stats = FaultStats()
        self._random = random.Random(seed)

    def draw(self, operation: str) -> Fault | None:
        """A fault for one request of `operation`, or None."""
        if self.operations is not None and operation not in self.operations:
            return None
        if self._random.random() >= self.rate:
            return None
        kind = self._random.choice(self.kinds)
        # A refused connection sent nothing, so it can never strike after the write.
        after = operation in WRITE_OPERATIONS and kind != "refused" and self._random.random() < self.applied_share
        return Fault(kind, after)

    def inject(self, fault: Fault, *, applied: bool) -> Reply:
        """Count `fault` and strike: raise DroppedConnection, or return the error answer."""
        self.stats.injected[fault.kind] = self.stats.injected.get(fault.kind, 0) + 1
        if applied:
            self.stats.applied += 1
        return strike(fault.mode(applied), int(fault.kind) if fault.kind.isdigit() else 0)


def strike(mode: str, status: int, error: ArmError | None = None, headers: dict[str, str] | None = None) -> Reply:
    """Apply one failure mode: raise DroppedConnection for a drop, else the error answer of `status`."""
    if mode in DROP_MODES:
        raise DroppedConnection(mode)
    reply = error_reply(status, error or status_error(status), headers)
    reply.fault = mode
    return reply
