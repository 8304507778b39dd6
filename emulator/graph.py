"""Azure Resource Graph: table rows, a small recogniser for the queries the app sends, paging.

Not KQL. A query is split on `|`; the first word names the table; `where` clauses contribute
`field =~ 'v'`, `field == 'v'` and `field in~ ('a', 'b')` conditions (case-insensitive, ANDed; any
other operator is ignored, so `or` and negations are NOT honoured); `project`/`extend` aliases of
the form `alias = tostring(path)` are added to rows; `take`/`limit n` truncates. Every row carries
all its fields whatever is projected.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .ids import parse_resource_id
from .messages import ArmError, ArmRequest, Reply, error_reply
from .power import ArcMachine, VirtualMachine
from .state import EmulatorModel, MaintenanceRun

TENANT_ID = "00000000-0000-0000-0000-0000000000e1"
MAX_PAGE = 1000
TABLES = ("resources", "maintenanceresources")

_FIELD = r"(?:\b(?:tostring|tolower|toupper)\s*\(\s*)?([A-Za-z_][\w.]*)\s*\)?"
_EQUALS = re.compile(_FIELD + r"\s*(?:=~|==)\s*(?:'([^']*)'|\"([^\"]*)\")", re.IGNORECASE)
_IN = re.compile(_FIELD + r"\s+in~?\s*\(([^)]*)\)", re.IGNORECASE)
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_ALIAS = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*" + _FIELD + r"\s*$")
_LIMIT = re.compile(r"^(?:take|limit)\s+(\d+)\s*$", re.IGNORECASE)


@dataclass
class ParsedQuery:
    """What the recogniser understood of a query."""

    table: str
    conditions: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    aliases: list[tuple[str, str]] = field(default_factory=list)
    limit: int | None = None


def _split_pipes(text: str) -> list[str]:
    """Split on `|` outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "|":
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def parse_query(text: str) -> ParsedQuery:
    """Recognise table, conditions, aliases and limit; ValueError for an unknown table."""
    segments = _split_pipes(text)
    head = segments[0].split()
    table = head[0].lower() if head else ""
    if table not in TABLES:
        raise ValueError(f"table {table!r} is not emulated; use one of {', '.join(TABLES)}")
    parsed = ParsedQuery(table)
    for segment in segments[1:]:
        words = segment.split(None, 1)
        verb, rest = (words[0].lower() if words else ""), (words[1] if len(words) > 1 else "")
        if verb == "where":
            for m in _EQUALS.finditer(rest):
                parsed.conditions.append((m.group(1), frozenset({(m.group(2) or m.group(3) or "").lower()})))
            for m in _IN.finditer(rest):
                values = frozenset((a or b).lower() for a, b in _QUOTED.findall(m.group(2)))
                parsed.conditions.append((m.group(1), values))
        elif verb in ("project", "extend"):
            for item in rest.split(","):
                alias = _ALIAS.match(item)
                if alias:
                    parsed.aliases.append((alias.group(1), alias.group(2)))
        elif (limit := _LIMIT.match(segment)) is not None:
            parsed.limit = int(limit.group(1))
    return parsed


def lookup(row: dict[str, Any], path: str) -> Any:
    """A dotted path into a row, keys matched case-insensitively; None when absent."""
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        if part in value:
            value = value[part]
            continue
        lowered = {k.lower(): k for k in value}
        if part.lower() not in lowered:
            return None
        value = value[lowered[part.lower()]]
    return value


def _matches(row: dict[str, Any], conditions: list[tuple[str, frozenset[str]]]) -> bool:
    for path, values in conditions:
        value = lookup(row, path)
        if value is None or str(value).lower() not in values:
            return False
    return True


def _base_row(resource_id: str, type_: str, location: str, tags: dict[str, str] | None) -> dict[str, Any]:
    parts = parse_resource_id(resource_id)
    return {
        "id": resource_id,
        "name": parts["name"],
        "type": type_,
        "tenantId": TENANT_ID,
        "kind": "",
        "location": location,
        "resourceGroup": parts["rg"],
        "subscriptionId": parts["sub"],
        "managedBy": "",
        "sku": None,
        "plan": None,
        "tags": dict(tags) if tags is not None else None,
        "identity": None,
        "zones": None,
        "extendedLocation": None,
    }


def vm_row(vm: VirtualMachine, state: str) -> dict[str, Any]:
    """A `resources` row for a VM reporting power `state` (possibly stale: the index lags)."""
    row = _base_row(vm.id, "microsoft.compute/virtualmachines", vm.location, vm.tags)
    code = f"PowerState/{state}"
    row["properties"] = {
        "vmId": vm.vm_id,
        "hardwareProfile": {"vmSize": "Standard_B2s"},
        "provisioningState": "Succeeded",
        "extended": {"instanceView": {"powerState": {"code": code, "level": "Info", "displayStatus": f"VM {state}"}}},
    }
    row["powerState"] = code
    return row


def arc_row(machine: ArcMachine) -> dict[str, Any]:
    row = _base_row(machine.id, "microsoft.hybridcompute/machines", machine.location, machine.tags)
    row["properties"] = {"status": "Connected", "osType": "linux", "osName": "linux", "provisioningState": "Succeeded"}
    return row


def apply_update_rows(model: EmulatorModel, run: MaintenanceRun) -> list[dict[str, Any]]:
    """The `maintenanceresources` rows of one run, one per machine in its scope."""
    rows = []
    run_name = run.correlation_id.rstrip("/").rsplit("/", 1)[-1]
    started, updated = model.clock.isoformat(run.created), model.clock.isoformat(run.last_update)
    for machine_id in run.machine_ids:
        vm = model.vms.get(machine_id.lower())
        arc = model.arc_machines.get(machine_id.lower())
        location = vm.location if vm else arc.location if arc else ""
        row_id = f"{machine_id}/providers/Microsoft.Maintenance/applyUpdates/{run_name}"
        row = _base_row(machine_id, "microsoft.maintenance/applyupdates", location, None)
        row.update(id=row_id, name=run_name)
        row["properties"] = {
            "correlationId": run.correlation_id,
            "resourceId": machine_id,
            "status": run.status,
            "maintenanceConfigurationId": run.maintenance_configuration_id,
            "startDateTime": started,
            "lastUpdateTime": updated,
        }
        row.update(resourceId=machine_id, correlationId=run.correlation_id, status=run.status)
        rows.append(row)
    return rows


def _runs(model: EmulatorModel, conditions: list[tuple[str, frozenset[str]]]) -> list[MaintenanceRun]:
    """The runs a query can match: building rows only for the asked-for run keeps big scopes cheap."""
    for path, values in conditions:
        if path.lower() in ("properties.correlationid", "correlationid"):
            return [model.runs[v.rstrip("/")] for v in values if v.rstrip("/") in model.runs]
    return list(model.runs.values())


def table_rows(model: EmulatorModel, parsed: ParsedQuery, now: float) -> list[dict[str, Any]]:
    """The rows of the query's table, before filtering."""
    if parsed.table == "maintenanceresources":
        return [row for run in _runs(model, parsed.conditions) for row in apply_update_rows(model, run)]
    rows = []
    for vm in model.vms.values():
        vm.settle(now)
        rows.append(vm_row(vm, vm.state_at(now - model.graph_lag)))
    rows.extend(arc_row(machine) for machine in model.arc_machines.values())
    return rows


def _skip_token(offset: int, fingerprint: str) -> str:
    raw = json.dumps({"o": offset, "q": fingerprint}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _offset_from(token: str, fingerprint: str) -> int:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        if decoded["q"] != fingerprint:
            raise ValueError("token of another query")
        return int(decoded["o"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"invalid $skipToken: {err}") from err


def _bad_request(message: str) -> Reply:
    return error_reply(400, ArmError("BadRequest", message))


def query(model: EmulatorModel, request: ArmRequest) -> Reply:
    """POST /providers/Microsoft.ResourceGraph/resources: one page of objectArray rows."""
    try:
        body = request.json()
        text = body["query"]
        parsed = parse_query(text)
    except (ValueError, KeyError, TypeError) as err:
        return _bad_request(f"Query is invalid: {err}")
    options = body.get("options") or {}
    requested = {s.lower() for s in body.get("subscriptions") or []}
    fingerprint = hashlib.sha256(json.dumps([text, sorted(requested)]).encode()).hexdigest()[:16]
    try:
        offset = _offset_from(options["$skipToken"], fingerprint) if options.get("$skipToken") else 0
    except ValueError as err:
        return _bad_request(str(err))
    offset += int(options.get("$skip") or 0) if not options.get("$skipToken") else 0
    page_size = min(int(options.get("$top") or MAX_PAGE), MAX_PAGE)

    now = model.clock.now()
    readable = None if model.readable_subscriptions is None else {s.lower() for s in model.readable_subscriptions}
    rows = []
    for row in table_rows(model, parsed, now):
        subscription = row["subscriptionId"].lower()
        # No Reader on a subscription: ARG silently leaves its rows out.
        if (requested and subscription not in requested) or (readable is not None and subscription not in readable):
            continue
        for alias, path in parsed.aliases:
            row[alias] = lookup(row, path)
        if _matches(row, parsed.conditions):
            rows.append(row)
    rows.sort(key=lambda r: str(r["id"]).lower())
    if parsed.limit is not None:
        rows = rows[: parsed.limit]
    page = rows[offset : offset + page_size]
    answer: dict[str, Any] = {
        "totalRecords": len(rows),
        "count": len(page),
        "resultTruncated": "false",
        "data": page,
        "facets": [],
    }
    if offset + page_size < len(rows):
        answer["$skipToken"] = _skip_token(offset + page_size, fingerprint)
    return Reply(200, answer)
