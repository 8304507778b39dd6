"""The run ledger: what we saw and did, per run, in Azure Table storage (`store`), and the
alerts kept on a run (`alerts`)."""

from __future__ import annotations

from handlers.ledger.phases import live_lease
from handlers.ledger.records import HEALTH_FIELDS, PATCH_FIELDS, RESTORE_FIELDS
from handlers.ledger.store import (
    ALERTS_PARTITION,
    PHASE_LEASE,
    REJECTED_PARTITION,
    AcceptOutcome,
    LeaseLostError,
    Ledger,
    MachineRecord,
    PhaseBusy,
    PhaseClaim,
    PhaseStatus,
    SnapshotRecord,
    machine_row_key,
    run_key,
)

__all__ = ["ALERTS_PARTITION", "HEALTH_FIELDS", "PATCH_FIELDS", "PHASE_LEASE", "REJECTED_PARTITION", "RESTORE_FIELDS",
           "AcceptOutcome", "Ledger", "LeaseLostError",
           "MachineRecord", "PhaseBusy", "PhaseClaim", "PhaseStatus", "SnapshotRecord", "live_lease", "machine_row_key",
           "run_key"]
