"""How a step tells the claimed run that the phase goes on in another work message."""

from __future__ import annotations

from handlers.core.work import WorkMessage


class DeferredError(Exception):
    """The step cannot run yet: release the claim and queue `message` again after `seconds`."""

    def __init__(self, reason: str, message: WorkMessage | None, seconds: float) -> None:
        super().__init__(reason)
        self.message = message
        self.seconds = seconds


class ContinueLater(Exception):  # noqa: N818 - a signal, not an error
    """Resume the phase at step `step` in a new work message (this invocation's time is spent, or
    the step runs in an invocation of its own); `done`: the steps after it that finished here."""

    def __init__(self, step: str, reason: str, *, done: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.step = step
        self.done = done
