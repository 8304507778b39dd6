"""Azure RBAC on the emulated ARM calls: the action each request needs, and ARM's 403 when no role
assignment grants it at the request's scope.

Nothing is checked until a test grants something (`AzureEmulator.grant`): then a request is allowed
only when a grant whose scope contains the request's resource lists its action (a pattern, as in a
role definition: `*` matches anything, `*/read` is Reader; actions compare case-insensitively).
Resource Graph is not checked here: it answers every caller, with what the caller can read
(`readable_subscriptions`). Every action asked for is counted (`actions_called`), granted or not.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .messages import ArmError, Reply, error_reply
from .routes import Route

# The emulator's identity, as ARM's message names it.
_CLIENT = "00000000-0000-0000-0000-00000000c11e"
_VM = "Microsoft.Compute/virtualMachines"
_ARC = "Microsoft.HybridCompute/machines"
_BY_ROUTE = {
    "vm.get": f"{_VM}/read",
    "vm.instanceView": f"{_VM}/instanceView/read",
    "operation": "Microsoft.Compute/locations/operations/read",
    "diskOperation": "Microsoft.Compute/locations/diskOperations/read",
    "arcOperation": "Microsoft.HybridCompute/locations/operationStatus/read",
    "disk.get": "Microsoft.Compute/disks/read",
    "snapshot.get": "Microsoft.Compute/snapshots/read",
    "snapshot.put": "Microsoft.Compute/snapshots/write",
    "snapshot.delete": "Microsoft.Compute/snapshots/delete",
    "tags.patch": "Microsoft.Resources/tags/write",
    "tags.get": "Microsoft.Resources/tags/read",
    "cancel": "Microsoft.Maintenance/applyUpdates/write",
    "run.get": "Microsoft.Maintenance/applyUpdates/read",
}
_RUN_COMMAND_VERBS = {"runCommand.put": "write", "runCommand.get": "read", "runCommand.delete": "delete"}


@dataclass(frozen=True)
class Grant:
    """One role assignment: the actions of its role at a scope (and everything under it)."""

    scope: str
    actions: tuple[str, ...]

    def covers(self, scope: str, action: str) -> bool:
        own = self.scope.rstrip("/").lower()
        target = scope.lower()
        inside = own == "" or target == own or target.startswith(own + "/")
        return inside and any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in self.actions)


def action_of(route: Route) -> str | None:
    """The RBAC action `route` needs; None for Resource Graph (checked by what it returns)."""
    if route.name == "vm.action":
        return f"{_VM}/{route.action}/action"
    if route.name in _RUN_COMMAND_VERBS:
        return f"{_ARC if route.arc else _VM}/runCommands/{_RUN_COMMAND_VERBS[route.name]}"
    return _BY_ROUTE.get(route.name)


def scope_of(route: Route, path: str) -> str:
    """The resource the request acts on (the operation of a status poll: its subscription's path)."""
    return "/" + (route.resource_id or path).strip("/")


def refused(grants: Sequence[Grant] | None, route: Route, path: str) -> tuple[str, Reply | None]:
    """(the action, ARM's 403 AuthorizationFailed when no grant covers it, else None)."""
    action = action_of(route)
    if action is None or grants is None:
        return action or "", None
    scope = scope_of(route, path)
    if any(grant.covers(scope, action) for grant in grants):
        return action, None
    message = (f"The client '{_CLIENT}' with object id '{_CLIENT}' does not have authorization to perform action "
               f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please "
               "refresh your credentials.")
    return action, error_reply(403, ArmError("AuthorizationFailed", message))


def grant(grants: list[Grant] | None, scope: str, actions: Iterable[str]) -> list[Grant]:
    """`grants` with one more assignment."""
    listed = tuple(actions)
    if not listed:
        raise ValueError("a grant needs at least one action")
    return [*(grants or []), Grant(scope, listed)]
