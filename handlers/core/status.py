"""The words the ledger and the summaries use for what happened, one enum each."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """Of a machine's start or restore, a snapshot, a request."""

    PLANNED = "planned"  # a dry run's: never made
    PENDING = "pending"  # recorded, not yet known to be sent
    ISSUED = "issued"  # a restore sent, its end not yet seen
    SUCCEEDED = "succeeded"
    REUSED = "reused"  # a snapshot an earlier attempt made
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    NOT_NEEDED = "not-needed"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"


class PreAction(StrEnum):
    START = "start"
    NONE = "none"
    SKIP = "skip"


class CancelOutcome(StrEnum):
    """Of a cancel request, as its log lines say (`maintenance.outcome` of action `cancel`)."""

    REQUESTED = "requested"
    CANCELLED = "cancelled"
    FAILED = "failed"
    MISSED = "missed"  # the cutoff had passed


class Verdict(StrEnum):
    READY = "ready"
    FAILED = "failed"
    EMPTY = "empty"  # no machines found
    LATE = "late"  # the pre event came too late to act on
    DRY_RUN = "dry-run"
