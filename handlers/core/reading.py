"""Reading text from outside (event deliveries, queue bodies) into values, and the errors that
name what is wrong: total (nothing but InvalidEventError ever escapes) and bounded (sizes,
nesting, valid Unicode). `handlers.core.events` builds the event from these."""

from __future__ import annotations

import base64
import binascii
import json
import re
import reprlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from handlers.core.bounds import (
    MAX_JSON_DEPTH,
    QUEUE_MESSAGE_BYTES,
    has_lone_surrogate,
    json_depth,
    object_depth,
    utf8_size,
)
from handlers.core.errors import InvalidEventError, UnsupportedEventTypeError

MAX_EVENT_ID = 1024
MAX_TEXT = 2048  # any other string field of the envelope or of data
MAX_DATA_BYTES = 64 * 1024  # `data` as JSON (UTF-8)
# The names errors use for the keys we know (the event's own casing varies).
_CANONICAL = {name.lower(): name for name in (
    "id", "topic", "subject", "eventType", "eventTime", "dataVersion", "metadataVersion", "specversion", "source",
    "type", "time", "data", "correlationId", "maintenanceConfigurationId", "startDateTime", "endDateTime",
    "cancellationCutOffDateTime", "resourceSubscriptionIds", "status",
)}
LIMITS = {"id": MAX_EVENT_ID}
# How errors quote a value that was sent: it may be any size or nested any depth.
_QUOTE = reprlib.Repr()
_QUOTE.maxstring, _QUOTE.maxother = 300, 120
_QUOTE.maxlevel = 3
_TIME_RE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]"
    r"(?P<clock>[0-9]{2}:[0-9]{2}(?::[0-9]{2})?)(?:[.,](?P<fraction>[0-9]+))?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:?[0-9]{2})?",
    re.ASCII,
)



def load_json(text: str, field: str) -> Any:
    """JSON text from outside, parsed; InvalidEventError naming `field` when it is not JSON or is
    nested deeper than MAX_JSON_DEPTH (the decoder recurses once per level: a deep body would
    raise RecursionError, not a refusal)."""
    if json_depth(text) > MAX_JSON_DEPTH:
        raise InvalidEventError(field, f"is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidEventError(field, f"is not valid JSON ({exc})") from None


def decode_queue_message(body: bytes | str) -> list[dict[str, Any]]:
    """The events in a Storage queue message that Event Grid delivered.

    One JSON object or an array of them, as text or as base64 of that text: Event Grid
    encodes it, and the Functions host may or may not have decoded it already. Raises
    InvalidEventError (field ``message`` or ``message[i]``) and nothing else.
    """
    with reading("message"):
        return _decode(body)


def _decode(body: bytes | str) -> list[dict[str, Any]]:
    if isinstance(body, bytes | bytearray | memoryview):
        body = bytes(body)
        _check_body_size(len(body))
        try:
            body = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidEventError("message", "is not UTF-8 text") from None
    if not isinstance(body, str):
        problem = f"must be bytes or str, got {type(body).__name__}"
        raise InvalidEventError("message", problem)
    _check_body_size(utf8_size(body))
    text = body.lstrip("\ufeff").strip()
    if not text:
        raise InvalidEventError("message", "is empty")
    if not text.startswith(("{", "[")):
        text = _from_base64(text)
    payload = load_json(text, "message")
    events = [payload] if isinstance(payload, dict) else payload
    if not isinstance(events, list):
        raise InvalidEventError("message", "is JSON but neither an object nor an array")
    for index, item in enumerate(events):
        if not isinstance(item, dict):
            problem = f"must be a JSON object, got {type(item).__name__}"
            raise InvalidEventError(f"message[{index}]", problem)
    return events


@contextmanager
def reading(field: str) -> Iterator[None]:
    """Turn any other failure while reading `field` into InvalidEventError naming it.

    Parsing does no I/O, so whatever fails in it (RecursionError on a deep value, a TypeError
    or OverflowError on an odd one) is about the input, and retrying cannot help: refuse it.
    """
    try:
        yield
    except (InvalidEventError, UnsupportedEventTypeError):
        raise
    except Exception as exc:
        raise InvalidEventError(field, f"cannot be read ({type(exc).__name__}: {quote(str(exc))})") from exc


class Fields:
    """An object with its keys folded to lower case; errors name `prefix` + key."""

    def __init__(self, obj: Mapping[str, Any], prefix: str) -> None:
        self._prefix = prefix
        self._values: dict[str, Any] = {}
        self._keys: dict[str, str] = {}  # as sent
        for key, value in obj.items():
            with reading(prefix.rstrip(".") or "event"):
                name = str(key)
            lower = name.lower()
            with reading(prefix + name):
                if lower in self._values and self._values[lower] != value:
                    problem = "given twice, in different casings, with different values"
                    raise InvalidEventError(prefix + name, problem)
            self._values[lower] = value
            self._keys.setdefault(lower, name)

    def check_bounds(self, *, skip: str = "") -> None:
        """Every string within its length, every other value within the nesting depth."""
        for lower, value in self._values.items():
            if lower == skip.lower():
                continue
            field = self._prefix + _CANONICAL.get(lower, self._keys[lower])
            if isinstance(value, str):
                limit = LIMITS.get(lower, MAX_TEXT)
                if len(value) > limit:
                    raise InvalidEventError(field, f"is {len(value)} characters long; at most {limit}")
            elif object_depth(value) > MAX_JSON_DEPTH:
                raise InvalidEventError(field, f"is nested deeper than {MAX_JSON_DEPTH} levels")

    def has(self, key: str) -> bool:
        return key.lower() in self._values

    def get(self, key: str) -> Any:
        return self._values.get(key.lower())

    def required(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise InvalidEventError(self._prefix + key, "is missing")
        return value

    def text(self, key: str) -> str:
        with reading(self._prefix + key):
            value = self._string(key, self.required(key))
            if not value.strip():
                raise InvalidEventError(self._prefix + key, "is empty")
            return value

    def optional_text(self, key: str, *, empty: str | None = None) -> str | None:
        """The string as sent; None when absent; `empty` for the empty string."""
        with reading(self._prefix + key):
            value = self.get(key)
            return None if value is None else self._string(key, value) or empty

    def time(self, key: str) -> datetime:
        with reading(self._prefix + key):
            return parse_time(self.required(key), self._prefix + key)

    def optional_time(self, key: str) -> datetime | None:
        value = self.get(key)
        return None if value in (None, "") else self.time(key)

    def _string(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            problem = f"must be a string, got {type(value).__name__}"
            raise InvalidEventError(self._prefix + key, problem)
        # JSON's "\ud800" escapes can make them; no ledger row or log line could carry one.
        if has_lone_surrogate(value):
            raise InvalidEventError(self._prefix + key, "is not valid Unicode (it holds a lone UTF-16 surrogate)")
        return value


def _from_base64(text: str) -> str:
    """The JSON text inside base64 (either alphabet; line breaks, padding optional)."""
    compact = re.sub(r"\s+", "", text).replace("-", "+").replace("_", "/")
    try:
        decoded = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        text = decoded.decode("utf-8-sig").strip()
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        text = ""
    if not text.startswith(("{", "[")):
        raise InvalidEventError("message", "is neither JSON nor base64-encoded JSON")
    return text


def check_data_size(size: int) -> None:
    if size > MAX_DATA_BYTES:
        raise InvalidEventError("data", f"is {size} bytes as JSON; at most {MAX_DATA_BYTES} (64 KiB)")


def _check_body_size(size: int) -> None:
    if size > QUEUE_MESSAGE_BYTES:
        problem = f"is {size} bytes; a Storage queue message holds at most {QUEUE_MESSAGE_BYTES} (64 KiB)"
        raise InvalidEventError("message", problem)


def quote(value: Any) -> str:
    """`value` as errors quote it: short, whatever its size or nesting."""
    return _QUOTE.repr(value)


def parse_time(value: Any, field: str) -> datetime:
    """ISO 8601 with any number of fraction digits (Azure sends 7); no offset is UTC."""
    if isinstance(value, datetime):
        parsed = value
    else:
        match = _TIME_RE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise InvalidEventError(field, f"is not an ISO 8601 date-time: {quote(value)}")
        fraction = f".{match['fraction'][:6]:0<6}" if match["fraction"] else ""
        offset = match["offset"]
        offset = "+00:00" if offset in (None, "Z", "z") else offset
        try:
            parsed = datetime.fromisoformat(
                f"{match['date']}T{match['clock']}{fraction}{offset}"
            )
        except ValueError as exc:
            problem = f"is not a valid date-time: {quote(value)} ({exc})"
            raise InvalidEventError(field, problem) from None
    try:
        return parsed.replace(tzinfo=parsed.tzinfo or UTC).astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC equivalent
        raise InvalidEventError(field, f"is out of range: {quote(value)}") from None


def parse_time_or_none(value: Any, field: str) -> datetime | None:
    """`parse_time` for a value read from an index (Resource Graph): one that is missing or not a
    date-time gives None instead of a refusal."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value, field)
    except InvalidEventError:
        return None


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def data_object(value: Any) -> Mapping[str, Any]:
    """`data` as an object, within MAX_DATA_BYTES as JSON and MAX_JSON_DEPTH levels."""
    with reading("data"):
        if value is None:
            raise InvalidEventError("data", "is missing")
        if isinstance(value, bytes | bytearray):
            try:
                value = bytes(value).decode("utf-8-sig")
            except UnicodeDecodeError:
                raise InvalidEventError("data", "is bytes that are not UTF-8 text") from None
        if isinstance(value, str):
            check_data_size(utf8_size(value))
            value = load_json(value, "data")
        if not isinstance(value, Mapping):
            problem = f"must be an object, got {type(value).__name__}"
            raise InvalidEventError("data", problem)
        # Depth first: the encoder that measures the size recurses once per level.
        if object_depth(value) > MAX_JSON_DEPTH:
            raise InvalidEventError("data", f"is nested deeper than {MAX_JSON_DEPTH} levels")
        check_data_size(utf8_size(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)))
        return value
