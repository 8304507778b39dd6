"""What the post phase's steps hand each other within one invocation."""

from __future__ import annotations

from dataclasses import dataclass, field

from handlers.ledger import MachineRecord


@dataclass
class PostWork:
    run_status: str = "unknown"
    nothing_to_restore: bool = False  # no ledger record of the run's pre event
    # The run's machines as the foreground steps left them (start-services, patch-results) for the
    # tags; the steps beside (restore-power, retention, health) keep their own.
    records: list[MachineRecord] = field(default_factory=list)
