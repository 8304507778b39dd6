"""A small recogniser for the Resource Graph queries the app sends. Not KQL.

A query is split on `|`; the first word names the table. `where` clauses contribute conditions,
ANDed, all compared case-insensitively:
- `field =~ 'v'`, `field == 'v'` (also through `tostring()`/`tolower()`/`toupper()`/`toint()`/`tolong()`/
  `tobool()`/`todouble()`/`toreal()`, none of which is applied: a field keeps the type it has in the row);
- `field in~ ('a', 'b')` and `field in ('a', 'b')`;
- `isnotempty(field)`, `isempty(field)`, `isnotnull(field)`, `isnull(field)`.
A field is a dotted path with optional bracket indexes: `properties.creationData.sourceResourceId`,
`tags['maintenance-toolkit']`, `tags["Owner"]`; names match case-insensitively, as tag names do in
Azure. Anything else is ignored: `or`, `!=`, `!~`, `!in~` and anything inside `not(...)` are NOT
honoured (they add no condition). `project`/`extend` items `alias = [tostring(]path[)]` (or any of the
functions above) are added to rows, and so is one computed form, the prefix of a field up to a literal:
`alias = tolower(substring(id, 0, indexof(id, '/softwarePatches/')))`. The outer `tolower()`/`toupper()`
is optional; either `id` may be wrapped in `tolower()`/`tostring()`, but both must name the same
field; `indexof` is case-sensitive, as in KQL, and a literal not found gives "" (the emulator's
choice). Aliases are computed before the conditions are tested, whatever the order of the clauses, so
a `where` on an extended alias works. `take`/`limit n` truncates. Every row carries all its fields
whatever is projected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

TABLES = ("resources", "maintenanceresources", "resourcecontainers", "patchinstallationresources")

_IDENT = r"[A-Za-z_]\w*"
_STRING = r"'[^']*'|\"[^\"]*\""
_PATH = rf"{_IDENT}(?:\.{_IDENT}|\s*\[\s*(?:{_STRING})\s*\])*"
_FIELD = rf"(?:\b(?:tostring|tolower|toupper|toint|tolong|tobool|todouble|toreal)\s*\(\s*)?({_PATH})\s*\)?"
_EQUALS = re.compile(_FIELD + rf"\s*(?:=~|==)\s*({_STRING})", re.IGNORECASE)
_IN = re.compile(_FIELD + r"\s+in~?\s*\(([^)]*)\)", re.IGNORECASE)
_EMPTINESS = re.compile(rf"\b(isnotempty|isempty|isnotnull|isnull)\s*\(\s*{_FIELD}\s*\)", re.IGNORECASE)
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_SEGMENT = re.compile(rf"({_IDENT})|\[\s*(?:'([^']*)'|\"([^\"]*)\")\s*\]")
_NEGATED = re.compile(r"(?:\bnot\s*\(\s*|!\s*)$", re.IGNORECASE)
_ALIAS = re.compile(rf"^\s*({_IDENT})\s*=\s*{_FIELD}\s*$")
_ARGUMENT = rf"(?:(tolower|tostring)\s*\(\s*({_PATH})\s*\)|({_PATH}))"
_PREFIX = re.compile(
    rf"^\s*({_IDENT})\s*=\s*(?:(tolower|toupper)\s*\(\s*)?substring\s*\(\s*{_ARGUMENT}\s*,\s*0\s*,"
    rf"\s*indexof\s*\(\s*{_ARGUMENT}\s*,\s*({_STRING})\s*\)\s*\)\s*(\))?\s*$",
    re.IGNORECASE,
)
_LIMIT = re.compile(r"^(?:take|limit)\s+(\d+)\s*$", re.IGNORECASE)


def split_path(text: str) -> tuple[str, ...]:
    """`tags['a.b'].c` -> ('tags', 'a.b', 'c')."""
    return tuple(a or b or c for a, b, c in _SEGMENT.findall(text))


@dataclass(frozen=True)
class Condition:
    """One recognised condition. test: in (value among `values`) | notempty | empty | notnull | null."""

    path: tuple[str, ...]
    values: frozenset[str] = frozenset()
    test: str = "in"

    @property
    def dotted(self) -> str:
        return ".".join(self.path).lower()

    def holds(self, row: dict[str, Any]) -> bool:
        value = lookup(row, self.path)
        if self.test == "notnull":
            return value is not None
        if self.test == "null":
            return value is None
        empty = value is None or value == "" or value == {} or value == []
        if self.test == "notempty":
            return not empty
        if self.test == "empty":
            return empty
        return value is not None and str(value).lower() in self.values


@dataclass(frozen=True)
class Alias:
    """A `project`/`extend` column: a field's value, or (`up_to` set) the field's prefix before the
    first `up_to` (searched case-sensitively in the value, lower-cased first when `search_lower`),
    lower-cased when `source_lower`, then changed by `case` (tolower | toupper | "")."""

    name: str
    path: tuple[str, ...]
    up_to: str | None = None
    source_lower: bool = False
    search_lower: bool = False
    case: str = ""

    def value(self, row: dict[str, Any]) -> Any:
        found = lookup(row, self.path)
        if self.up_to is None:
            return found
        text = "" if found is None else str(found)
        index = (text.lower() if self.search_lower else text).find(self.up_to)
        prefix = "" if index < 0 else (text.lower() if self.source_lower else text)[:index]
        return prefix.lower() if self.case == "tolower" else prefix.upper() if self.case == "toupper" else prefix


@dataclass
class ParsedQuery:
    """What the recogniser understood of a query."""

    table: str
    conditions: list[Condition] = field(default_factory=list)
    aliases: list[Alias] = field(default_factory=list)
    limit: int | None = None

    def values_of(self, dotted: str) -> frozenset[str] | None:
        """The allowed values of an `in`/`=~` condition on this field (None: no such condition)."""
        for condition in self.conditions:
            if condition.test == "in" and condition.dotted == dotted.lower():
                return condition.values
        return None

    def prefix_values(self, dotted: str, up_to: str) -> frozenset[str] | None:
        """The allowed values of a condition on an alias that is the prefix of field `dotted` up to
        `up_to` (compared case-insensitively); None when the query has no such condition."""
        for alias in self.aliases:
            if alias.up_to is None or alias.up_to.lower() != up_to.lower():
                continue
            if ".".join(alias.path).lower() == dotted.lower() and (values := self.values_of(alias.name)) is not None:
                return values
        return None


def split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split on `separator` outside quotes and parentheses."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    depth = 0
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "()":
            depth = max(0, depth + (1 if ch == "(" else -1))
        elif ch == separator and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def _unquote(literal: str) -> str:
    return literal[1:-1]


def _where(rest: str) -> list[Condition]:
    conditions: list[Condition] = []

    def negated(start: int) -> bool:
        return _NEGATED.search(rest[:start]) is not None

    for m in _EQUALS.finditer(rest):
        if not negated(m.start()):
            conditions.append(Condition(split_path(m.group(1)), frozenset({_unquote(m.group(2)).lower()})))
    for m in _IN.finditer(rest):
        if not negated(m.start()):
            values = frozenset((a or b).lower() for a, b in _QUOTED.findall(m.group(2)))
            conditions.append(Condition(split_path(m.group(1)), values))
    for m in _EMPTINESS.finditer(rest):
        if not negated(m.start()):
            conditions.append(Condition(split_path(m.group(2)), test=m.group(1).lower()[2:]))
    return conditions


def _alias(item: str) -> Alias | None:
    """A recognised `alias = expression` item, or None."""
    if (simple := _ALIAS.match(item)) is not None:
        return Alias(simple.group(1), split_path(simple.group(2)))
    m = _PREFIX.match(item)
    if m is None or (m.group(2) is None) != (m.group(10) is None):
        return None
    source, searched = m.group(4) or m.group(5), m.group(7) or m.group(8)
    if [p.lower() for p in split_path(source)] != [p.lower() for p in split_path(searched)]:
        return None
    return Alias(m.group(1), split_path(source), up_to=_unquote(m.group(9)),
                 source_lower=(m.group(3) or "").lower() == "tolower",
                 search_lower=(m.group(6) or "").lower() == "tolower", case=(m.group(2) or "").lower())  # fmt: skip


def parse_query(text: str) -> ParsedQuery:
    """Recognise table, conditions, aliases and limit; ValueError for an unknown table."""
    segments = split_outside_quotes(text, "|")
    head = segments[0].split()
    table = head[0].lower() if head else ""
    if table not in TABLES:
        raise ValueError(f"table {table!r} is not emulated; use one of {', '.join(TABLES)}")
    parsed = ParsedQuery(table)
    for segment in segments[1:]:
        words = segment.split(None, 1)
        verb, rest = (words[0].lower() if words else ""), (words[1] if len(words) > 1 else "")
        if verb == "where":
            parsed.conditions.extend(_where(rest))
        elif verb in ("project", "extend"):
            for item in split_outside_quotes(rest, ","):
                alias = _alias(item)
                if alias is not None:
                    parsed.aliases.append(alias)
        elif (limit := _LIMIT.match(segment)) is not None:
            parsed.limit = int(limit.group(1))
    return parsed


def lookup(row: dict[str, Any], path: tuple[str, ...] | str) -> Any:
    """A path into a row (a tuple, or dotted text), keys matched case-insensitively; None when absent."""
    value: Any = row
    for part in path.split(".") if isinstance(path, str) else path:
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


def matches(row: dict[str, Any], conditions: list[Condition]) -> bool:
    return all(condition.holds(row) for condition in conditions)
