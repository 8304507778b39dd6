"""The tags that ask for work inside a machine's guest, read strictly.

Whoever can tag a machine chooses what runs in it, so nothing from a tag reaches a script but
names that match a strict pattern: service names go into a script as single-quoted literals (the
pattern admits no quote, space or backslash), a script tag only picks a file of the operator's
catalogue, and a wave is a small whole number. A value that does not match fails that machine,
with the reason; it is never cleaned up into something that does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

STOP_SERVICES_TAG = "maintenance-stop-services"
PRE_SCRIPT_TAG = "maintenance-pre-script"
POST_SCRIPT_TAG = "maintenance-post-script"
WAVE_TAG = "maintenance-wave"
AFTER_TAG = "maintenance-after"  # what to do with the machine after patching, whatever its state before
AFTER_ACTIONS = ("restore", "deallocate", "stop", "leave-running")
GUEST_TAGS = (STOP_SERVICES_TAG, PRE_SCRIPT_TAG, POST_SCRIPT_TAG)

# Windows service names (MSSQLSERVER, MSSQL$SQLEXPRESS, W3SVC) and systemd unit names (nginx,
# myapp.service, getty@tty1.service): letters, digits and _ . @ : + - $. `$` is literal inside the
# single quotes both shells get; nothing here can end a quoted string.
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:+$-]{0,127}")
SCRIPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_SERVICES = 32
MAX_WAVE = 99


class GuestTagError(ValueError):
    """A guest tag whose value is refused; the message names the tag and what is allowed."""


@dataclass(frozen=True)
class GuestTags:
    """What a machine's tags ask of its guest (empty: nothing)."""

    services: tuple[str, ...] = ()  # stop in this order before, start in reverse after
    pre_script: str = ""
    post_script: str = ""
    wave: int | None = None  # None: no wave tag (the first wave)

    @property
    def any(self) -> bool:
        return bool(self.services or self.pre_script or self.post_script)


def _tag(tags: Mapping[str, str], name: str) -> str | None:
    """A tag's value (tag names are case-insensitive in Azure), stripped; None when absent or blank."""
    for key, value in tags.items():
        if str(key).lower() == name:
            text = str(value).strip()
            return text or None
    return None


def parse_services(value: str) -> tuple[str, ...]:
    names = [part.strip() for part in value.split(",")]
    if any(not name for name in names):
        raise GuestTagError(f"{STOP_SERVICES_TAG}={value!r}: an empty name in the list; "
                            "give comma-separated service names like MSSQLSERVER,W3SVC")
    bad = [name for name in names if not SERVICE_NAME.fullmatch(name)]
    if bad:
        raise GuestTagError(f"{STOP_SERVICES_TAG}: {bad[0]!r} is not a service name (letters, digits and "
                            "_ . @ : + - $, at most 128, starting with a letter or digit); nothing was sent")
    if len(names) > MAX_SERVICES:
        raise GuestTagError(f"{STOP_SERVICES_TAG}: {len(names)} services; at most {MAX_SERVICES}")
    return tuple(dict.fromkeys(names))


def parse_script_name(tag: str, value: str) -> str:
    if not SCRIPT_NAME.fullmatch(value):
        raise GuestTagError(f"{tag}={value!r} is not a script name of the catalogue (letters, digits, _ and -, "
                            "at most 64; the file is <name>.sh or <name>.ps1)")
    return value


def parse_wave(value: str) -> int:
    if not re.fullmatch(r"\d{1,2}", value):
        raise GuestTagError(f"{WAVE_TAG}={value!r} is not a wave; use a whole number 0..{MAX_WAVE}")
    return int(value)


def read_guest_tags(tags: Mapping[str, str]) -> GuestTags:
    """The guest tags of a machine; raises GuestTagError for the first refused value."""
    services = _tag(tags, STOP_SERVICES_TAG)
    pre, post, wave = _tag(tags, PRE_SCRIPT_TAG), _tag(tags, POST_SCRIPT_TAG), _tag(tags, WAVE_TAG)
    return GuestTags(
        services=parse_services(services) if services else (),
        pre_script=parse_script_name(PRE_SCRIPT_TAG, pre) if pre else "",
        post_script=parse_script_name(POST_SCRIPT_TAG, post) if post else "",
        wave=parse_wave(wave) if wave is not None else None,
    )


def wave_of(tags: Mapping[str, str]) -> int | None:
    """The wave tag alone, for ordering (an invalid one counts as none; its machine fails elsewhere)."""
    value = _tag(tags, WAVE_TAG)
    try:
        return parse_wave(value) if value is not None else None
    except GuestTagError:
        return None


def after_of(tags: Mapping[str, str]) -> tuple[str, str]:
    """(action, refusal): the `maintenance-after` tag's action ("" without the tag), or ("", why)
    for a value that is not one of AFTER_ACTIONS (the machine is then put back as it was)."""
    value = _tag(tags, AFTER_TAG)
    if value is None:
        return "", ""
    if value.lower() in AFTER_ACTIONS:
        return value.lower(), ""
    return "", (f"{AFTER_TAG}={value!r} is not one of {', '.join(AFTER_ACTIONS)}: "
                "the machine is put back as it was before the window")
