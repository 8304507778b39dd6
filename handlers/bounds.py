"""Size and depth bounds for what comes in from outside (events, queue bodies) and goes to storage.

Table storage limits a string property to 64 KiB counted in UTF-16 (32,767 code units, so an
emoji counts twice) and an entity to 1 MiB; a Storage queue message holds 64 KiB. Python's JSON
decoder and encoder recurse once per nesting level and raise RecursionError near 1000 levels.
Everything here is total: it never raises for odd input, so a refusal can always be recorded.
"""

from __future__ import annotations

import json
from typing import Any

# A string property of a Table entity: 64 KiB of UTF-16.
TABLE_TEXT_UNITS = 32_767
# What we keep of a refused payload: enough to see what was sent, well inside one entity.
RAW_PAYLOAD_UNITS = 16_000
# Nesting deeper than this is no maintenance event (theirs is 3 deep) and no work message.
MAX_JSON_DEPTH = 32


def utf16_units(text: str) -> int:
    """Length in UTF-16 code units, as Table storage counts it."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def truncate_utf16(text: str, units: int = TABLE_TEXT_UNITS, *, marker: str = "...") -> str:
    """`text` cut to at most `units` UTF-16 code units, ending in `marker` when cut; never splits a
    character (a surrogate pair stays whole)."""
    if len(text) <= units // 2 or utf16_units(text) <= units:
        return text
    budget = max(0, units - utf16_units(marker))
    used = 0
    for index, ch in enumerate(text):
        size = 2 if ord(ch) > 0xFFFF else 1
        if used + size > budget:
            return text[:index] + marker
        used += size
    return text  # not reached: the whole text was over the limit


def json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> int:
    """The bracket nesting depth of JSON text (outside strings), counting up to `limit` + 1 only:
    a cheap scan that runs before the recursive decoder sees the text."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def bounded_json(value: Any, units: int = RAW_PAYLOAD_UNITS) -> str:
    """`value` as JSON text for a record, cut to `units`; a value that cannot be serialised
    (nested too deep, a cycle) is described instead. Never raises."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (RecursionError, ValueError, TypeError) as exc:
        text = f"(not serialisable: {type(exc).__name__}; {type(value).__name__} value)"
    return truncate_utf16(text, units)


def bounded_text(value: str | bytes | bytearray | memoryview | Any, units: int = RAW_PAYLOAD_UNITS) -> str:
    """A raw body (bytes or text) as text for a record, cut to `units`. Never raises."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value[: units * 4]).decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value[: units + 1]
    else:
        text = repr(type(value))
    return truncate_utf16(text, units)
