"""Azure Resource Graph: POST /providers/Microsoft.ResourceGraph/resources, with paging.

The query language is only recognised, not run: see kql.py for what is understood, and tables.py
for the rows of each table.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from .kql import TABLES, ParsedQuery, lookup, matches, parse_query
from .messages import ArmError, ArmRequest, Reply, error_reply
from .state import EmulatorModel
from .tables import TENANT_ID, TYPE_ORDER, apply_update_rows, arc_row, table_rows, vm_row

MAX_PAGE = 1000

__all__ = [
    "MAX_PAGE",
    "TABLES",
    "TENANT_ID",
    "ParsedQuery",
    "apply_update_rows",
    "arc_row",
    "lookup",
    "parse_query",
    "query",
    "table_rows",
    "vm_row",
]


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
    named = [str(s) for s in body.get("subscriptions") or []]
    requested = {s.lower() for s in named}
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
    for row in table_rows(model, parsed, now, named):
        subscription = row["subscriptionId"].lower()
        # No Reader on a subscription: ARG silently leaves its rows out.
        if (requested and subscription not in requested) or (readable is not None and subscription not in readable):
            continue
        for alias in parsed.aliases:
            row[alias.name] = alias.value(row)
        if matches(row, parsed.conditions):
            rows.append(row)
    # Real ARG promises no order without `order by`; a stable one keeps paging consistent. Machines
    # first (then disks, snapshots), so a bare `resources` query still starts with the VMs.
    rows.sort(key=lambda r: (TYPE_ORDER.get(str(r["type"]), len(TYPE_ORDER)), str(r["id"]).lower()))
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
