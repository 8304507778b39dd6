"""The size and depth bounds: total functions that never raise, so a refusal can always be recorded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handlers.core.bounds import (
    MAX_JSON_DEPTH,
    RAW_PAYLOAD_UNITS,
    bounded_json,
    bounded_text,
    clip_depth,
    has_lone_surrogate,
    json_depth,
    object_depth,
    truncate_utf16,
    utf8_size,
    utf16_units,
    without_surrogates,
)

EMOJI = "\U0001f600"  # two UTF-16 code units


def nested(depth: int, leaf: Any = 1) -> Any:
    for _ in range(depth):
        leaf = {"k": leaf} if depth % 2 else [leaf]
    return leaf


def storable(text: str) -> None:
    """What a Table entity property (and a ledger row key digest) needs: encodable as UTF-8."""
    text.encode("utf-8")


# --- truncation ---------------------------------------------------------------------


def test_utf16_units_count_an_emoji_twice() -> None:
    assert utf16_units("ab" + EMOJI) == 4


def test_truncate_utf16_never_splits_a_surrogate_pair() -> None:
    cut = truncate_utf16(EMOJI * 10, 8)
    assert cut == EMOJI * 2 + "..." and utf16_units(cut) <= 8
    assert truncate_utf16("short", 8) == "short"


@pytest.mark.parametrize(("text", "size"), [("abc", 3), ("\u00e9", 2), (EMOJI, 4), ("\ud800", 3)])
def test_utf8_size_never_raises(text: str, size: int) -> None:
    assert utf8_size(text) == size


def test_has_lone_surrogate() -> None:
    assert has_lone_surrogate("a\udc00") and not has_lone_surrogate(EMOJI + "\u00e9") and not has_lone_surrogate("a")


# --- depth --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [("1", 0), ("{}", 1), ('{"a": [1, {"b": []}]}', 4), ('["[[[[", "\\"]]"]', 1), ("[" * 100_000, MAX_JSON_DEPTH + 1)],
)
def test_json_depth_ignores_brackets_in_strings_and_stops_past_the_limit(text: str, depth: int) -> None:
    assert json_depth(text) == depth


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ({}, 1), ({"a": [1, {"b": ()}]}, 4), (nested(100_000), MAX_JSON_DEPTH + 1)],
)
def test_object_depth_counts_like_json_depth_without_recursing(value: Any, depth: int) -> None:
    assert object_depth(value) == depth


def test_object_depth_ends_in_a_cycle() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    assert object_depth(cycle) == MAX_JSON_DEPTH + 1


def test_clip_depth_keeps_what_fits_and_notes_the_rest() -> None:
    clipped = clip_depth({"a": nested(100_000), "n": 10**5000, "many": list(range(1500)), 7: "x"})
    text = json.dumps(clipped)
    assert object_depth(clipped) <= MAX_JSON_DEPTH
    assert "nested deeper than 32 levels" in text
    assert "integer of" in text and "500 more items" in text
    assert clipped["7"] == "x"


# --- records ------------------------------------------------------------------------


def test_bounded_json_of_a_deep_value_keeps_its_start() -> None:
    raw = {"id": "run-1", "data": nested(100_000)}
    text = bounded_json(raw)
    assert text.startswith('{"id": "run-1", "data": ')
    assert "nested deeper than 32 levels" in text


def test_bounded_json_of_a_cycle_and_of_a_huge_integer() -> None:
    cycle: dict[str, Any] = {"id": "c"}
    cycle["self"] = cycle
    assert bounded_json(cycle).startswith('{"id": "c"')
    assert "integer of" in bounded_json({"n": 10**5000})


def test_bounded_json_never_raises_for_an_object_that_cannot_be_shown() -> None:
    class Unshowable:
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no")

    text = bounded_json({"x": Unshowable()})
    assert "not serialisable" in text


@pytest.mark.parametrize(
    "value", ["\ud800", {"id": "a\udc00b"}, ["\ud83d"]], ids=["str", "dict", "list"],
)
def test_records_are_valid_unicode(value: Any) -> None:
    storable(bounded_json(value))
    if isinstance(value, str):
        storable(bounded_text(value))
        assert without_surrogates(value) == "\ufffd"


@pytest.mark.parametrize(
    "value",
    [EMOJI * RAW_PAYLOAD_UNITS, "x" * 10 * RAW_PAYLOAD_UNITS, b"\xff" * 10 * RAW_PAYLOAD_UNITS,
     memoryview(b"abc" * RAW_PAYLOAD_UNITS), 42],
    ids=["emoji", "text", "invalid-utf8", "memoryview", "not-text"],
)
def test_bounded_text_is_cut_to_the_units_a_record_keeps(value: Any) -> None:
    text = bounded_text(value)
    assert utf16_units(text) <= RAW_PAYLOAD_UNITS
    storable(text)
    assert utf16_units(bounded_json(value)) <= RAW_PAYLOAD_UNITS
