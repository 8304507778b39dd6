"""The Tags API on a VM or Arc machine: `{scope}/providers/Microsoft.Resources/tags/default`, PATCH and GET.

PATCH body `{"operation": "Merge" | "Replace" | "Delete", "properties": {"tags": {...}}}`, answered
200 synchronously with the tags after the change, as Azure does. Merge adds or overwrites the given
tags and keeps the others; Replace replaces them all; Delete removes each given tag whose value is
the given one (a tag with another value stays: "name/value pairs"). Tag names compare
case-insensitively, as in Azure: a Merge or Delete of `owner` hits `Owner`, which keeps its casing.
The tags are the machine's own (VM GET at once, Resource Graph after `graph_lag`).

Limits, on the given tags (Merge, Replace) and on the result (count): at most 50 tags, a name at most
512 characters without `<>%&\\?/` or control characters, a value at most 256 characters. Error codes:
InvalidTagNameCharacters (as Azure answers), InvalidTagNameLength, InvalidTagValueLength,
InvalidTagCount (those three: the emulator's names, not checked against Azure), MissingOperation,
InvalidRequestContent.
"""

from __future__ import annotations

import re
from typing import Any

from .ids import key
from .messages import ArmError, ArmRequest, Reply, error_reply
from .power import ArcMachine, VirtualMachine
from .routes import Route
from .state import EmulatorModel, TagChange

MAX_TAGS = 50
MAX_NAME = 512
MAX_VALUE = 256
OPERATIONS = ("Merge", "Replace", "Delete")
_BAD_NAME = re.compile(r"[<>%&\\?/\x00-\x1f\x7f]")


def _bad_request(code: str, message: str) -> Reply:
    return error_reply(400, ArmError(code, message))


def _machine(model: EmulatorModel, route: Route) -> VirtualMachine | ArcMachine | None:
    machine_key = key(route.machine_id)
    return model.arc_machines.get(machine_key) if route.arc else model.vms.get(machine_key)


def _not_found(route: Route) -> Reply:
    kind = "Microsoft.HybridCompute/machines" if route.arc else "Microsoft.Compute/virtualMachines"
    message = (f"The Resource '{kind}/{route.vm_name}' under resource group '{route.resource_group}' was not "
               "found. For more details please go to https://aka.ms/ARMResourceNotFound")  # fmt: skip
    return error_reply(404, ArmError("ResourceNotFound", message))


def _body(route: Route, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "id": f"{route.machine_id}/providers/Microsoft.Resources/tags/default",
        "type": "Microsoft.Resources/tags",
        "name": "default",
        "properties": {"tags": dict(tags)},
    }


def _parse(request: ArmRequest) -> tuple[str, dict[str, str]] | Reply:
    """(operation, tags) of a PATCH body, or the 400 answer."""
    try:
        body = request.json()
    except ValueError as err:
        return _bad_request("InvalidRequestContent", f"The request content could not be deserialized: {err}")
    if not isinstance(body, dict):
        return _bad_request("InvalidRequestContent", "The request content must be a JSON object.")
    operation = body.get("operation")
    if operation is None or operation == "":
        return _bad_request("MissingOperation", "The 'operation' property is required: Merge, Replace or Delete.")
    canonical = next((o for o in OPERATIONS if isinstance(operation, str) and o.lower() == operation.lower()), None)
    if canonical is None:
        return _bad_request("InvalidRequestContent", f"Unknown operation {operation!r}: Merge, Replace or Delete.")
    properties = body.get("properties")
    tags = properties.get("tags") if isinstance(properties, dict) else None
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        return _bad_request("InvalidRequestContent", "'properties.tags' must be an object of string values.")
    return canonical, tags


def _invalid(tags: dict[str, str]) -> Reply | None:
    """The 400 answer for tags Azure refuses, or None."""
    bad = [name for name in tags if _BAD_NAME.search(name)]
    if bad:
        return _bad_request("InvalidTagNameCharacters", f"The tag names '{', '.join(bad)}' have reserved characters "
                            "'<,>,%,&,\\,?,/' or control characters.")  # fmt: skip
    long_names = [name for name in tags if len(name) > MAX_NAME]
    if long_names:
        return _bad_request("InvalidTagNameLength", f"The tag name '{long_names[0][:40]}...' exceeds the maximum "
                            f"length of {MAX_NAME} characters.")  # fmt: skip
    long_values = [name for name, value in tags.items() if len(value) > MAX_VALUE]
    if long_values:
        return _bad_request("InvalidTagValueLength", f"The value of tag '{long_values[0]}' exceeds the maximum "
                            f"length of {MAX_VALUE} characters.")  # fmt: skip
    return None


def _find(tags: dict[str, str], name: str) -> str | None:
    """The existing name matching `name` case-insensitively, or None."""
    return next((existing for existing in tags if existing.lower() == name.lower()), None)


def apply(operation: str, current: dict[str, str], given: dict[str, str]) -> dict[str, str]:
    """The tags after `operation` with `given` on `current` (neither is changed)."""
    if operation == "Replace":
        return dict(given)
    after = dict(current)
    for name, value in given.items():
        existing = _find(after, name)
        if operation == "Merge":
            after[existing or name] = value
        elif existing is not None and after[existing] == value:
            del after[existing]
    return after


def get_tags(model: EmulatorModel, request: ArmRequest, route: Route) -> Reply:
    """GET {scope}/providers/Microsoft.Resources/tags/default."""
    machine = _machine(model, route)
    return _not_found(route) if machine is None else Reply(200, _body(route, machine.tags))


def patch_tags(model: EmulatorModel, request: ArmRequest, route: Route) -> Reply:
    """PATCH {scope}/providers/Microsoft.Resources/tags/default: Merge, Replace or Delete."""
    machine = _machine(model, route)
    if machine is None:
        return _not_found(route)
    parsed = _parse(request)
    if isinstance(parsed, Reply):
        return parsed
    operation, given = parsed
    refusal = None if operation == "Delete" else _invalid(given)
    if refusal is not None:
        return refusal
    after = apply(operation, machine.tags, given)
    if len(after) > MAX_TAGS:
        return _bad_request("InvalidTagCount", f"The resource would have {len(after)} tags; at most {MAX_TAGS} "
                            "are allowed.")  # fmt: skip
    now = model.clock.now()
    model.record_tags(machine.id, machine.tags, after, now)
    machine.tags = after
    model.tag_change_log.append(TagChange(now, machine.id, operation, dict(given)))
    return Reply(200, _body(route, after))


class TagApi(EmulatorModel):
    """Mixed into AzureEmulator: what the Tags API was asked to change."""

    def tag_changes(self, machine_id: str | None = None) -> list[TagChange]:
        """Every accepted Tags API PATCH, of one machine (None: all), oldest first: (time in simulated
        seconds, machine id, operation, the tags given)."""
        with self.lock:
            wanted = key(machine_id) if machine_id else None
            return [c for c in self.tag_change_log if wanted is None or key(c.machine_id) == wanted]
