"""Exceptions a caller branches on. Everything else reuses azure.core.exceptions."""

from __future__ import annotations

from handlers.core.bounds import bounded_text

# What an error message keeps of a field name and of the problem: they end up in log lines and
# ledger rows, and the input they come from may be any size.
_FIELD_UNITS, _PROBLEM_UNITS = 256, 2048


class MaintenanceToolkitError(Exception):
    """Base class for this toolkit's own errors."""


class InvalidEventError(MaintenanceToolkitError, ValueError):
    """An event that can never be processed: retrying it cannot help.

    `field` names the offending part of the event (for example ``data.correlationId``). Both are
    cut to a few hundred characters of valid Unicode: they may quote what was sent.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = bounded_text(field, _FIELD_UNITS)
        self.problem = bounded_text(problem, _PROBLEM_UNITS)
        super().__init__(f"invalid maintenance event: {self.field}: {self.problem}")


class UnsupportedEventTypeError(MaintenanceToolkitError):
    """A well-formed event of a type this toolkit does not handle (ignored with a warning)."""

    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        super().__init__(f"unsupported event type {bounded_text(repr(event_type[:200]), 256)}")


class SettingsError(MaintenanceToolkitError, ValueError):
    """An app setting with a value we cannot use; `setting` names it."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"app setting {setting}: {problem}")
