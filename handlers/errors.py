"""Exceptions a caller branches on. Everything else reuses azure.core.exceptions."""

from __future__ import annotations


class MaintenanceToolkitError(Exception):
    """Base class for this toolkit's own errors."""


class InvalidEventError(MaintenanceToolkitError, ValueError):
    """An event that can never be processed: retrying it cannot help.

    `field` names the offending part of the event (for example ``data.correlationId``).
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid maintenance event: {field}: {problem}")


class UnsupportedEventTypeError(MaintenanceToolkitError):
    """A well-formed event of a type this toolkit does not handle (ignored with a warning)."""

    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        super().__init__(f"unsupported event type {event_type!r}")


class SettingsError(MaintenanceToolkitError, ValueError):
    """An app setting with a value we cannot use; `setting` names it."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"app setting {setting}: {problem}")
