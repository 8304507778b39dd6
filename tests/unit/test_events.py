from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from handlers.errors import InvalidEventError, UnsupportedEventTypeError
from handlers.events import (
    POST_EVENT_TYPE,
    PRE_EVENT_TYPE,
    EventKind,
    MaintenanceEvent,
    RunStatus,
    decode_queue_message,
    normalize_run_status,
    parse_event,
    parse_function_event,
)
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
    SUBS: {"empty": [], "not-an-array": SUB, "missing": DELETE},
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
    },
    "data.cancellationCutOffDateTime": {"missing-on-pre": DELETE, "empty": ""},
    "data": {"missing": DELETE, "array": [], "not-json": "{correlationId: x"},
    "id": {"missing": DELETE, "blank": "  "},
    "eventType": {"missing": DELETE, "number": 1},
    "eventTime": {"unparsable": "yesterday"},
    "topic": {"number": 5},
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
