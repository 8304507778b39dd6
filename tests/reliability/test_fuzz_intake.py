"""Property-based fuzzing of the intake (hypothesis).

1. Pure parsing: `parse_event` and `decode_queue_message`, over mutations of valid events and
   arbitrary queue bodies, only ever raise InvalidEventError (naming a field) or
   UnsupportedEventTypeError.
2. The registered functions, called as the Functions host calls them, with events that are
   malformed by construction: every invocation succeeds (nothing for Event Grid or the queue to
   retry), nothing is asked of Azure, no work is queued, and each event leaves a refusal in the
   ledger whose reason names the offending field.

Each test prints its figures (examples, deliveries, refusals, Azure requests) to the terminal.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.core.bounds import QUEUE_MESSAGE_BYTES, bounded_text, clip_depth
from handlers.core.errors import InvalidEventError, UnsupportedEventTypeError
from handlers.core.events import MaintenanceEvent, parse_event
from handlers.core.reading import decode_queue_message
from handlers.ledger import REJECTED_PARTITION
from handlers.runtime import get_runtime
from tests.conftest import CONFIG_ID, SUB_A, SUB_B, make_event

PURE_EXAMPLES = 1200
EVENT_GRID_EXAMPLES = 400
QUEUE_BATCH_EXAMPLES = 150
QUEUE_BODY_EXAMPLES = 150
FIGURES: Counter[str] = Counter()

FUZZ_SETTINGS = {
    "deadline": None,
    "database": None,  # nothing written into the repository; a failure prints its example
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
}
DELETE = object()
OTHER_CONFIG = CONFIG_ID.replace("mc-weekly", "mc-other")
CUSTOM_TOPIC = f"/subscriptions/{SUB_A}/resourceGroups/rg-spoof/providers/Microsoft.EventGrid/topics/maintenance"


def guids(count: int) -> list[str]:
    return [f"00000000-0000-0000-0000-{index:012x}" for index in range(1, count + 1)]


def nested(depth: int, leaf: Any = "deep") -> Any:
    for level in range(depth):
        leaf = [leaf] if level % 2 else {"k": leaf}
    return leaf


def as_cloudevent(event: dict[str, Any]) -> dict[str, Any]:
    """The same event in the CloudEvents 1.0 schema."""
    return {"specversion": "1.0", "id": event["id"], "source": event["topic"], "subject": event["subject"],
            "type": event["eventType"], "time": event["eventTime"], "data": event["data"]}


def body_of(value: Any) -> bytes:
    """JSON as a queue body: UTF-8, with lone surrogates (which UTF-8 cannot carry) as JSON escapes."""
    text = json.dumps(value, ensure_ascii=False)
    return re.sub("[\ud800-\udfff]", lambda match: f"\\u{ord(match.group()):04x}", text).encode()


def show(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """A figure on the terminal, captured or not (`-s` is not needed to see it)."""
    with capsys.disabled():
        print(f"\n[fuzz] {line}", end="")


def figures(prefix: str) -> dict[str, int]:
    return {key.removeprefix(prefix): n for key, n in sorted(FIGURES.items()) if key.startswith(prefix)}


# --- values ---------------------------------------------------------------------------

CHARACTERS = st.sampled_from(["x", "\u00e9", "\U0001f600", "\u0000", "\\", '"', "\u202e", "\ufeff"])


def long_text(minimum: int, more: int = 1000) -> st.SearchStrategy[str]:
    return st.builds(lambda ch, n: ch * n, CHARACTERS, st.integers(minimum, minimum + more))


NOT_STRINGS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), max_size=2),
)
NOT_TIMES = st.one_of(
    NOT_STRINGS,
    st.sampled_from(["next tuesday", "2026-13-01T00:00:00Z", "", " ", "2026-11-22", "24:00", "0000-01-01T00:00:00Z",
                     "2026-11-22T01:59:60Z", "0001-01-01T00:00:00+01:00", "\U0001f600"]),
    st.text(alphabet="xyz!? -", max_size=20),
)
LONE_SURROGATES = st.sampled_from(["\ud800", "run-\udfff", "\udc00\ud800"])
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ANY_VALUE = st.one_of(
    JSON_VALUES, long_text(1, 5000), LONE_SURROGATES, st.integers(1, 3000).map(nested),
    st.sampled_from([OTHER_CONFIG, CUSTOM_TOPIC]), st.integers(0, 1500).map(guids),
    st.integers(4301, 4400).map(lambda digits: 10**digits),  # more digits than str() writes
)

# --- malformed events, each with the field its refusal must name ------------------------


@dataclass(frozen=True)
class Malformed:
    """A change that makes a valid event one to refuse; `fields` says which fields may be named."""

    label: str
    kind: str  # "pre" | "post"
    schema: str  # "eventgrid" | "cloudevents"
    path: tuple[str, ...]
    value: Any  # or a function of the event (times relative to its own)
    fields: Callable[[str], bool]
    cutoff_in: timedelta = timedelta(minutes=30)
    queue_only: bool = False  # the Event Grid binding cannot carry it (an extra envelope key, ...)
    deep: bool = False  # nested past the limit: a queue body holding it is refused whole

    def build(self, nonce: str) -> dict[str, Any]:
        event = make_event(self.kind, cutoff_in=self.cutoff_in, subscriptions=(SUB_A, SUB_B))
        event["id"] = event["subject"] = nonce  # the refusal's Raw carries one of them whatever changes
        if self.schema == "cloudevents":
            event = as_cloudevent(event)
        target = event
        for key in self.path[:-1]:
            target = target[key]
        if self.value is DELETE:
            del target[self.path[-1]]
        elif callable(self.value):
            target[self.path[-1]] = self.value(event)
        else:
            target[self.path[-1]] = self.value  # shared, never changed: nothing here mutates a value
        return event


def exactly(*names: str) -> Callable[[str], bool]:
    return lambda field: field in names


def under(name: str) -> Callable[[str], bool]:
    return lambda field: field == name or field.startswith((f"{name}.", f"{name}["))


def _at(moment: str, delta: timedelta) -> str:
    return (datetime.fromisoformat(moment.replace("Z", "+00:00")) + delta).isoformat().replace("+00:00", "Z")


FAMILIES = ("wrong-type", "missing", "duplicate-casing", "long-string", "lone-surrogate", "deep", "bad-time",
            "contradictory-time", "spoofed-topic", "too-many-subscriptions", "bad-subscription", "bad-id",
            "data-too-large", "data-string", "far-ahead")
# What fits many times over in one queue message (and a test can encode as JSON).
LIGHT = tuple(f for f in FAMILIES if f not in ("deep", "too-many-subscriptions", "data-too-large"))


@st.composite
def malformed(draw: st.DrawFn, families: tuple[str, ...] = FAMILIES) -> Malformed:
    kind = draw(st.sampled_from(["pre", "post"]))
    schema = draw(st.sampled_from(["eventgrid", "cloudevents"]))
    topic = "source" if schema == "cloudevents" else "topic"
    event_type = "type" if schema == "cloudevents" else "eventType"
    time_key = "time" if schema == "cloudevents" else "eventTime"
    required = ["correlationId", "maintenanceConfigurationId", "startDateTime", "endDateTime",
                "resourceSubscriptionIds"] + (["cancellationCutOffDateTime"] if kind == "pre" else [])
    family = draw(st.sampled_from(families))

    def make(label: str, path: tuple[str, ...], value: Any, fields: Callable[[str], bool], **options: Any) -> Malformed:
        return Malformed(f"{family}:{label}", kind, schema, path, value, fields, **options)

    if family == "wrong-type":
        key = draw(st.sampled_from(["id", "subject", topic, event_type, "data", time_key] +
                                   [f"data.{k}" for k in required] + (["data.status"] if kind == "post" else [])))
        # The Event Grid binding parses the event time itself (and fails), before calling us.
        return make(key, tuple(key.split(".")), draw(NOT_STRINGS), under(key), queue_only=key == time_key)
    if family == "missing":
        key = draw(st.sampled_from(["id", event_type, "data"] + [f"data.{k}" for k in required]))
        return make(key, tuple(key.split(".")), DELETE, under(key), queue_only=key == "id" and schema == "cloudevents")
    if family == "duplicate-casing":
        key = draw(st.sampled_from(["id", "subject", event_type] + [f"data.{k}" for k in required]))
        *parents, leaf = key.split(".")
        variant = draw(st.sampled_from([leaf.upper(), leaf[0].upper() + leaf[1:], leaf.swapcase()]).filter(
            lambda name: name != leaf))
        full = ".".join([*parents, variant])
        value = draw(st.one_of(NOT_STRINGS, st.just("a different value")))
        return make(full, (*parents, variant), value, exactly(full), queue_only=not parents)
    if family == "long-string":
        key = draw(st.sampled_from(["id", "subject", topic, "data.status", "data.note", "data.correlationId",
                                    "data.maintenanceConfigurationId", "data.startDateTime", "metadataVersion"]))
        value = draw(long_text(1025 if key == "id" else 2049))
        return make(key, tuple(key.split(".")), value, exactly(key), queue_only=key == "metadataVersion")
    if family == "lone-surrogate":
        key = draw(st.sampled_from(["id", "subject", topic, "data.correlationId", "data.startDateTime"] +
                                   (["data.status"] if kind == "post" else [])))
        return make(key, tuple(key.split(".")), draw(LONE_SURROGATES), exactly(key))
    if family == "deep":
        where = draw(st.sampled_from(["data.extra", "subject"]))
        depth = draw(st.integers(33, 2500))
        field = "data" if where.startswith("data") else where
        return make(where, tuple(where.split(".")), nested(depth), exactly(field), deep=True)
    if family == "bad-time":
        key = draw(st.sampled_from([f"data.{k}" for k in required if k.endswith("DateTime")]))
        return make(key, tuple(key.split(".")), draw(NOT_TIMES), exactly(key))
    if family == "contradictory-time":
        shape = draw(st.sampled_from(["end-before-start", "window-over-24-hours"] +
                                     (["cutoff-after-start"] if kind == "pre" else [])))
        delta = timedelta(seconds=draw(st.integers(1, 400 * 86400)))
        if shape == "cutoff-after-start":
            return make(shape, ("data", "cancellationCutOffDateTime"),
                        lambda event: _at(event["data"]["startDateTime"], delta),
                        exactly("data.cancellationCutOffDateTime"))
        offset = timedelta(seconds=1) - delta if shape == "end-before-start" else timedelta(hours=24) + delta
        return make(shape, ("data", "endDateTime"), lambda event: _at(event["data"]["startDateTime"], offset),
                    exactly("data.endDateTime"))
    if family == "spoofed-topic":
        value = draw(st.one_of(
            st.sampled_from([OTHER_CONFIG, CUSTOM_TOPIC, f"{CONFIG_ID}/x", f"{CONFIG_ID}//", f" {CONFIG_ID}",
                             CONFIG_ID.replace("weekly", "wee\u212aly"), "https://example.invalid/events"]),
            st.text(min_size=1, max_size=60).filter(lambda t: t.removesuffix("/").lower() != CONFIG_ID.lower()),
        ))
        return make(topic, (topic,), value, exactly(topic))
    if family == "too-many-subscriptions":
        return make("1001+", ("data", "resourceSubscriptionIds"), guids(draw(st.integers(1001, 1500))),
                    exactly("data.resourceSubscriptionIds"))
    if family == "bad-subscription":
        bad = draw(st.one_of(NOT_STRINGS, st.sampled_from(["not-a-guid", f"{{{SUB_A}}}", f"{SUB_A} ", ""]),
                             long_text(37)))
        items = [SUB_A, SUB_B]
        items.insert(draw(st.integers(0, 2)), bad)
        return make("item", ("data", "resourceSubscriptionIds"), items, under("data.resourceSubscriptionIds"))
    if family == "bad-id":
        key = draw(st.sampled_from(["data.correlationId", "data.maintenanceConfigurationId"]))
        sample = make_event(kind)["data"][key.split(".")[1]]
        value = draw(st.sampled_from([
            sample + "/../../x", sample + "/", sample.replace("/providers", "//providers", 1), sample + "?x=1",
            sample.replace("Microsoft.Maintenance", "Microsoft.Compute"), sample.lstrip("/"), sample + "\n",
        ]))
        return make(key, tuple(key.split(".")), value, exactly(key))
    if family == "data-too-large":
        padding = ["p" * 1000] * draw(st.integers(66, 120))
        return make("over-64-KiB", ("data", "padding"), padding, exactly("data"))
    if family == "data-string":
        value = draw(st.sampled_from(["{correlationId: x", "[" * 40 + "]" * 40, "[]", "42", "\"text\"", ""]))
        return make("not-an-object", ("data",), value, under("data"))
    # far-ahead: well-formed, but no pre event comes this long before its window.
    ahead = timedelta(minutes=draw(st.integers(111, 60 * 24 * 400)))
    return Malformed("far-ahead", "pre", schema, ("dataVersion",), "1.0", exactly("data.startDateTime"),
                     cutoff_in=ahead)


# --- 1. pure parsing ------------------------------------------------------------------


def _parse_outcome(raw: Any) -> str:
    try:
        event = parse_event(raw)
    except InvalidEventError as exc:
        assert exc.field and exc.problem and exc.field in str(exc)
        str(exc).encode("utf-8")  # it goes into log lines and ledger rows
        return "invalid"
    except UnsupportedEventTypeError:
        return "unsupported"
    assert isinstance(event, MaintenanceEvent)
    assert parse_event(event.to_dict()) == dataclasses.replace(event, schema="eventgrid"), "what we queue parses again"
    return "parsed"


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    """A valid event with one to four arbitrary changes (not necessarily making it invalid)."""
    event = make_event(draw(st.sampled_from(["pre", "post"])), subscriptions=(SUB_A, SUB_B))
    if draw(st.booleans()):
        event = as_cloudevent(event)
    for _ in range(draw(st.integers(1, 4))):
        target = event if draw(st.booleans()) or not isinstance(event.get("data"), dict) else event["data"]
        keys = list(target) or ["id"]
        key = draw(st.sampled_from(keys + ["extra"]))
        operation = draw(st.sampled_from(["set", "delete", "duplicate-casing", "data-as-json-text"]))
        if operation == "set":
            target[key] = draw(ANY_VALUE)
        elif operation == "delete":
            target.pop(key, None)
        elif operation == "duplicate-casing":
            target[key.upper()] = draw(st.one_of(ANY_VALUE, st.just(target.get(key))))
        elif isinstance(event.get("data"), dict):
            event["data"] = body_of(clip_depth(event["data"], 200)).decode()
    if draw(st.integers(0, 20)) == 0:  # now and then not an object at all
        return draw(st.sampled_from([[event], body_of(clip_depth(event, 200)).decode(), None, 42]))
    return event


@settings(max_examples=PURE_EXAMPLES, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(raw=st.one_of(mutated_events(), malformed().map(lambda m: m.build("pure"))))
def test_parse_event_only_refuses(raw: Any) -> None:
    FIGURES[f"parse_event.{_parse_outcome(raw)}"] += 1


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# Deep values clipped at 200 levels: still far past the limit, and within what json.dumps can write.
EVENT_JSON = st.one_of(mutated_events(), malformed().map(lambda m: m.build("body"))).map(
    lambda raw: body_of(clip_depth(raw, 200)))
QUEUE_BODIES = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(_b64),
    st.text(max_size=200).map(str.encode),
    EVENT_JSON,
    EVENT_JSON.map(_b64),
    st.lists(EVENT_JSON, max_size=6).map(lambda items: b"[" + b",".join(items) + b"]"),
    st.integers(1, 30_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 10_000).map(lambda depth: _b64(b'{"a":' * depth + b"1" + b"}" * depth)),
    st.integers(1, 40_000).map(lambda depth: b"[" * depth),
    st.integers(60_000, 200_000).map(lambda size: b'["' + b"x" * size + b'"]'),
    st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe{", b"[NaN, Infinity]", b'{"id": 1e999}', b"null", b"====",
                     b"[1" + b"0" * 5000 + b"]", b'"\\ud800"', b"[{}, 1]", b"e30", b"W3t9XQ"]),
)


@settings(max_examples=PURE_EXAMPLES, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(body=QUEUE_BODIES, as_text=st.booleans())
def test_decode_queue_message_only_refuses(body: bytes, as_text: bool) -> None:
    message: bytes | str = body.decode("utf-8", "replace") if as_text else body
    try:
        events = decode_queue_message(message)
    except InvalidEventError as exc:
        assert exc.field == "message" or exc.field.startswith("message[")
        str(exc).encode("utf-8")
        FIGURES["decode_queue_message.invalid"] += 1
        return
    assert all(isinstance(event, dict) for event in events)
    for event in events:
        _parse_outcome(event)
    FIGURES["decode_queue_message.decoded"] += 1


def test_pure_parsing_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """(Runs after the two above.) Their figures."""
    parse, decode = figures("parse_event."), figures("decode_queue_message.")
    show(capsys, f"parse_event: {sum(parse.values())} examples, outcomes {parse}")
    show(capsys, f"decode_queue_message: {sum(decode.values())} examples, outcomes {decode}")


# --- 2. through the registered functions ---------------------------------------------


class Ledger:
    """What the tests read back: the refusals recorded since a moment."""

    def __init__(self) -> None:
        self.table = get_runtime().clients.ledger_table()

    def refusals_since(self, moment: datetime) -> list[dict[str, Any]]:
        query = "PartitionKey eq @pk and RejectedAt ge @since"
        return list(self.table.query_entities(query, parameters={"pk": REJECTED_PARTITION, "since": moment}))

    def refusal_count(self) -> int:
        rows = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": REJECTED_PARTITION},
                                         select=["RowKey"])
        return sum(1 for _ in rows)


def refused_field(row: dict[str, Any]) -> str:
    """The field a refusal's reason names ("invalid maintenance event: <field>: <problem>")."""
    return str(row["Reason"]).split(": ", 2)[1]


def queued_work(host: FunctionsHost) -> int:
    return int(host.queue(get_runtime().settings.work_queue).get_queue_properties().approximate_message_count)


_NONCES = itertools.count()


class IntakeCheck:
    """One delivery and what must follow from it: the invocation succeeded, Azure was not asked
    for anything, no work was queued, and each expected refusal is in the ledger."""

    def __init__(self, host: FunctionsHost, emulator: AzureEmulator) -> None:
        self.host, self.emulator, self.ledger = host, emulator, Ledger()

    @staticmethod
    def nonce() -> str:
        """A marker to put in an event: its refusal's Raw carries it."""
        return f"fz-{next(_NONCES):06d}-"

    def __call__(self, deliver: Callable[[], None], expected: dict[str, Callable[[str], bool]], label: Any) -> None:
        """`expected`: a marker the refusal's Raw contains -> what the field it names may be."""
        since = datetime.now(UTC) - timedelta(milliseconds=1)
        invocations = len(self.host.invocations)
        deliver()
        failed = [str(i.error) for i in self.host.invocations[invocations:] if not i.succeeded]
        assert not failed, (label, failed)
        assert self.emulator.requests == [], label
        assert queued_work(self.host) == 0, label
        rows = self.ledger.refusals_since(since)
        for marker, fields in expected.items():
            matching = [row for row in rows if marker in row["Raw"]]
            assert matching, (label, marker, [row["Reason"] for row in rows])
            assert any(fields(refused_field(row)) for row in matching), (label, [row["Reason"] for row in matching])
        assert len(rows) == len(expected), (label, [row["Reason"] for row in rows])
        FIGURES["functions.refusals_read_back"] += len(rows)
        FIGURES["functions.azure_requests"] += len(self.emulator.requests)


@pytest.fixture
def intake(host: FunctionsHost, emulator: AzureEmulator) -> Iterator[IntakeCheck]:
    yield IntakeCheck(host, emulator)


FUNCTIONS = {"pre": "pre_maintenance", "post": "post_maintenance"}


@settings(max_examples=EVENT_GRID_EXAMPLES, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(change=malformed().filter(lambda m: not m.queue_only), wrong_function=st.integers(0, 9))
def test_event_grid_functions_refuse_malformed_events(
    host: FunctionsHost, emulator: AzureEmulator, intake: Any, change: Malformed, wrong_function: int
) -> None:
    nonce = intake.nonce()
    event = change.build(nonce)
    # Now and then delivered to the other function (a wrong subscription filter): it is refused all the same.
    kind = change.kind if wrong_function else ("post" if change.kind == "pre" else "pre")
    intake(lambda: host.deliver_event(FUNCTIONS[kind], event), {nonce: change.fields}, change.label)
    FIGURES["functions.event_grid_deliveries"] += 1
    FIGURES[f"defects.{change.label.split(':')[0]}"] += 1


def _queue_function(host: FunctionsHost) -> Callable[[bytes], None]:
    return lambda body: host.call("maintenance_events_queue", func.QueueMessage(id="fuzz", body=body))


# Mostly events that fit many to a message; now and then a large one, which can make the message too large.
BATCH_MEMBERS = st.one_of(*[malformed(LIGHT)] * 7,
                          malformed(tuple(f for f in FAMILIES if f != "deep")))


@settings(max_examples=QUEUE_BATCH_EXAMPLES, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(changes=st.lists(BATCH_MEMBERS, min_size=4, max_size=10), encode=st.booleans())
def test_queue_function_refuses_every_malformed_event_of_a_delivery(
    host: FunctionsHost, emulator: AzureEmulator, intake: Any, changes: list[Malformed], encode: bool
) -> None:
    nonces = [intake.nonce() for _ in changes]
    text = body_of([change.build(nonce) for change, nonce in zip(changes, nonces, strict=True)])
    body = _b64(text) if encode else text
    expected: dict[str, Callable[[str], bool]]
    if len(body) > QUEUE_MESSAGE_BYTES:
        # Refused whole, before any event in it is read: no queue holds a message this large.
        expected = {bounded_text(body)[:200]: exactly("message")}
        FIGURES["functions.queue_batches_refused_whole"] += 1
    else:
        expected = {nonce: change.fields for change, nonce in zip(changes, nonces, strict=True)}
    intake(lambda: _queue_function(host)(body), expected, [change.label for change in changes])
    FIGURES["functions.queue_batches"] += 1
    FIGURES["functions.malformed_events_in_queue_batches"] += len(changes)
    for change in changes:
        FIGURES[f"defects.{change.label.split(':')[0]}"] += 1


@settings(max_examples=QUEUE_BODY_EXAMPLES, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(shape=st.sampled_from(["bytes", "base64-bytes", "deep", "deep-base64", "unclosed", "oversize", "oversize-base64",
                              "not-objects", "scalar", "not-utf8"]), size=st.integers(0, 200_000),
       junk=st.binary(max_size=200))
def test_queue_function_refuses_unreadable_bodies(
    host: FunctionsHost, emulator: AzureEmulator, intake: Any, shape: str, size: int, junk: bytes
) -> None:
    nonce = intake.nonce().encode()
    depth = 33 + size % 20_000  # up to 40 KB of brackets: deep, and still inside a queue message
    body = {
        "bytes": b"!" + nonce + junk,
        "base64-bytes": _b64(b"!" + nonce + junk),
        "deep": b'["' + nonce + b'",' + b"[" * depth + b"]" * depth + b"]",
        "deep-base64": _b64(b'["' + nonce + b'",' + b"{\"k\":" * (depth // 4) + b"1" + b"}" * (depth // 4) + b"]"),
        "unclosed": b'["' + nonce + b'",' + b"[" * depth,
        "oversize": b'["' + nonce + b'","' + b"x" * (QUEUE_MESSAGE_BYTES + size) + b'"]',
        "oversize-base64": _b64(b'["' + nonce + b'","' + b"y" * (QUEUE_MESSAGE_BYTES * 3 // 4 + size % 5000) + b'"]'),
        "not-objects": b'[{"id": "' + nonce + b'"}, ' + json.dumps(junk.hex()).encode() + b"]",
        "scalar": _b64(json.dumps(nonce.decode() + junk.hex()).encode()),
        "not-utf8": b"[\xff" + nonce + junk,
    }[shape]
    intake(lambda: _queue_function(host)(body), {bounded_text(body)[:200]: under("message")}, shape)
    FIGURES["functions.unreadable_queue_bodies"] += 1


_STARTED: list[float] = []


@pytest.fixture(autouse=True, scope="module")
def _clock_the_file() -> None:
    _STARTED.append(time.monotonic())  # when the file's first test starts


def test_function_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """(Runs last.) The figures to quote for the functions, and the file's time."""
    found = figures("functions.")
    total = sum(found.get(key, 0) for key in ("event_grid_deliveries", "malformed_events_in_queue_batches",
                                               "unreadable_queue_bodies"))
    show(capsys, f"through the functions: {found}")
    show(capsys, f"malformed deliveries in total: {total} (events in queue batches counted one by one); "
                 f"refusals read back {found.get('refusals_read_back', 0)}; "
                 f"Azure requests {found.get('azure_requests', 0)}, work messages queued 0")
    show(capsys, f"by kind of defect: {figures('defects.')}")
    show(capsys, f"{time.monotonic() - _STARTED[0]:.1f} s for the file's tests\n")
