"""What the post phase's steps hand each other within one invocation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from handlers.ledger import MachineRecord


@dataclass
class PostWork:
    run_status: str = "unknown"
    nothing_to_restore: bool = False  # no ledger record of the run's pre event
    # The run's machines as start-services, then patch-results (beside, but the only one to write
    # it), left them for the tags; the other steps beside (restore-power, retention, health) keep
    # their own.
    records: list[MachineRecord] = field(default_factory=list)
    # Clear while `restore-power` still sends (set once its requests are out, or it ended, or it did
    # not run here): the tags' writes come after the restores' in ARM's write budget.
    restores_sent: threading.Event = field(default_factory=lambda: _set(threading.Event()))
    _rows: list[MachineRecord] | None = field(default=None, repr=False)
    _rows_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def machine_rows(self, read: Callable[[], list[MachineRecord]]) -> list[MachineRecord]:
        """The run's machine rows, read once for the steps beside that start together once the
        restores' plan is stored (patch-results, health), not once each: thousands of rows. The
        records are immutable and each step stores only its own columns, so they can share them."""
        with self._rows_lock:
            if self._rows is None:
                self._rows = read()
            return self._rows


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event
