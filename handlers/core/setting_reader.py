"""Reading app settings: each kind of value checked, and refused with a message naming the
setting and what it may be (`handlers.core.errors.SettingsError`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from handlers.core.errors import SettingsError
from handlers.core.ids import is_configuration_id

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return value.strip() if value and value.strip() else None

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise SettingsError(name, f"{value!r} is not a boolean; use true or false")

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(name, f"{value!r} is not a whole number; use {low}..{high}") from None
        if not low <= number <= high:
            raise SettingsError(name, f"{number} is out of range; use {low}..{high}")
        return number

    def matching(self, name: str, default: str, pattern: re.Pattern[str], rule: str) -> str:
        value = self.raw(name) or default
        if not pattern.fullmatch(value):
            raise SettingsError(name, f"{value!r} is not valid; use {rule}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = (self.raw(name) or default).lower()
        if value not in allowed:
            raise SettingsError(name, f"{value!r} is not one of: {', '.join(allowed)}")
        return value

    def names(self, name: str, default: tuple[str, ...], allowed: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return default
        if value.strip().lower() == "none":
            return ()
        chosen = [item.strip().lower() for item in re.split(r"[,;\s]+", value) if item.strip()]
        unknown = [item for item in chosen if item not in allowed]
        if unknown:
            raise SettingsError(name, f"unknown {', '.join(map(repr, unknown))}; valid names: {', '.join(allowed)}")
        return tuple(dict.fromkeys(chosen))

    def optional_matching(self, name: str, pattern: re.Pattern[str], rule: str) -> str | None:
        value = self.raw(name)
        if value is not None and not pattern.fullmatch(value):
            raise SettingsError(name, f"{value!r} is not valid; use {rule}")
        return value

    def optional_url(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(name, f"{value!r} is not an http(s) URL")
        return value

    def optional_guid(self, name: str) -> str | None:
        value = self.raw(name)
        if value is not None and not _GUID.fullmatch(value):
            raise SettingsError(name, f"{value!r} is not a GUID (a managed identity's client id)")
        return value

    def https_url(self, name: str, default: str) -> str:
        return self.check_https(name, self.raw(name) or default)

    def check_https(self, name: str, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
            raise SettingsError(name, f"{value!r} is not an https URL like {DEFAULT_ARM_ENDPOINT}")
        return value.rstrip("/")

    def configuration_ids(self, name: str) -> frozenset[str]:
        value = self.raw(name)
        if value is None:
            return frozenset()
        ids = [item.strip().rstrip("/") for item in re.split(r"[,;\s]+", value) if item.strip()]
        for item in ids:
            if not is_configuration_id(item):
                raise SettingsError(
                    name, f"{item!r} is not a maintenance configuration id like /subscriptions/<guid>/"
                    "resourceGroups/<rg>/providers/Microsoft.Maintenance/maintenanceConfigurations/<name>"
                )
        return frozenset(item.lower() for item in ids)
