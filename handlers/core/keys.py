"""Ledger keys: where a run, a machine and a snapshot are kept. They never change for the same
ids (whatever their casing), so every attempt of a run finds the rows of the attempts before it."""

from __future__ import annotations

import hashlib
import re

from handlers.core.ids import configuration_name_of, name_of


def digest(value: str) -> str:
    # ARM ids are case-insensitive; the same machine must always map to the same row.
    return hashlib.sha256(value.lower().encode()).hexdigest()[:32]


def run_key(correlation_id: str) -> str:
    """Partition key for a run: readable, and free of the characters Table keys forbid."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{configuration_name_of(correlation_id)}_{name_of(correlation_id)}")
    return f"{readable[:120]}_{digest(correlation_id)}"


def machine_row_key(resource_id: str) -> str:
    return f"machine-{digest(resource_id)}"


def snapshot_row_key(disk_id: str) -> str:
    return f"snapshot-{digest(disk_id)}"
