"""The settings of what the toolkit tells people and lets them do: notification channels, the hold
and approve links, and the health checks after a run. Read by `Settings.from_env` (one object,
validated at start like every other setting); kept here so the settings module stays one concept.

Secrets (the Teams webhook URL, the link-signing key) are never echoed in an error or a repr.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from handlers.core.errors import SettingsError
from handlers.core.setting_reader import Reader

NOTIFY_DRY_RUN = ("label", "skip")
APPROVAL_MODES = ("hold", "approve")
POST_CHECK_NAMES = ("running-again", "vm-agent-ready", "http-probe")
DEFAULT_POST_CHECKS = ("running-again",)
# An address as ACS Email takes it (local part and a domain with a dot); no display names here.
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_MAX_RECIPIENTS = 50  # ACS Email takes at most 50 recipients per message
_MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class NotifySettings:
    """Where run milestones go; each channel is off while its settings are empty."""

    eventgrid_endpoint: str | None = None
    email_endpoint: str | None = None
    email_sender: str | None = None
    email_to: tuple[str, ...] = ()
    teams_webhook_url: str | None = field(default=None, repr=False)  # a secret: its signature is in it
    dry_run: str = "label"  # a dry run's notifications: "label" (sent, marked dry run) or "skip"

    @property
    def channels(self) -> tuple[str, ...]:
        """The configured channels, in the order they are sent to."""
        return tuple(name for name, on in (("eventgrid", self.eventgrid_endpoint), ("email", self.email_endpoint),
                                           ("teams", self.teams_webhook_url)) if on)


@dataclass(frozen=True)
class HoldSettings:
    """The signed links of the pre notice: hold the run, or (approval mode) approve it."""

    key: bytes | None = field(default=None, repr=False)  # HMAC key; None: no links, the endpoint refuses
    mode: str = "hold"  # "hold": a link holds the run; "approve": the run is cancelled unless approved
    public_url: str | None = None  # https://<app host>, the links' base

    @property
    def enabled(self) -> bool:
        return self.key is not None and self.public_url is not None


@dataclass(frozen=True)
class HealthSettings:
    """The checks after patching, and how long a machine may take to pass them."""

    checks: tuple[str, ...] = DEFAULT_POST_CHECKS
    wait_seconds: int = 300


def read_notify(reader: Reader) -> NotifySettings:
    eventgrid = reader.raw("MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT")
    if eventgrid is not None:
        eventgrid = reader.check_https("MAINTENANCE_EVENTGRID_TOPIC_ENDPOINT", eventgrid)
    endpoint = reader.raw("MAINTENANCE_EMAIL_ENDPOINT")
    sender = reader.raw("MAINTENANCE_EMAIL_SENDER")
    to = _addresses(reader)
    email = {"MAINTENANCE_EMAIL_ENDPOINT": endpoint, "MAINTENANCE_EMAIL_SENDER": sender,
             "MAINTENANCE_EMAIL_TO": ",".join(to) or None}
    if any(email.values()):
        if not (endpoint and sender and email["MAINTENANCE_EMAIL_TO"]):
            missing = [name for name, value in email.items() if not value]
            raise SettingsError(missing[0], "required when any of MAINTENANCE_EMAIL_ENDPOINT, "
                                "MAINTENANCE_EMAIL_SENDER and MAINTENANCE_EMAIL_TO is set (e-mail needs all three)")
        endpoint = reader.check_https("MAINTENANCE_EMAIL_ENDPOINT", endpoint)
        if not _ADDRESS.fullmatch(sender):
            raise SettingsError("MAINTENANCE_EMAIL_SENDER", f"{sender!r} is not an e-mail address like "
                                "DoNotReply@<your verified domain>")
    return NotifySettings(
        eventgrid_endpoint=eventgrid, email_endpoint=endpoint, email_sender=sender, email_to=to,
        teams_webhook_url=_teams_url(reader), dry_run=reader.choice("MAINTENANCE_NOTIFY_DRY_RUN", "label",
                                                                    NOTIFY_DRY_RUN))


def read_hold(reader: Reader, notify: NotifySettings) -> HoldSettings:
    mode = reader.choice("MAINTENANCE_APPROVAL_MODE", "hold", APPROVAL_MODES)
    key = _key(reader)
    public = reader.raw("MAINTENANCE_PUBLIC_URL")
    if public is not None:
        public = reader.check_https("MAINTENANCE_PUBLIC_URL", public)
    elif host := reader.raw("WEBSITE_HOSTNAME"):  # App Service sets it to the app's default host name
        public = f"https://{host.lower()}"
    if mode == "approve":
        if key is None:
            raise SettingsError("MAINTENANCE_HOLD_KEY", "required when MAINTENANCE_APPROVAL_MODE is approve: "
                                "the approve link is signed with it")
        if not (notify.email_endpoint or notify.teams_webhook_url):
            raise SettingsError("MAINTENANCE_APPROVAL_MODE", "approve needs a channel the approve link reaches "
                                "people by: set the e-mail settings or MAINTENANCE_TEAMS_WEBHOOK_URL (or use hold)")
    if key is not None and public is None:
        raise SettingsError("MAINTENANCE_PUBLIC_URL", "required with MAINTENANCE_HOLD_KEY outside App Service "
                            "(where WEBSITE_HOSTNAME gives it): the https base URL the links point to")
    return HoldSettings(key=key, mode=mode, public_url=public)


def read_health(reader: Reader) -> HealthSettings:
    return HealthSettings(
        checks=reader.names("MAINTENANCE_POST_CHECKS", DEFAULT_POST_CHECKS, POST_CHECK_NAMES),
        wait_seconds=reader.integer("MAINTENANCE_POST_CHECK_WAIT_SECONDS", 300, 0, 3600))


def _addresses(reader: Reader) -> tuple[str, ...]:
    value = reader.raw("MAINTENANCE_EMAIL_TO")
    if value is None:
        return ()
    addresses = [a.strip() for a in re.split(r"[,;\s]+", value) if a.strip()]
    bad = [a for a in addresses if not _ADDRESS.fullmatch(a)]
    if bad:
        raise SettingsError("MAINTENANCE_EMAIL_TO", f"{bad[0]!r} is not an e-mail address; use addresses "
                            "separated by commas")
    if len(addresses) > _MAX_RECIPIENTS:
        raise SettingsError("MAINTENANCE_EMAIL_TO", f"{len(addresses)} addresses; ACS Email takes at most "
                            f"{_MAX_RECIPIENTS} (use a distribution list)")
    return tuple(dict.fromkeys(addresses))


def _secret(reader: Reader, name: str) -> str | None:
    """A secret setting's value; never a Key Vault reference: the platform resolves one before the
    app sees it, so seeing one means the resolution failed (and the value must not be used)."""
    value = reader.raw(name)
    if value is not None and value.startswith("@Microsoft.KeyVault("):
        raise SettingsError(name, "is an unresolved Key Vault reference: give the app's identity Key Vault "
                            "Secrets User on the vault and check the entry exists (the portal shows the reason)")
    return value


def _teams_url(reader: Reader) -> str | None:
    value = _secret(reader, "MAINTENANCE_TEAMS_WEBHOOK_URL")
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc or parts.fragment:
        raise SettingsError("MAINTENANCE_TEAMS_WEBHOOK_URL", "is not an https URL (a Teams Workflows webhook's "
                            "'HTTP POST URL'; its value is not shown here because it is a secret)")
    return value


def _key(reader: Reader) -> bytes | None:
    value = _secret(reader, "MAINTENANCE_HOLD_KEY")
    if value is None:
        return None
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError("MAINTENANCE_HOLD_KEY", "is not base64 (make one with: openssl rand -base64 32)") from None
    if len(key) < _MIN_KEY_BYTES:
        raise SettingsError("MAINTENANCE_HOLD_KEY", f"is {len(key)} bytes; use at least {_MIN_KEY_BYTES} random "
                            "bytes, base64 (openssl rand -base64 32)")
    return key
