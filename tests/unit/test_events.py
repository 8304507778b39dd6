from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from handlers.core.errors import InvalidEventError, UnsupportedEventTypeError
from handlers.core.events import (
    POST_EVENT_TYPE,
    PRE_EVENT_TYPE,
    EventKind,
    MaintenanceEvent,
    RunStatus,
    normalize_run_status,
    parse_event,
    parse_function_event,
)
from handlers.core.reading import decode_queue_message
from tests.eventfixtures import EVENT_FIXTURES, load_event

SUB = "00000000-0000-0000-0000-000000000001"
SUB2 = "00000000-0000-0000-0000-000000000002"
CONFIG_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-maintenance"
    "/providers/Microsoft.Maintenance/maintenanceConfigurations/mc-weekly"
)
RUN_ID = f"{CONFIG_ID}/providers/Microsoft.Maintenance/applyUpdates/20261122020000"
START = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
END = datetime(2026, 11, 22, 5, 55, tzinfo=UTC)
CUTOFF = START - timedelta(minutes=10)

PRE_FIXTURES = [name for name in EVENT_FIXTURES if name.startswith("pre_")]
PRE_DATA = load_event("pre_eventgrid")["data"]
POST_FIXTURES = [name for name in EVENT_FIXTURES if name.startswith("post_")]
DELETE = object()


def edited(name: str, path: str, value: Any) -> dict[str, Any]:
    """Fixture `name` with the dotted `path` set to `value` (or removed: DELETE)."""
    event = load_event(name)
    *parents, leaf = path.split(".")
    target = event
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[leaf]
    else:
        target[leaf] = value
    return event


def guids(count: int) -> list[str]:
    return [f"00000000-0000-0000-0000-{index:012x}" for index in range(1, count + 1)]


def nested(depth: int, leaf: Any = 1) -> Any:
    """`depth` levels of arrays (built without recursion, so any depth)."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def test_all_six_fixtures_exist() -> None:
    assert set(EVENT_FIXTURES) >= {
        "pre_eventgrid",
        "pre_eventgrid_pascal",
        "pre_cloudevents",
        "post_eventgrid",
        "post_eventgrid_pascal",
        "post_cloudevents",
    }


# --- the fixtures -----------------------------------------------------------------


@pytest.mark.parametrize("name", EVENT_FIXTURES)
def test_fixture_parses(name: str) -> None:
    event = parse_event(load_event(name))

    kind = EventKind.PRE if name.startswith("pre_") else EventKind.POST
    assert event.kind is kind
    assert event.event_type == (
        PRE_EVENT_TYPE if kind is EventKind.PRE else POST_EVENT_TYPE
    )
    assert event.schema == ("cloudevents" if "cloudevents" in name else "eventgrid")
    assert event.event_id == RUN_ID
    assert event.topic == CONFIG_ID
    assert event.subject == "mc-weekly"
    assert event.correlation_id == RUN_ID
    assert event.maintenance_configuration_id == CONFIG_ID
    assert event.configuration_name == "mc-weekly"
    assert event.run_name == "20261122020000"
    assert event.subscription_ids == (SUB, SUB2)
    assert (event.start, event.end) == (START, END)
    for moment in (event.start, event.end, event.cancellation_cutoff, event.event_time):
        if moment is not None:
            assert moment.utcoffset() == timedelta(0)
    if kind is EventKind.PRE:
        assert event.cancellation_cutoff == CUTOFF
        assert event.status is None and event.run_status is None
    else:
        assert event.cancellation_cutoff is None
        assert event.status == "Succeeded"
        assert event.run_status is RunStatus.SUCCEEDED


@pytest.mark.parametrize("names", [PRE_FIXTURES, POST_FIXTURES], ids=["pre", "post"])
def test_schemas_and_key_casings_give_equal_events(names: list[str]) -> None:
    events = {
        dataclasses.replace(parse_event(load_event(n)), schema="x") for n in names
    }
    assert len(names) == 3 and len(events) == 1


def test_seven_digit_fraction_is_truncated_to_microseconds() -> None:
    event = parse_event(load_event("pre_eventgrid"))  # eventTime ...01:20:03.1234567Z
    assert event.event_time == datetime(2026, 11, 22, 1, 20, 3, 123456, tzinfo=UTC)


def test_envelope_keys_are_read_case_insensitively() -> None:
    raw = load_event("post_eventgrid")
    shouted = {key.upper(): value for key, value in raw.items()}
    assert parse_event(shouted) == parse_event(raw)


def test_event_type_is_compared_case_insensitively_and_stored_canonically() -> None:
    event = parse_event(edited("pre_eventgrid", "eventType", PRE_EVENT_TYPE.lower()))
    assert event.event_type == PRE_EVENT_TYPE


def test_event_is_frozen() -> None:
    event = parse_event(load_event("pre_eventgrid"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.correlation_id = "/elsewhere"  # type: ignore[misc]


# --- to_dict ----------------------------------------------------------------------


@pytest.mark.parametrize("name", EVENT_FIXTURES)
def test_to_dict_round_trips(name: str) -> None:
    event = parse_event(load_event(name))
    canonical = event.to_dict()

    again = parse_event(json.loads(json.dumps(canonical)))

    assert again == dataclasses.replace(event, schema="eventgrid")
    assert canonical["dataVersion"] == "1.0"
    assert canonical["eventType"] == event.event_type
    assert canonical["data"]["startDateTime"] == "2026-11-22T02:00:00Z"
    assert canonical["eventTime"].endswith("Z")
    assert ("cancellationCutOffDateTime" in canonical["data"]) == name.startswith(
        "pre_"
    )
    assert ("status" in canonical["data"]) == name.startswith("post_")


def test_to_dict_round_trips_without_optional_envelope_fields() -> None:
    raw = load_event("post_eventgrid")
    for key in ("topic", "subject", "eventTime"):
        del raw[key]
    event = parse_event(raw)
    assert (event.topic, event.subject, event.event_time) == (None, None, None)
    assert parse_event(event.to_dict()) == event


# --- run status -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Succeeded", RunStatus.SUCCEEDED),
        ("SUCCEEDED", RunStatus.SUCCEEDED),
        ("Completed", RunStatus.SUCCEEDED),
        ("Failed", RunStatus.FAILED),
        ("Failure", RunStatus.FAILED),
        ("PartialFailure", RunStatus.FAILED),
        ("Partial Failure", RunStatus.FAILED),
        ("TimedOut", RunStatus.FAILED),
        ("Canceled", RunStatus.CANCELLED),
        ("Cancelled", RunStatus.CANCELLED),
        ("InProgress", RunStatus.IN_PROGRESS),
        ("in_progress", RunStatus.IN_PROGRESS),
        ("Pending", RunStatus.UNKNOWN),
        ("Exploded", RunStatus.UNKNOWN),
        ("", RunStatus.UNKNOWN),
    ],
)
def test_post_status_is_normalized_and_kept_raw(raw: str, expected: RunStatus) -> None:
    event = parse_event(edited("post_eventgrid", "data.status", raw))
    assert event.run_status is expected
    assert event.status == raw
    assert normalize_run_status(raw) is expected


def test_post_without_status_is_unknown() -> None:
    event = parse_event(edited("post_eventgrid", "data.status", DELETE))
    assert event.status is None
    assert event.run_status is RunStatus.UNKNOWN


def test_pre_ignores_a_status() -> None:
    event = parse_event(edited("pre_eventgrid", "data.status", "Failed"))
    assert event.status is None and event.run_status is None


def test_post_with_cutoff_keeps_it() -> None:
    raw = edited(
        "post_eventgrid", "data.cancellationCutOffDateTime", "2026-11-22T01:50Z"
    )
    assert parse_event(raw).cancellation_cutoff == CUTOFF


# --- values that are accepted -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T02:00:00", START),  # no offset: UTC
        ("2026-11-22T02:00:00.0000000Z", START),
        ("2026-11-22t02:00:00z", START),
        ("2026-11-22 02:00:00+00:00", START),
        ("2026-11-22T03:30:00+01:30", START),
        ("2026-11-21T21:00:00-0500", START),
        ("2026-11-22T02:00Z", START),
        ("2026-11-22T02:00:00.5Z", START + timedelta(milliseconds=500)),
    ],
)
def test_times_in_any_iso_8601_notation_become_aware_utc(
    text: str, expected: datetime
) -> None:
    start = parse_event(edited("pre_eventgrid", "data.startDateTime", text)).start
    assert start == expected
    assert start.tzinfo is UTC


def test_data_given_as_a_json_string_is_decoded() -> None:
    raw = load_event("pre_eventgrid")
    raw["data"] = json.dumps(raw["data"])
    assert parse_event(raw) == parse_event(load_event("pre_eventgrid"))


def test_ids_keep_their_casing_and_fixed_segments_may_vary_in_case() -> None:
    config_id = CONFIG_ID.replace("Microsoft.Maintenance", "microsoft.maintenance")
    config_id = config_id.replace("resourceGroups", "resourcegroups")
    run_id = RUN_ID.upper().replace("RG-MAINTENANCE", "rg-maintenance")  # all but rg
    raw = edited("pre_eventgrid", "data.maintenanceConfigurationId", config_id)
    raw["data"]["correlationId"] = run_id

    event = parse_event(raw)

    assert event.maintenance_configuration_id == config_id
    assert event.correlation_id == run_id
    assert event.configuration_name == "mc-weekly"
    assert event.run_name == "20261122020000"


@pytest.mark.parametrize("rg", ["rg_1-x.y", "(rg)", "a" * 90, "Rg.(Prod)"])
def test_allowed_resource_group_names(rg: str) -> None:
    raw = load_event("pre_eventgrid")
    for key in ("maintenanceConfigurationId", "correlationId"):
        raw["data"][key] = raw["data"][key].replace("rg-maintenance", rg)
    raw["topic"] = raw["data"]["maintenanceConfigurationId"]
    assert f"/resourceGroups/{rg}/" in parse_event(raw).correlation_id


def test_subscription_ids_are_lower_cased_and_deduplicated_in_order() -> None:
    upper = "ABCDEF00-0000-0000-0000-0000000000FF"
    ids = [SUB2, upper, SUB, upper.lower(), SUB2]
    event = parse_event(edited("pre_eventgrid", "data.resourceSubscriptionIds", ids))
    assert event.subscription_ids == (SUB2, upper.lower(), SUB)


def test_same_key_twice_in_different_casing_with_equal_values_is_accepted() -> None:
    raw = load_event("pre_eventgrid")
    raw["data"]["CorrelationId"] = raw["data"]["correlationId"]
    assert parse_event(raw).correlation_id == RUN_ID


# --- events that are refused ------------------------------------------------------

OTHER_CONFIG = CONFIG_ID.replace("mc-weekly", "mc-other")
OTHER_SUB = CONFIG_ID.replace(SUB, SUB2)
APPLY = "/providers/Microsoft.Maintenance/applyUpdates/"

RUN = "20261122020000"
CORR, CFG, SUBS = (
    "data.correlationId",
    "data.maintenanceConfigurationId",
    "data.resourceSubscriptionIds",
)

# {path edited in pre_eventgrid, which is also the field expected: {case id: new value}}
MALFORMED: dict[str, dict[str, Any]] = {
    CORR: {
        "run-of-other-config": f"{OTHER_CONFIG}{APPLY}{RUN}",
        "run-of-other-subscription": f"{OTHER_SUB}{APPLY}{RUN}",
        "dot-dot": f"{CONFIG_ID}/../..{APPLY}{RUN}",
        "dot-dot-run": f"{CONFIG_ID}{APPLY}..",
        "query": f"{RUN_ID}?api-version=2023-04-01",
        "fragment": f"{RUN_ID}#x",
        "trailing-slash": f"{RUN_ID}/",
        "trailing-newline": f"{RUN_ID}\n",
        "double-slash": RUN_ID.replace("/providers", "//providers", 1),
        "percent": f"{CONFIG_ID}%2F..{APPLY}{RUN}",
        "whitespace": f" {RUN_ID}",
        "13-digit-run": f"{CONFIG_ID}{APPLY}{RUN[:-1]}",
        "15-digit-run": f"{CONFIG_ID}{APPLY}{RUN}0",
        "non-ascii-digits": f"{CONFIG_ID}{APPLY}\u0662\u0660\u0662\u0666" + RUN[4:],
        "other-provider": RUN_ID.replace("applyUpdates", "updates"),
        "config-id-only": CONFIG_ID,
        "missing": DELETE,
        "empty": "",
        "number": 42,
        "over-2048-characters": RUN_ID + "0" * 2048,
    },
    CFG: {
        "bad-guid": CONFIG_ID.replace(SUB, "not-a-guid"),
        "rg-dot-dot": CONFIG_ID.replace("rg-maintenance", ".."),
        "rg-ends-with-dot": CONFIG_ID.replace("rg-maintenance", "rg."),
        "rg-too-long": CONFIG_ID.replace("rg-maintenance", "r" * 91),
        "rg-non-ascii": CONFIG_ID.replace("rg-maintenance", "rg-wartung-\u00e4"),
        "name-dot-dot": CONFIG_ID.replace("mc-weekly", ".."),
        "name-paren": CONFIG_ID.replace("mc-weekly", "mc(1)"),
        "trailing-slash": CONFIG_ID + "/",
        "relative": CONFIG_ID.lstrip("/"),
        "unicode-case-fold": CONFIG_ID.replace("/subscriptions", "/\u017fubscriptions"),
        "missing": DELETE,
    },
    SUBS: {"empty": [], "not-an-array": SUB, "missing": DELETE, "over-1000": guids(1001)},
    f"{SUBS}[2]": {"bad-guid": [SUB, SUB2, "sub-3"]},
    f"{SUBS}[0]": {"braced-guid": [f"{{{SUB}}}"]},
    f"{SUBS}[1]": {"number": [SUB, 7]},
    "data.startDateTime": {
        "unparsable": "next tuesday",
        "impossible": "2026-13-01T00:00:00Z",
        "date-only": "2026-11-22",
        "epoch": 1795312800,
        "out-of-range": "0001-01-01T00:00:00+01:00",
        "leap-second": "2026-11-22T01:59:60Z",
    },
    "data.endDateTime": {
        "missing": DELETE,
        "before-start": "2026-11-22T01:00:00Z",
        "equals-start": "2026-11-22T03:00:00+01:00",
        "window-over-24-hours": "2026-11-23T02:00:01Z",
        "window-of-a-year": "2027-11-22T02:00:00Z",
    },
    "data.cancellationCutOffDateTime": {
        "missing-on-pre": DELETE,
        "empty": "",
        "after-start": "2026-11-22T02:00:01Z",
        "after-end": "2026-11-22T06:00:00Z",
    },
    "data.status": {"over-2048-characters": "s" * 2049},
    "data.note": {"over-2048-characters": "n" * 2049},
    "data": {
        "missing": DELETE,
        "array": [],
        "not-json": "{correlationId: x",
        "over-64-KiB": {**PRE_DATA, "padding": ["p" * 1000] * 66},
        "over-64-KiB-as-a-string": json.dumps({**PRE_DATA, "padding": ["p" * 1000] * 66}),
        "nested-33-levels": {**PRE_DATA, "extra": nested(32)},
        "nested-100000-levels": {**PRE_DATA, "extra": nested(100_000)},
        "string-nested-20000-levels": "[" * 20_000 + "]" * 20_000,
    },
    "id": {
        "missing": DELETE,
        "blank": "  ",
        "over-1024-characters": "i" * 1025,
        "lone-surrogate": "run-\ud800",
    },
    "eventType": {"missing": DELETE, "number": 1},
    "eventTime": {"unparsable": "yesterday", "over-2048-characters": "2026-11-22T01:20:03Z" + " " * 2048},
    "topic": {
        "number": 5,
        "other-configuration": OTHER_CONFIG,
        "other-subscription": OTHER_SUB,
        "a-custom-topic": f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.EventGrid/topics/maintenance",
        "below-the-configuration": f"{CONFIG_ID}/x",
        "kelvin-sign-for-k": CONFIG_ID.replace("weekly", "wee\u212aly"),
        "over-2048-characters": CONFIG_ID + "/" * 2048,
    },
    "subject": {
        "over-2048-characters": "s" * 2049,
        "over-2048-emoji": "\U0001f600" * 2049,
        "lone-surrogate": "mc-\udc00",
        "nested-100000-levels": nested(100_000),
    },
    "metadataVersion": {"over-2048-characters": "1" * 2049},
}
MALFORMED_CASES = [
    pytest.param(field, value, id=f"{field}:{case}")
    for field, cases in MALFORMED.items()
    for case, value in cases.items()
]


@pytest.mark.parametrize(("field", "value"), MALFORMED_CASES)
def test_malformed_event_names_the_field(field: str, value: Any) -> None:
    path = field.split("[")[0]
    with pytest.raises(InvalidEventError) as caught:
        parse_event(edited("pre_eventgrid", path, value))
    assert caught.value.field == field
    assert caught.value.problem
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("type", DELETE, "type"),
        ("specversion", "0.3", "specversion"),
        ("time", "not a time", "time"),
        ("source", ["x"], "source"),
        ("source", OTHER_CONFIG, "source"),
        ("source", "https://example.invalid/maintenance", "source"),
    ],
)
def test_malformed_cloudevent_names_the_field(
    path: str, value: Any, field: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event(edited("post_cloudevents", path, value))
    assert caught.value.field == field


def test_same_key_in_different_casings_with_different_values_is_refused() -> None:
    raw = load_event("pre_eventgrid")
    raw["data"]["CorrelationId"] = f"{OTHER_CONFIG}{APPLY}20261122020000"
    with pytest.raises(InvalidEventError) as caught:
        parse_event(raw)
    assert caught.value.field == "data.CorrelationId"


@pytest.mark.parametrize("not_an_object", [None, [], "event", 3])
def test_event_that_is_not_an_object_is_refused(not_an_object: Any) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event(not_an_object)
    assert caught.value.field == "event"


@pytest.mark.parametrize("name", ["pre_eventgrid", "post_cloudevents"])
def test_other_event_types_are_unsupported_even_with_other_data(name: str) -> None:
    key = "type" if "cloudevents" in name else "eventType"
    raw = edited(name, key, "Microsoft.Storage.BlobCreated")
    raw["data"] = {"url": "https://example.invalid/blob"}
    with pytest.raises(UnsupportedEventTypeError) as caught:
        parse_event(raw)
    assert caught.value.event_type == "Microsoft.Storage.BlobCreated"


# --- parse_function_event ---------------------------------------------------------


def grid_event(name: str, event_time: datetime | None) -> func.EventGridEvent:
    raw = load_event(name)
    return func.EventGridEvent(
        id=raw["id"],
        data=raw["data"],
        topic=raw["topic"],
        subject=raw["subject"],
        event_type=raw["eventType"],
        event_time=event_time,
        data_version=raw["dataVersion"],
    )


@pytest.mark.parametrize("name", ["pre_eventgrid", "post_eventgrid_pascal"])
def test_parse_function_event_matches_parse_event(name: str) -> None:
    expected = parse_event(load_event(name))
    assert expected.event_time is not None

    event = parse_function_event(grid_event(name, expected.event_time))

    assert event == expected


def test_parse_function_event_without_time_and_with_naive_time() -> None:
    assert parse_function_event(grid_event("pre_eventgrid", None)).event_time is None
    naive = datetime(2026, 11, 22, 1, 20)
    event = parse_function_event(grid_event("pre_eventgrid", naive))
    assert event.event_time == naive.replace(tzinfo=UTC)


def test_parse_function_event_accepts_the_workers_cloud_event() -> None:
    raw = load_event("post_cloudevents")
    expected = parse_event(raw)
    cloud_event = func.CloudEvent(
        id=raw["id"],
        source=raw["source"],
        type=raw["type"],
        specversion=raw["specversion"],
        data=raw["data"],
        time=expected.event_time,
        subject=raw["subject"],
    )
    assert parse_function_event(cloud_event) == expected


def test_parse_function_event_refuses_malformed_data() -> None:
    event = grid_event("pre_eventgrid", None)
    event.get_json()["correlationId"] = f"{RUN_ID}/../../x"
    with pytest.raises(InvalidEventError) as caught:
        parse_function_event(event)
    assert caught.value.field == "data.correlationId"


# --- decode_queue_message ---------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


PRE = load_event("pre_eventgrid")
POST = load_event("post_cloudevents")
PRE_JSON = json.dumps(PRE)
BOTH_JSON = json.dumps([PRE, POST])

QUEUE_MESSAGES: list[tuple[str, bytes | str, list[dict[str, Any]]]] = [
    ("plain-str", PRE_JSON, [PRE]),
    ("plain-bytes", PRE_JSON.encode(), [PRE]),
    ("plain-array", BOTH_JSON, [PRE, POST]),
    ("base64-str", b64(PRE_JSON), [PRE]),
    ("base64-bytes", b64(BOTH_JSON).encode(), [PRE, POST]),
    ("bom-and-whitespace", "\ufeff \n" + PRE_JSON + "\r\n", [PRE]),
    ("bom-bytes", b"\xef\xbb\xbf" + PRE_JSON.encode(), [PRE]),
    ("bom-inside-base64", b64("\ufeff" + PRE_JSON), [PRE]),
    (
        "base64-line-wrapped",
        "\n".join(b64(PRE_JSON)[i : i + 76] for i in range(0, 9999, 76)),
        [PRE],
    ),
    ("base64-unpadded", b64(PRE_JSON).rstrip("="), [PRE]),
    ("empty-array", "[]", []),
]


@pytest.mark.parametrize(
    ("body", "expected"),
    [case[1:] for case in QUEUE_MESSAGES],
    ids=[case[0] for case in QUEUE_MESSAGES],
)
def test_decode_queue_message(
    body: bytes | str, expected: list[dict[str, Any]]
) -> None:
    events = decode_queue_message(body)
    assert events == expected
    for raw in events:
        assert isinstance(parse_event(raw), MaintenanceEvent)


GARBAGE: list[tuple[str, bytes | str, str, str]] = [
    ("words", "hello world", "message", "neither JSON nor base64"),
    ("empty", "", "message", "empty"),
    ("only-whitespace", b" \n\t", "message", "empty"),
    ("broken-json", "{not json", "message", "not valid JSON"),
    ("base64-of-text", b64("hello"), "message", "neither JSON nor base64"),
    ("base64-of-broken-json", b64('{"id": '), "message", "not valid JSON"),
    ("not-utf8", b"\xff\xfe\x00{", "message", "UTF-8"),
    ("scalar-in-base64", b64("42"), "message", "neither JSON nor base64"),
    ("array-of-scalars", "[1, 2]", "message[0]", "object"),
    ("array-with-a-bad-second", json.dumps([PRE, "x"]), "message[1]", "object"),
    ("nested-20000-levels", "[" * 20_000 + "]" * 20_000, "message", "nested deeper than 32"),
    ("nested-33-levels", "[" * 33 + "]" * 33, "message", "nested deeper than 32"),
    ("unclosed-10000-levels", b"{\"a\":" * 10_000, "message", "nested deeper than 32"),
    ("nested-in-base64", b64("[" * 5000 + "]" * 5000), "message", "nested deeper than 32"),
    ("over-64-KiB", json.dumps([PRE] * 60), "message", "64 KiB"),
    ("over-64-KiB-bytes", json.dumps([PRE] * 60).encode(), "message", "64 KiB"),
    ("over-64-KiB-in-base64", b64(json.dumps([PRE] * 45)), "message", "64 KiB"),
    ("not-bytes-or-text", 42, "message", "bytes or str"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [case[1:] for case in GARBAGE],
    ids=[case[0] for case in GARBAGE],
)
def test_decode_queue_message_refuses(
    body: bytes | str, field: str, problem: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        decode_queue_message(body)
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_decode_queue_message_does_not_share_state_between_calls() -> None:
    first = decode_queue_message(PRE_JSON)
    first[0]["id"] = "changed"
    assert decode_queue_message(PRE_JSON) == [PRE]


# --- bounds and consistency: what is still accepted -------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param("topic", CONFIG_ID + "/", id="topic-with-a-trailing-slash"),
        pytest.param("topic", CONFIG_ID.upper(), id="topic-in-other-casing"),
        pytest.param("topic", "", id="topic-empty"),
        pytest.param("topic", DELETE, id="topic-absent"),
        pytest.param("data.endDateTime", "2026-11-23T02:00:00Z", id="window-of-24-hours"),
        pytest.param("data.cancellationCutOffDateTime", "2026-11-22T02:00:00Z", id="cutoff-at-start"),
        pytest.param("id", "i" * 1024, id="id-of-1024-characters"),
        pytest.param("subject", "\U0001f600" * 2048, id="subject-of-2048-emoji"),
        pytest.param("data.resourceSubscriptionIds", guids(1000), id="1000-subscriptions"),
        pytest.param("data", {**PRE_DATA, "extra": nested(31)}, id="data-32-levels"),
    ],
)
def test_values_at_the_bounds_are_accepted(path: str, value: Any) -> None:
    assert isinstance(parse_event(edited("pre_eventgrid", path, value)), MaintenanceEvent)


def test_cloudevents_source_may_differ_in_casing() -> None:
    raw = edited("pre_cloudevents", "source", CONFIG_ID.lower() + "/")
    assert parse_event(raw).topic == CONFIG_ID.lower() + "/"


def test_post_event_with_a_cutoff_after_its_start_is_still_accepted() -> None:
    # The post event restores what the pre phase started: refusing it over a field it does not
    # use would leave VMs running.
    raw = edited("post_eventgrid", "data.cancellationCutOffDateTime", "2026-11-22T03:00:00Z")
    assert parse_event(raw).cancellation_cutoff == datetime(2026, 11, 22, 3, tzinfo=UTC)


def test_post_event_with_a_window_over_24_hours_is_refused() -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event(edited("post_eventgrid", "data.endDateTime", "2026-11-24T00:00:00Z"))
    assert caught.value.field == "data.endDateTime" and "24 hours" in caught.value.problem


def test_a_spoofed_topic_is_named_with_the_configuration_it_should_be() -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event(edited("pre_eventgrid", "topic", OTHER_CONFIG))
    assert caught.value.field == "topic"
    assert CONFIG_ID in caught.value.problem and "mc-other" in caught.value.problem


def test_an_event_too_large_for_a_work_message_names_its_largest_part() -> None:
    raw = edited("pre_eventgrid", "data.resourceSubscriptionIds", guids(1000))
    raw["subject"] = "\U0001f600" * 2048  # JSON writes each as a 12-byte surrogate pair escape
    raw["id"] = "\U0001f600" * 1024
    with pytest.raises(InvalidEventError) as caught:
        parse_event(raw)
    assert caught.value.field == "data.resourceSubscriptionIds"
    assert "work queue message" in caught.value.problem

    raw = edited("post_eventgrid", "subject", "\U0001f600" * 2048)
    raw["data"]["status"] = "\U0001f601" * 2048
    raw["id"] = "\U0001f602" * 1024
    with pytest.raises(InvalidEventError) as caught:
        parse_event(raw)
    assert caught.value.field in {"subject", "data.status"}


def test_the_largest_accepted_event_fits_in_every_work_message() -> None:
    """1000 subscriptions and the longest ASCII subject that is accepted: the work message that
    carries it, with the most lanes a message may name, still fits in a queue message (base64)."""
    from handlers.core.events import MAX_EVENT_JSON

    raw = edited("post_eventgrid", "data.resourceSubscriptionIds", guids(1000))
    raw["id"] = "i" * 1024
    for length in range(2048, 0, -16):
        raw["subject"] = "s" * length
        try:
            event = parse_event(raw)
            break
        except InvalidEventError:
            continue
    body = json.dumps({"version": 1, "phase": "post", "step": "verdict", "deferrals": 10_000, "takeovers": 10_000,
                       "lanes": guids(64), "event": event.to_dict()})
    assert len(json.dumps(event.to_dict())) <= MAX_EVENT_JSON
    assert len(base64.b64encode(body.encode())) <= 64 * 1024


# --- parsing never raises anything else --------------------------------------------


class _BrokenMapping(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise TypeError("cannot iterate")


def _same_key_twice_deep() -> dict[str, Any]:
    raw = load_event("pre_eventgrid")
    raw["extra"], raw["EXTRA"] = nested(100_000), nested(100_000, leaf=2)
    return raw


def _cyclic_data() -> dict[str, Any]:
    raw = load_event("pre_eventgrid")
    raw["data"]["self"] = raw["data"]
    return raw


def _huge_integer_key() -> dict[str, Any]:
    raw = load_event("pre_eventgrid")
    raw["data"][10**5000] = "x"  # str() refuses integers over 4300 digits
    return raw


@pytest.mark.parametrize(
    ("make", "field"),
    [
        pytest.param(_same_key_twice_deep, "EXTRA", id="same-key-twice-compared-100000-deep"),
        pytest.param(_cyclic_data, "data", id="data-containing-itself"),
        pytest.param(_huge_integer_key, "data", id="integer-key-of-5000-digits"),
        pytest.param(lambda: _BrokenMapping(load_event("pre_eventgrid")), "event", id="mapping-that-raises"),
        pytest.param(lambda: edited("pre_eventgrid", "data.startDateTime", float("nan")), "data.startDateTime",
                     id="start-nan"),
        pytest.param(lambda: edited("pre_eventgrid", "data.resourceSubscriptionIds", [float("inf")]),
                     "data.resourceSubscriptionIds[0]", id="subscription-inf"),
    ],
)
def test_pathological_input_is_an_invalid_event_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event(make())
    assert caught.value.field == field


def test_parse_function_event_refuses_deep_data() -> None:
    event = grid_event("pre_eventgrid", None)
    event.get_json()["extra"] = nested(100_000)
    with pytest.raises(InvalidEventError) as caught:
        parse_function_event(event)
    assert caught.value.field == "data"


def test_error_messages_stay_short_and_valid_unicode() -> None:
    raw = edited("pre_eventgrid", "data.resourceSubscriptionIds", ["\ud800" + "x" * 1_000_000])
    with pytest.raises(InvalidEventError) as caught:
        parse_event(raw)
    assert len(str(caught.value)) < 1000
    str(caught.value).encode("utf-8")

    unsupported = UnsupportedEventTypeError("Other." * 100_000)
    assert len(str(unsupported)) < 300 and len(unsupported.event_type) == 600_000
    long = InvalidEventError("f" * 10_000, "p" * 100_000 + "\udc00")
    assert len(long.field) <= 256 and len(str(long)) < 3000
    str(long).encode("utf-8")
