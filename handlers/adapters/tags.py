"""Tags on a machine, changed through the Tags API's merge (`Microsoft.Resources/tags/default`):
it touches no other tag and needs Tag Contributor, not write access to the VM."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from azure.core.exceptions import AzureError

from handlers.adapters.clients import ClientFactory
from handlers.adapters.operations import describe_error
from handlers.core.ids import subscription_of
from handlers.core.telemetry import InvocationPool


def merge_tags(clients: ClientFactory, changes: Sequence[tuple[str, Mapping[str, str]]], *, parallelism: int,
               log: logging.LoggerAdapter[Any]) -> dict[str, str]:
    """Merge each (resource id, tags) into the resource's tags; the errors by lower-cased id (each logged)."""

    def merge(change: tuple[str, Mapping[str, str]]) -> tuple[str, str]:
        resource_id, tags = change
        try:
            clients.resources(subscription_of(resource_id)).tags.begin_update_at_scope(
                resource_id, {"operation": "Merge", "properties": {"tags": dict(tags)}}).result()
        except AzureError as exc:
            log.warning("tagging %s failed: %s", resource_id, describe_error(exc))
            return resource_id.lower(), describe_error(exc)
        return resource_id.lower(), ""

    if not changes:
        return {}
    with InvocationPool(max_workers=max(1, min(parallelism, len(changes))), thread_name_prefix="tags") as pool:
        return {key: error for key, error in pool.map(merge, changes) if error}
