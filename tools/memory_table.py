"""An in-memory stand-in for the Table storage calls the ledger makes, for one-shot CLI runs.

The rehearsal CLI runs the pipeline from a laptop or Cloud Shell where there may be no storage
account to keep a ledger in. The ledger is still needed within the run (it records what was
started and drives the verdict), so it lives in memory and is printed at the end.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode

_CONDITION = re.compile(r"^\s*(PartitionKey|RowKey)\s+(eq|ge|gt|le|lt)\s+(@\w+|'[^']*')\s*$")
_COMPARE = {
    "eq": lambda a, b: a == b, "ge": lambda a, b: a >= b, "gt": lambda a, b: a > b,
    "le": lambda a, b: a <= b, "lt": lambda a, b: a < b,
}


class MemoryTable:
    """The subset of `azure.data.tables.TableClient` that `handlers.ledger.Ledger` uses."""

    def __init__(self, table_name: str = "ledger") -> None:
        self.table_name = table_name
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._etags: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def create_entity(self, entity: Mapping[str, Any], **_: Any) -> dict[str, Any]:
        with self._lock:
            key = _key(entity)
            if key in self._rows:
                raise ResourceExistsError(message=f"entity {key} already exists")
            return self._store(key, dict(entity))

    def upsert_entity(self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE, **_: Any) -> dict[str, Any]:
        with self._lock:
            key = _key(entity)
            merged = {**self._rows.get(key, {}), **entity} if mode == UpdateMode.MERGE else dict(entity)
            return self._store(key, merged)

    def update_entity(
        self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE, *, etag: str | None = None,
        match_condition: MatchConditions | None = None, **_: Any,
    ) -> dict[str, Any]:
        with self._lock:
            key = _key(entity)
            if key not in self._rows:
                raise ResourceNotFoundError(message=f"entity {key} not found")
            if match_condition == MatchConditions.IfNotModified and etag != self._etags[key]:
                raise ResourceModifiedError(message=f"entity {key} was modified")
            merged = {**self._rows[key], **entity} if mode == UpdateMode.MERGE else dict(entity)
            return self._store(key, merged)

    def get_entity(self, partition_key: str, row_key: str, **_: Any) -> TableEntity:
        with self._lock:
            if (partition_key, row_key) not in self._rows:
                raise ResourceNotFoundError(message=f"entity {(partition_key, row_key)} not found")
            return self._entity((partition_key, row_key))

    def query_entities(self, query_filter: str, *, parameters: Mapping[str, Any] | None = None,
                       **_: Any) -> Iterator[TableEntity]:
        conditions = [_parse(part, parameters or {}) for part in re.split(r"\s+and\s+", query_filter)]
        with self._lock:
            matching = [k for k in sorted(self._rows) if all(_holds(k, c) for c in conditions)]
            return iter([self._entity(k) for k in matching])

    def submit_transaction(self, operations: Iterable[tuple[Any, ...]], **_: Any) -> list[Mapping[str, Any]]:
        operations = list(operations)
        with self._lock:
            for operation in operations:
                if operation[0] == "create" and _key(operation[1]) in self._rows:
                    raise TableTransactionError(message=f"entity {_key(operation[1])} already exists")
        results: list[Mapping[str, Any]] = []
        for operation in operations:
            kind, entity = operation[0], operation[1]
            kwargs = operation[2] if len(operation) > 2 else {}
            results.append(self.create_entity(entity) if kind == "create" else self.upsert_entity(entity, **kwargs))
        return results

    def rows(self) -> list[dict[str, Any]]:
        """Everything stored, for printing."""
        with self._lock:
            return [dict(row) for _, row in sorted(self._rows.items())]

    def _store(self, key: tuple[str, str], entity: dict[str, Any]) -> dict[str, Any]:
        etag = f'W/"{uuid.uuid4().hex}"'
        entity["Timestamp"] = datetime.now(UTC)
        self._rows[key], self._etags[key] = entity, etag
        return {"etag": etag}

    def _entity(self, key: tuple[str, str]) -> TableEntity:
        entity = TableEntity(self._rows[key])
        entity._metadata = {"etag": self._etags[key], "timestamp": self._rows[key]["Timestamp"]}
        return entity


def _key(entity: Mapping[str, Any]) -> tuple[str, str]:
    return str(entity["PartitionKey"]), str(entity["RowKey"])


def _parse(condition: str, parameters: Mapping[str, Any]) -> tuple[int, str, str]:
    match = _CONDITION.fullmatch(condition)
    if match is None:
        raise ValueError(f"unsupported table query condition: {condition!r}")
    field, op, raw = match.groups()
    value = str(parameters[raw[1:]]) if raw.startswith("@") else raw[1:-1]
    return (0 if field == "PartitionKey" else 1), op, value


def _holds(key: tuple[str, str], condition: tuple[int, str, str]) -> bool:
    index, op, value = condition
    return bool(_COMPARE[op](key[index], value))
