"""Typed reads from one JSON object of the config file, with errors that name the dotted key."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value we cannot use; `key` names it (dotted path)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config {key}: {problem}" if key else f"config: {problem}")


class Section:
    """One JSON object, remembering which keys were read so `reject_unknown()` can name the rest."""

    def __init__(self, raw: Any, prefix: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(prefix, "must be a JSON object")
        self._raw: dict[str, Any] = raw
        self._prefix = prefix
        self._used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def keys(self) -> list[str]:
        self._used.update(self._raw)
        return list(self._raw)

    def has(self, name: str) -> bool:
        return self._raw.get(name) is not None

    def get(self, name: str, default: Any = None) -> Any:
        self._used.add(name)
        value = self._raw.get(name, default)
        return default if value is None else value

    def section(self, name: str) -> Section | None:
        value = self.get(name)
        return None if value is None else Section(value, self.key(name))

    def items(self, name: str) -> list[tuple[Any, str]]:
        """A list value as (item, dotted key of the item); [] when absent."""
        value = self.get(name, [])
        if not isinstance(value, list):
            raise ConfigError(self.key(name), "must be a list")
        return [(item, f"{self.key(name)}[{index}]") for index, item in enumerate(value)]

    def text(self, name: str, default: str | None) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(self.key(name), "required: a non-empty string")
        return value.strip()

    def optional_text(self, name: str) -> str | None:
        value = self.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ConfigError(self.key(name), "must be a string")
        return value.strip() or None

    def texts(self, name: str, *, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """A list of non-empty strings (each one of `allowed`, when given); () when absent."""
        result = []
        for item, key in self.items(name):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(key, "must be a non-empty string")
            if allowed is not None and item not in allowed:
                raise ConfigError(key, f"must be one of {', '.join(allowed)}; got {item!r}")
            result.append(item.strip())
        return tuple(result)

    def url(self, name: str, default: str | None) -> str:
        value = self.text(name, default).rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ConfigError(self.key(name), f"must be an http:// or https:// URL, got {value!r}")
        return value

    def number(self, name: str, default: float, low: float, high: float, *, integer: bool = False) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and value != int(value)):
            raise ConfigError(self.key(name), f"must be {'an integer' if integer else 'a number'} from {low} to {high}")
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"must be from {low} to {high}, got {value}")
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), "must be true or false")
        return value

    def choice(self, name: str, default: str | None, allowed: tuple[str, ...]) -> Any:
        value = self.get(name, default)
        if value is None:
            return None
        if value not in allowed:
            raise ConfigError(self.key(name), f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def reject_unknown(self) -> None:
        unknown = sorted(set(self._raw) - self._used)
        if unknown:
            raise ConfigError(self.key(unknown[0]), f"unknown key; valid keys here: {', '.join(sorted(self._used))}")
