"""The settings of the notification channels, the hold and approve links and the health checks:
read, validated with the setting named, and secrets never echoed."""

from __future__ import annotations

import base64

import pytest

from handlers.core.errors import SettingsError
from handlers.core.settings import Settings

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
KEY = base64.b64encode(bytes(range(32))).decode()
TEAMS = "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?sig=s3cr3t"
EMAIL = {"MAINTENANCE_EMAIL_ENDPOINT": "https://acs-x.communication.azure.com",
         "MAINTENANCE_EMAIL_SENDER": "DoNotReply@x.azurecomm.net",
         "MAINTENANCE_EMAIL_TO": "a@example.test; b@example.test"}


def read(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_everything_is_off_by_default() -> None:
    settings = read()
    assert settings.notify.channels == ()
    assert not settings.hold.enabled and settings.hold.mode == "hold"
    assert settings.health.checks == ("running-again",) and settings.health.wait_seconds == 300


def test_channels_and_links_are_read() -> None:
    settings = read(MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT="https://t.westeurope-1.eventgrid.azure.net/api/events",
                    MAINTENANCE_TEAMS_WEBHOOK_URL=TEAMS, MAINTENANCE_HOLD_KEY=KEY,
                    WEBSITE_HOSTNAME="App.azurewebsites.net",
                    MAINTENANCE_APPROVAL_MODE="approve", MAINTENANCE_POST_CHECKS="running-again,vm-agent-ready",
                    **EMAIL)
    assert settings.notify.channels == ("eventgrid", "email", "teams")
    assert settings.notify.email_to == ("a@example.test", "b@example.test")
    assert settings.hold.enabled and settings.hold.public_url == "https://app.azurewebsites.net"
    assert settings.hold.key == bytes(range(32)) and settings.hold.mode == "approve"
    assert settings.health.checks == ("running-again", "vm-agent-ready")
    assert "s3cr3t" not in repr(settings) and KEY not in repr(settings), "secrets stay out of reprs (and so logs)"


@pytest.mark.parametrize(("env", "setting", "expected"), [
    ({"MAINTENANCE_EMAIL_ENDPOINT": "https://acs.communication.azure.com"}, "MAINTENANCE_EMAIL_SENDER", "all three"),
    ({**EMAIL, "MAINTENANCE_EMAIL_SENDER": "not-an-address"}, "MAINTENANCE_EMAIL_SENDER", "e-mail address"),
    ({**EMAIL, "MAINTENANCE_EMAIL_TO": "a@example.test, nobody"}, "MAINTENANCE_EMAIL_TO", "'nobody'"),
    ({**EMAIL, "MAINTENANCE_EMAIL_ENDPOINT": "http://acs.communication.azure.com"}, "MAINTENANCE_EMAIL_ENDPOINT",
     "https"),
    ({"MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT": "http://t/api/events"}, "MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT", "https"),
    ({"MAINTENANCE_NOTIFY_DRY_RUN": "maybe"}, "MAINTENANCE_NOTIFY_DRY_RUN", "label, skip"),
    ({"MAINTENANCE_HOLD_KEY": "c2hvcnQ=", "MAINTENANCE_PUBLIC_URL": "https://x"}, "MAINTENANCE_HOLD_KEY", "5 bytes"),
    ({"MAINTENANCE_HOLD_KEY": "***", "MAINTENANCE_PUBLIC_URL": "https://x"}, "MAINTENANCE_HOLD_KEY", "not base64"),
    ({"MAINTENANCE_HOLD_KEY": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/k)"},
     "MAINTENANCE_HOLD_KEY", "unresolved Key Vault reference"),
    ({"MAINTENANCE_HOLD_KEY": KEY}, "MAINTENANCE_PUBLIC_URL", "WEBSITE_HOSTNAME"),
    ({"MAINTENANCE_HOLD_KEY": KEY, "MAINTENANCE_PUBLIC_URL": "https://x", "MAINTENANCE_PRE_CHECKS": "vms-running"},
     "MAINTENANCE_PRE_CHECKS", "no-hold-tag"),
    ({"MAINTENANCE_APPROVAL_MODE": "approve"}, "MAINTENANCE_HOLD_KEY", "approve link is signed"),
    ({"MAINTENANCE_APPROVAL_MODE": "approve", "MAINTENANCE_HOLD_KEY": KEY, "MAINTENANCE_PUBLIC_URL": "https://x"},
     "MAINTENANCE_APPROVAL_MODE", "a channel"),
    ({"MAINTENANCE_APPROVAL_MODE": "always"}, "MAINTENANCE_APPROVAL_MODE", "hold, approve"),
    ({"MAINTENANCE_POST_CHECKS": "running-again,pings"}, "MAINTENANCE_POST_CHECKS", "'pings'"),
    ({"MAINTENANCE_POST_CHECKS": "http-probe"}, "MAINTENANCE_HTTP_PROBE_URL", "MAINTENANCE_POST_CHECKS"),
    ({"MAINTENANCE_POST_CHECK_WAIT_SECONDS": "7200"}, "MAINTENANCE_POST_CHECK_WAIT_SECONDS", "0..3600"),
])
def test_bad_values_name_the_setting(env: dict[str, str], setting: str, expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        read(**env)
    assert raised.value.setting == setting and expected in str(raised.value), str(raised.value)


@pytest.mark.parametrize("url", ["http://prod-01.logic.azure.com/x?sig=s3cr3t", "not a url ?sig=s3cr3t",
                                 "@Microsoft.KeyVault(VaultName=v;SecretName=teams)"])
def test_a_bad_teams_url_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(SettingsError) as raised:
        read(MAINTENANCE_TEAMS_WEBHOOK_URL=url)
    assert raised.value.setting == "MAINTENANCE_TEAMS_WEBHOOK_URL"
    assert "s3cr3t" not in str(raised.value) and "VaultName" not in str(raised.value)
