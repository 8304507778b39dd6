"""Size and depth bounds for what comes in from outside (events, queue bodies) and goes to storage.

Table storage limits a string property to 64 KiB counted in UTF-16 (32,767 code units, so an
emoji counts twice) and an entity to 1 MiB; a Storage queue message holds 64 KiB. Python's JSON
decoder and encoder recurse once per nesting level and raise RecursionError near 1000 levels.
Everything here is total: it never raises for odd input, so a refusal can always be recorded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# A string property of a Table entity: 64 KiB of UTF-16.
TABLE_TEXT_UNITS = 32_767
# What we keep of a refused payload: enough to see what was sent, well inside one entity.
RAW_PAYLOAD_UNITS = 16_000
# Nesting deeper than this is no maintenance event (theirs is 3 deep) and no work message.
MAX_JSON_DEPTH = 32
# A Storage queue message holds 64 KiB: no longer body can come from a queue.
QUEUE_MESSAGE_BYTES = 64 * 1024
# What a record keeps of one container when a value has to be clipped to be written down at all.
_CLIPPED_ITEMS = 1000
# Lone UTF-16 surrogates: JSON's "\ud800" escapes make them, and UTF-8 cannot encode them.
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def object_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """The nesting depth of objects and arrays (dicts, lists, tuples) in `value`, as `json_depth`
    counts it for text, counting up to `limit` + 1 only. Iterative: it never recurses, and a
    cycle ends it at the limit."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def clip_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> Any:
    """A copy of `value` that `json.dumps` can always write: containers below `limit` levels (and
    so cycles), integers too long for text and items past the first thousand of a container are
    replaced by a note. Recurses at most `limit` levels."""
    if isinstance(value, Mapping | list | tuple):
        if limit <= 0:
            return f"(nested deeper than {MAX_JSON_DEPTH} levels)"
        items = list(value.items() if isinstance(value, Mapping) else enumerate(value))
        kept = [(key, clip_depth(item, limit - 1)) for key, item in items[:_CLIPPED_ITEMS]]
        if isinstance(value, Mapping):
            clipped: Any = {key if isinstance(key, str) else str(clip_depth(key, 1)): item for key, item in kept}
            if len(items) > _CLIPPED_ITEMS:
                clipped["..."] = f"({len(items) - _CLIPPED_ITEMS} more keys)"
            return clipped
        rest = [f"({len(items) - _CLIPPED_ITEMS} more items)"] if len(items) > _CLIPPED_ITEMS else []
        return [item for _, item in kept] + rest
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 10_000:
        return f"(integer of {value.bit_length()} bits)"  # str() refuses over 4300 digits
    return value


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8, a lone surrogate counted as the 3 bytes it would take."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def has_lone_surrogate(text: str) -> bool:
    """Whether `text` holds a lone UTF-16 surrogate (and so is not valid Unicode)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def without_surrogates(text: str) -> str:
    """`text` with lone UTF-16 surrogates replaced by U+FFFD, so that it encodes as UTF-8."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def bounded_json(value: Any, units: int = RAW_PAYLOAD_UNITS) -> str:
    """`value` as JSON text for a record, cut to `units` and valid Unicode; a value that cannot be
    serialised as it is (nested too deep, a cycle, an endless integer) is clipped (`clip_depth`),
    and described when even that fails. Never raises."""
    # Broad on purpose: whatever odd input makes the encoder fail, the record must still be written.
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except Exception:
        try:
            text = json.dumps(clip_depth(value), default=str, ensure_ascii=False)
        except Exception as exc:
            text = f"(not serialisable: {type(exc).__name__}; {type(value).__name__} value)"
    return truncate_utf16(without_surrogates(text), units)


def bounded_text(value: str | bytes | bytearray | memoryview | Any, units: int = RAW_PAYLOAD_UNITS) -> str:
    """A raw body (bytes or text) as text for a record, cut to `units` and valid Unicode. Never raises."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value[: units * 4]).decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value[: units + 1]
    else:
        text = repr(type(value))
    return truncate_utf16(without_surrogates(text), units)
