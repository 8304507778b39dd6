"""The notification sinks answer the real SDK clients as Event Grid, ACS Email and a Teams Workflows
webhook do, over verified TLS, and record what they accepted."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.communication.email import EmailClient
from azure.core.credentials import AccessToken, AccessTokenInfo, AzureKeyCredential, TokenRequestOptions
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient

from emulator.notify_sinks import NotificationSinks, SentEmail, serve_notification_sinks

EVENTGRID_SCOPE = "https://eventgrid.azure.net/.default"
EMAIL_SCOPE = "https://communication.azure.com//.default"  # sic: the SDK's double slash
FAR_FUTURE = 4_102_444_800  # 2100-01-01


class FakeCredential:
    """A TokenCredential whose token never expires; it records the scopes it was asked for."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("fake", FAR_FUTURE)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        self.scopes.extend(scopes)
        return AccessTokenInfo("fake", FAR_FUTURE)


@pytest.fixture
def sinks(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotificationSinks]:
    with serve_notification_sinks() as served:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", served.ca_bundle)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        yield served


@pytest.fixture
def credential() -> FakeCredential:
    return FakeCredential()


def email_message(subject: str = "Maintenance run finished") -> dict[str, Any]:
    return {
        "senderAddress": "DoNotReply@contoso.example",
        "recipients": {"to": [{"address": "ops@contoso.example", "displayName": "Ops"}]},
        "content": {"subject": subject, "plainText": "3 machines patched, 0 failed."},
    }


def adaptive_card_post(text: str = "Run finished") -> dict[str, Any]:
    return {"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": text}]},
    }]}


def bearer() -> dict[str, str]:
    return {"Authorization": "Bearer fake"}


# Event Grid


def test_eventgrid_records_the_cloud_events_the_sdk_sends(sinks: NotificationSinks, credential: FakeCredential) -> None:
    first = CloudEvent(source="/maintenance/run-1", type="Toolkit.RunStarted", data={"machines": 3})
    second = CloudEvent(source="/maintenance/run-1", type="Toolkit.RunFinished", data={"failed": 0},
                        subject="vm-1")

    EventGridPublisherClient(sinks.eventgrid_endpoint, credential).send([first, second])

    events = sinks.events()
    assert [(e["id"], e["type"], e["data"]) for e in events] == [
        (first.id, "Toolkit.RunStarted", {"machines": 3}), (second.id, "Toolkit.RunFinished", {"failed": 0})]
    assert {e["specversion"] for e in events} == {"1.0"} and events[1]["subject"] == "vm-1"
    assert set(credential.scopes) == {EVENTGRID_SCOPE}
    assert sinks.requests_seen("eventgrid") == 1


def test_eventgrid_takes_a_sas_key(sinks: NotificationSinks) -> None:
    client = EventGridPublisherClient(sinks.eventgrid_endpoint, AzureKeyCredential("topic-key"))
    client.send(CloudEvent(source="/maintenance", type="Toolkit.Ping", data=None))
    assert [e["type"] for e in sinks.events()] == ["Toolkit.Ping"]


def test_eventgrid_refuses_as_the_service_does(sinks: NotificationSinks) -> None:
    url = f"{sinks.eventgrid_endpoint}?api-version=2018-01-01"
    batch = {"Content-Type": "application/cloudevents-batch+json; charset=utf-8"}
    event = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}

    assert requests.post(url, json=[event], headers=batch, timeout=5).status_code == 401
    wrong_type = requests.post(url, json=[event], headers={**bearer(), "Content-Type": "application/json"}, timeout=5)
    assert wrong_type.status_code == 415
    for body in ({**event}, [], [{**event, "specversion": "0.3"}], [{k: v for k, v in event.items() if k != "source"}]):
        refused = requests.post(url, json=body, headers={**bearer(), **batch}, timeout=5)
        assert refused.status_code == 400, body
        assert refused.json()["error"]["code"] == "BadRequest"
    assert requests.post(url, data=b"not json", headers={**bearer(), **batch}, timeout=5).status_code == 400

    assert sinks.events() == []
    assert sinks.requests_seen("eventgrid") == 7


# Email


def test_email_send_succeeds_at_once_and_a_repeated_operation_id_sends_once(
    sinks: NotificationSinks, credential: FakeCredential
) -> None:
    client = EmailClient(sinks.email_endpoint, credential)
    operation_id = str(uuid.uuid4())

    started = time.monotonic()
    result = client.begin_send(email_message(), operation_id=operation_id).result()
    assert time.monotonic() - started < 5, "no poll sleep: the status is Succeeded at the first GET"
    assert result == {"id": operation_id, "status": "Succeeded", "error": None}

    again = client.begin_send(email_message(), operation_id=operation_id).result()
    assert again == result
    assert sinks.emails() == [SentEmail(operation_id, email_message())]
    assert sinks.requests_seen("email") == 4  # two sends, two status polls
    assert set(credential.scopes) == {EMAIL_SCOPE}


def test_email_operation_id_reused_for_another_message_is_refused(
    sinks: NotificationSinks, credential: FakeCredential
) -> None:
    client = EmailClient(sinks.email_endpoint, credential)
    operation_id = str(uuid.uuid4())
    client.begin_send(email_message(), operation_id=operation_id).result()

    with pytest.raises(HttpResponseError) as refused:
        client.begin_send(email_message(subject="Something else"), operation_id=operation_id)
    assert refused.value.status_code == 400
    assert [e.message["content"]["subject"] for e in sinks.emails()] == ["Maintenance run finished"]


def test_email_without_operation_id_gets_a_fresh_one(sinks: NotificationSinks, credential: FakeCredential) -> None:
    client = EmailClient(sinks.email_endpoint, credential)
    first = client.begin_send(email_message()).result()
    second = client.begin_send(email_message()).result()
    assert first["id"] != second["id"]
    assert [e.operation_id for e in sinks.emails()] == [first["id"], second["id"]]
    assert str(uuid.UUID(first["id"])) == first["id"]


@pytest.mark.parametrize("broken", [
    {"senderAddress": ""},
    {"recipients": {"to": []}},
    {"recipients": {"to": [{"displayName": "no address"}]}},
    {"recipients": {"to": [{"address": "a@contoso.example"}], "cc": [{"displayName": "no address"}]}},
    {"content": {"subject": "no body"}},
    {"content": {"plainText": "no subject"}},
])
def test_email_refuses_an_invalid_message(
    sinks: NotificationSinks, credential: FakeCredential, broken: dict[str, Any]
) -> None:
    with pytest.raises(HttpResponseError) as refused:
        EmailClient(sinks.email_endpoint, credential).begin_send({**email_message(), **broken})
    assert refused.value.status_code == 400
    assert refused.value.error is not None and refused.value.error.code == "BadRequest"
    assert sinks.emails() == []


def test_email_refuses_hmac_and_missing_auth_and_unknown_operations(sinks: NotificationSinks) -> None:
    with pytest.raises(ClientAuthenticationError):
        EmailClient(sinks.email_endpoint, AzureKeyCredential("a2V5")).begin_send(email_message())
    send = f"{sinks.email_endpoint}/emails:send?api-version=2025-09-01"
    assert requests.post(send, json=email_message(), timeout=5).status_code == 401
    unknown = requests.get(f"{sinks.email_endpoint}/emails/operations/{uuid.uuid4()}?api-version=2025-09-01",
                           headers=bearer(), timeout=5)
    assert unknown.status_code == 404 and unknown.headers["x-ms-error-code"] == "NotFound"
    assert requests.post(f"{sinks.email_endpoint}/emails:send", json=email_message(),
                         headers=bearer(), timeout=5).status_code == 400  # no api-version
    assert sinks.emails() == []
    assert sinks.requests_seen("email") == 4


# Teams


def test_teams_webhook_accepts_an_adaptive_card(sinks: NotificationSinks) -> None:
    assert "sig=" in sinks.teams_url and "sig=" not in repr(sinks)
    posted = requests.post(sinks.teams_url, json=adaptive_card_post(), timeout=5)
    assert posted.status_code == 202 and posted.content == b""
    assert sinks.teams_posts() == [adaptive_card_post()]


@pytest.mark.parametrize("body", [
    {"@type": "MessageCard", "text": "connector format"},
    {"type": "message", "attachments": []},
    {"type": "message", "attachments": [{"contentType": "text/plain", "content": "hi"}]},
    {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                         "content": {"type": "AdaptiveCard", "body": []}}]},  # no version
])
def test_teams_webhook_refuses_another_shape(sinks: NotificationSinks, body: dict[str, Any]) -> None:
    refused = requests.post(sinks.teams_url, json=body, timeout=5)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "BadRequest"
    assert sinks.teams_posts() == []
    assert sinks.requests_seen("teams") == 1


# Failure switches


def test_fail_until_healed(sinks: NotificationSinks) -> None:
    sinks.fail("teams", 500)
    for _ in range(3):
        failed = requests.post(sinks.teams_url, json=adaptive_card_post(), timeout=5)
        assert failed.status_code == 500 and failed.json()["error"]["code"] == "InternalServerError"
    sinks.heal("teams")
    assert requests.post(sinks.teams_url, json=adaptive_card_post("healed"), timeout=5).status_code == 202

    assert [p["attachments"][0]["content"]["body"][0]["text"] for p in sinks.teams_posts()] == ["healed"]
    assert sinks.requests_seen("teams") == 4


def test_fail_a_number_of_times_with_retry_after(sinks: NotificationSinks, credential: FakeCredential) -> None:
    sinks.fail("email", 429, times=1)
    throttled = requests.post(f"{sinks.email_endpoint}/emails:send?api-version=2025-09-01", json=email_message(),
                              headers=bearer(), timeout=5)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "0"
    assert throttled.json()["error"]["code"] == "TooManyRequests"

    sinks.fail("eventgrid", 503, times=1)  # the SDK's own retry heals it
    EventGridPublisherClient(sinks.eventgrid_endpoint, credential).send(
        CloudEvent(source="/maintenance", type="Toolkit.Retried", data={}))
    assert [e["type"] for e in sinks.events()] == ["Toolkit.Retried"]
    assert sinks.requests_seen("eventgrid") == 2


def test_a_failing_email_sink_fails_the_sdk_call(sinks: NotificationSinks, credential: FakeCredential) -> None:
    client = EmailClient(sinks.email_endpoint, credential, retry_total=0)
    sinks.fail("email", 500)
    with pytest.raises(HttpResponseError) as failed:
        client.begin_send(email_message())
    assert failed.value.status_code == 500
    sinks.heal("email")
    assert client.begin_send(email_message()).result()["status"] == "Succeeded"
    assert len(sinks.emails()) == 1


def test_fail_checks_its_arguments(sinks: NotificationSinks) -> None:
    with pytest.raises(ValueError, match="valid: eventgrid, email, teams"):
        sinks.fail("sms", 500)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sinks.fail("email", 200)
    with pytest.raises(ValueError):
        sinks.fail("email", 500, times=0)
    sinks.heal("email")  # nothing to heal is fine


# TLS and lifetime


def test_tls_is_verified(sinks: NotificationSinks, monkeypatch: pytest.MonkeyPatch, credential: FakeCredential) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(sinks.teams_url, json=adaptive_card_post(), timeout=5)
    with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        EmailClient(sinks.email_endpoint, credential, retry_total=0).begin_send(email_message())
    verified = requests.post(sinks.teams_url, json=adaptive_card_post(), verify=sinks.ca_bundle, timeout=5)
    assert verified.status_code == 202
    assert sinks.requests_seen("teams") == 1 and sinks.requests_seen("email") == 0


def test_close_stops_serving_and_removes_the_certificate() -> None:
    with serve_notification_sinks() as sinks:
        assert os.path.exists(sinks.ca_bundle)
    assert not os.path.exists(sinks.ca_bundle)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(sinks.teams_url, json=adaptive_card_post(), timeout=5)
