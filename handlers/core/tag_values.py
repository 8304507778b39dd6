"""How a flag tag (the opt-out tag, the hold tag) is read: present, and not a 'false'-like value."""

from __future__ import annotations

_FALSE_TAG_VALUES = frozenset({"false", "no", "0", "off"})


def tag_is_set(tags: dict[str, str] | object, name: str) -> str | None:
    """The tag's value when present and not a 'false'-like value (tag names are case-insensitive)."""
    if not isinstance(tags, dict):
        return None
    for key, value in tags.items():
        if str(key).lower() == name.lower() and str(value).strip().lower() not in _FALSE_TAG_VALUES:
            return str(value)
    return None
