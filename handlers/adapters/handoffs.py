"""What a split run's coordinator hands each group of subscriptions: the group's machines and
what Resource Graph said of them, one blob per group in the app's storage.

Resource Graph's quota (about 15 queries per 5 s) belongs to the app's identity, not to a
worker: groups that each found their machines again would share it across instances and be
throttled. The coordinator asks once for the whole run (the pages the run needs and no more)
and the groups read their part from storage. A group that finds no hand-off, or one it cannot
read, asks Resource Graph itself: the hand-off saves queries, it is never the only way.

Blobs are `<run key>/<group phase>.json.gz` in MAINTENANCE_HANDOFF_CONTAINER; the run's verdict
deletes them once the groups are done with them.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from handlers.adapters.inventory import DiskRef, MachineKind, RunMachine, VmView
from handlers.core.keys import run_key

HANDOFF_VERSION = 1


def handoff_name(correlation_id: str, phase: str) -> str:
    return f"{run_key(correlation_id)}/{phase}.json.gz"


def write_handoff(container: ContainerClient, correlation_id: str, phase: str,
                  machines: Sequence[RunMachine], views: Mapping[str, VmView]) -> None:
    """Store one group's machines and the views of those of them Resource Graph showed."""
    body = {
        "version": HANDOFF_VERSION,
        "correlationId": correlation_id,
        "machines": [[m.resource_id, m.kind.value, m.subscription_id, m.resource_group, m.name] for m in machines],
        "views": [asdict(view) for m in machines if (view := views.get(m.resource_id.lower())) is not None],
    }
    data = gzip.compress(json.dumps(body, separators=(",", ":")).encode("utf-8"), compresslevel=6)
    try:
        container.upload_blob(handoff_name(correlation_id, phase), data, overwrite=True)
    except ResourceNotFoundError:  # the container is created on first use
        try:
            container.create_container()
        except ResourceExistsError:
            pass
        container.upload_blob(handoff_name(correlation_id, phase), data, overwrite=True)


def read_handoff(container: ContainerClient, correlation_id: str,
                 phase: str) -> tuple[list[RunMachine], dict[str, VmView]] | None:
    """One group's hand-off; None when there is none. Raises ValueError for one that is not
    what `write_handoff` stores for this run (the caller asks Resource Graph instead)."""
    try:
        data = container.download_blob(handoff_name(correlation_id, phase)).readall()
    except ResourceNotFoundError:
        return None
    try:
        body = json.loads(gzip.decompress(data))
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"not a gzip-compressed JSON document ({exc})") from exc
    if not isinstance(body, dict) or body.get("version") != HANDOFF_VERSION:
        raise ValueError(f"version {body.get('version') if isinstance(body, dict) else None!r}, "
                         f"expected {HANDOFF_VERSION}")
    if str(body.get("correlationId", "")).lower() != correlation_id.lower():
        raise ValueError("it names another run")
    try:
        machines = [RunMachine(str(i), MachineKind(str(k)), str(s), str(g), str(n))
                    for i, k, s, g, n in body["machines"]]
        views = {str(v["resource_id"]).lower(): _view(v) for v in body["views"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"a machine or view that does not parse ({exc!r})") from exc
    return machines, views


def delete_handoffs(container: ContainerClient, correlation_id: str) -> int:
    """Delete the run's hand-offs (none is fine); how many there were."""
    try:
        names = [blob.name for blob in container.list_blobs(name_starts_with=f"{run_key(correlation_id)}/")]
    except ResourceNotFoundError:  # no container: nothing was handed off
        return 0
    for name in names:
        try:
            container.delete_blob(name)
        except ResourceNotFoundError:
            pass
    return len(names)


def _view(value: dict[str, Any]) -> VmView:
    disks: Iterable[dict[str, Any]] = value.get("disks") or ()
    return VmView(**{**value, "tags": {str(k): str(v) for k, v in (value.get("tags") or {}).items()},
                     "disks": tuple(DiskRef(**disk) for disk in disks)})
