"""ARM resource ids: the one parser (on azure-mgmt-core's `parse_resource_id`) and the strict
shapes an id must have before it reaches a URL or a query.

ARM ids are case-insensitive: what is compared or keyed is lower-cased here (subscriptions), and
names keep the casing they were given (they go back to ARM as they came).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Dots only between other characters (no leading or trailing dot, no ".."), so no segment can be
# "." or "..". re.ASCII: nothing may need percent-encoding in a URL.
RESOURCE_GROUP = r"[-\w()]+(?:\.[-\w()]+)*"
NAME = r"[-\w]+(?:\.[-\w]+)*"
MAX_RESOURCE_GROUP, MAX_NAME = 90, 260
# Only the fixed segments are case-insensitive (provider casing varies).
CONFIGURATION_ID = (
    rf"/(?i:subscriptions)/(?P<subscription>{GUID})/(?i:resourceGroups)/(?P<rg>{RESOURCE_GROUP})"
    rf"/(?i:providers/Microsoft\.Maintenance/maintenanceConfigurations)/(?P<name>{NAME})"
)
CONFIGURATION_ID_RE = re.compile(CONFIGURATION_ID, re.ASCII)
RUN_ID_RE = re.compile(
    rf"(?P<config>{CONFIGURATION_ID})/(?i:providers/Microsoft\.Maintenance/applyUpdates)/(?P<run>[0-9]{{14}})",
    re.ASCII,
)
# A machine (or any top-level resource) id as the toolkit acts on it: what reaches a URL.
_TOP_LEVEL = re.compile(
    r"/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[-\w.()]{1,90}/providers/[\w.]+/\w+/[-\w.]{1,80}",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ArmId:
    """A parsed ARM id. `type` is the namespace and type of the resource the id names, lower-case
    (for a child resource, the last child's)."""

    id: str
    subscription: str  # lower-case; "" when the id names none
    resource_group: str
    namespace: str
    type: str
    name: str


def parse_arm_id(resource_id: str) -> ArmId:
    """Parse any ARM id (or the path of an ARM URL). Parts the id lacks are ""."""
    # Imported here: the event functions' cold start (which reads the patterns above) does not
    # need azure-mgmt-core's pipeline, which importing its tools module brings in.
    from azure.mgmt.core.tools import parse_resource_id

    parts = parse_resource_id(resource_id.rstrip("/"))
    namespace = str(parts.get("resource_namespace") or parts.get("namespace") or "")
    kind = str(parts.get("resource_type") or parts.get("type") or "")
    name = str(parts.get("resource_name") or parts.get("name") or "") if "subscription" in parts else ""
    return ArmId(resource_id, str(parts.get("subscription") or "").lower(), str(parts.get("resource_group") or ""),
                 namespace, f"{namespace}/{kind}".lower() if namespace else "", name)


def subscription_of(resource_id: str) -> str:
    """The subscription of an ARM id, lower-case ("" when it names none): the lane of a request
    on that resource (ARM's write bucket is per subscription for one caller)."""
    return parse_arm_id(resource_id).subscription


def subscription_of_url(url: str) -> str:
    """The subscription an ARM request URL acts in ("" for none)."""
    return subscription_of(urlsplit(url).path) if "/subscriptions/" in url.lower() else ""


def resource_group_of(resource_id: str) -> str:
    return parse_arm_id(resource_id).resource_group


def name_of(resource_id: str) -> str:
    """The last segment: the name of the resource the id names."""
    return resource_id.rstrip("/").rsplit("/", 1)[-1]


def is_top_level_resource_id(resource_id: str) -> bool:
    """The strict shape of a resource id we send requests for (no `..`, nothing to escape)."""
    return _TOP_LEVEL.fullmatch(resource_id) is not None and ".." not in resource_id


def is_configuration_id(value: str) -> bool:
    """A maintenance configuration id of the shape events carry (and so ARM paths take)."""
    match = CONFIGURATION_ID_RE.fullmatch(value)
    return match is not None and len(match["rg"]) <= MAX_RESOURCE_GROUP and len(match["name"]) <= MAX_NAME


def configuration_name_of(correlation_id: str) -> str:
    """The maintenance configuration's name in a run's correlation id, as the event spells the
    segment ("" otherwise: ledger keys are made from it and must never change)."""
    return correlation_id.split("/maintenanceConfigurations/", 1)[-1].split("/", 1)[0]
