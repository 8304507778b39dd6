"""ARM resource ids: case-insensitive keys and parsing."""

from __future__ import annotations

import re

# The tenant of every emulated resource (Resource Graph's `tenantId` column).
TENANT_ID = "00000000-0000-0000-0000-0000000000e1"

_RESOURCE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
    r"/providers/(?P<ns>[^/]+)/(?P<type>[^/]+)/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


def key(resource_id: str) -> str:
    """ARM ids compare case-insensitively; this is the dictionary key for one."""
    return resource_id.rstrip("/").lower()


def parse_resource_id(resource_id: str) -> dict[str, str]:
    """Split a top-level ARM resource id into sub, rg, ns, type, name."""
    match = _RESOURCE_ID.match(resource_id.rstrip("/"))
    if not match:
        raise ValueError(f"not a top-level ARM resource id: {resource_id!r}")
    return match.groupdict()
