"""Keep a received queue message invisible while its function runs, as the WebJobs SDK does.

The host fetches a message with a visibility timeout (10 minutes by default) and, while the function
runs, pushes that timeout out again at half its length. Each update changes the message's pop
receipt; the host deletes or releases the message with the latest one.
"""

from __future__ import annotations

import logging
import math
import threading

from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.queue import QueueClient

log = logging.getLogger("functions-host")

# What the WebJobs SDK treats as "someone else has the message now, or it is gone": give up quietly.
_LOST_CODES = frozenset(
    {"PopReceiptMismatch", "MessageNotFound", "QueueNotFound", "QueueBeingDeleted", "QueueDisabled"}
)


def whole_seconds(seconds: float, minimum: int = 0) -> int:
    """Queue visibility timeouts are whole seconds: round up."""
    return max(minimum, math.ceil(seconds))


def error_code(error: HttpResponseError) -> str:
    """The storage error code as text (the SDK gives an enum member when it knows the code)."""
    code = getattr(error, "error_code", None)
    return str(getattr(code, "value", code) or "")


def message_lost(error: HttpResponseError) -> bool:
    """True for 400 PopReceiptMismatch, 404 MessageNotFound/QueueNotFound, 409 QueueBeingDeleted/Disabled."""
    return error.status_code in (400, 404, 409) and error_code(error) in _LOST_CODES


class MessageLease:
    """Renews one message's visibility every `visibility / 2` seconds until stopped."""

    def __init__(self, client: QueueClient, message_id: str, pop_receipt: str, visibility: float) -> None:
        self._client = client
        self._message_id = message_id
        self._pop_receipt = pop_receipt
        self._visibility = visibility
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.renewals = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"lease-{message_id[:8]}")
        self._thread.start()

    @property
    def pop_receipt(self) -> str:
        with self._lock:
            return self._pop_receipt

    def stop(self) -> str:
        """Stop renewing (waiting for an update in flight); returns the latest pop receipt."""
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        return self.pop_receipt

    def cancel(self) -> None:
        """Stop renewing without waiting, as a killed process does."""
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._visibility / 2):
            try:
                updated = self._client.update_message(
                    self._message_id, self.pop_receipt, visibility_timeout=whole_seconds(self._visibility, 1)
                )
            except AzureError as exc:
                if isinstance(exc, HttpResponseError) and message_lost(exc):
                    log.info("message %s: visibility not renewed, another receiver has it: %s",
                             self._message_id, error_code(exc))  # fmt: skip
                    return
                log.warning("message %s: renewing its visibility failed, retrying: %s", self._message_id, exc)
                continue
            with self._lock:
                self._pop_receipt = updated.pop_receipt or self._pop_receipt
                self.renewals += 1
