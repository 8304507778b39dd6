"""App settings, read once from the environment into one frozen, validated object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from handlers.core.errors import SettingsError
from handlers.core.hosting import TIMEOUT_SETTING, function_timeout_seconds, invocation_budget_seconds
from handlers.core.output_settings import (
    HealthSettings,
    HoldSettings,
    NotifySettings,
    read_health,
    read_hold,
    read_notify,
)
from handlers.core.setting_reader import DEFAULT_ARM_ENDPOINT, Reader

DEFAULT_CANCEL_API_VERSION = "2023-09-01-preview"

# Azurite's documented development account; "UseDevelopmentStorage=true" is a shorthand the
# Functions host understands but the storage SDKs do not, so we expand it ourselves.
_DEV_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)

_QUEUE_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_TAG_NAME = re.compile(r"^[^<>%&\\?/]{1,512}$")
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_RG_NAME = re.compile(r"^[-\w.()]{0,89}[-\w()]$")
CHECK_NAMES = ("subscriptions-readable", "vms-running", "snapshots-succeeded", "no-hold-tag", "guest-actions",
               "http-probe")
DEFAULT_CHECKS = ("subscriptions-readable", "vms-running", "snapshots-succeeded", "no-hold-tag", "guest-actions")
# What the `tags` step stamps on each machine after a run: tag name -> what its value is.
RESULT_TAG_FIELDS = ("run-time", "run-id", "patch-status", "verdict", "reboot")
DEFAULT_RESULT_TAGS = (("maintenance-last-run", "run-time"), ("maintenance-last-status", "patch-status"))
_FOLDER = re.compile(r"^(?!.*\.\.)[^\0]{1,260}$")
_CONTAINER_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
UNCHECKED_RUN_ACTIONS = ("cancel", "report")
SNAPSHOT_SCOPES = ("os", "all", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class StorageSettings:
    """Where the ledger table and the work queues live (the Functions host's own storage)."""

    connection_string: str | None
    table_service_uri: str | None
    queue_service_uri: str | None
    client_id: str | None
    blob_service_uri: str | None = None


@dataclass(frozen=True)
class Settings:
    """Every app setting the toolkit reads; see the README table for meanings and defaults."""

    arm_endpoint: str
    client_id: str | None
    storage: StorageSettings
    dry_run: bool
    start_vms: bool
    restore_vms: bool
    parallelism: int
    opt_out_tag: str
    cancel_on_failure: bool
    cutoff_safety_seconds: int
    restore_timeout_seconds: int
    poll_interval_seconds: int
    arm_retries: int
    cancel_api_version: str
    allowed_configuration_ids: frozenset[str]
    work_queue: str
    events_queue: str
    ledger_table: str
    snapshot_disks: str
    snapshot_incremental: bool
    snapshot_resource_group: str | None
    snapshot_retention_days: int
    pre_checks: tuple[str, ...]
    hold_tag: str
    check_vm_agent: bool
    http_probe_url: str | None
    http_probe_timeout_seconds: int
    sdk_log_level: str = "warning"
    subscriptions_per_worker: int = 4
    lease_seconds: int = 120
    unchecked_run: str = "cancel"
    missed_pre_grace_minutes: int = 5
    function_timeout_seconds: int = 1800  # the host's functionTimeout (handlers.core.hosting)
    guest_actions: bool = True  # in-guest actions by tag (handlers.core.guest_tags)
    script_timeout_seconds: int = 600
    script_folder: str = "scripts"
    script_container: str | None = None
    patch_results_wait_seconds: int = 900
    report_container: str = "reports"
    handoff_container: str = "handoffs"
    result_tags: tuple[tuple[str, str], ...] = DEFAULT_RESULT_TAGS
    notify: NotifySettings = NotifySettings()
    hold: HoldSettings = HoldSettings()
    health: HealthSettings = HealthSettings()

    @property
    def invocation_budget_seconds(self) -> float:
        """How long one invocation's steps may wait before the phase goes on in another."""
        return invocation_budget_seconds(self.function_timeout_seconds)

    @property
    def arm_scope(self) -> str:
        """The token scope follows the endpoint, so sovereign clouds work unchanged."""
        return f"{self.arm_endpoint}/.default"

    def allows_configuration(self, configuration_id: str) -> bool:
        return not self.allowed_configuration_ids or configuration_id.lower() in self.allowed_configuration_ids

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raises SettingsError naming the first bad one."""
        env = os.environ if environ is None else environ
        reader = Reader(env)
        notify = read_notify(reader)
        return cls(
            arm_endpoint=reader.https_url("AZURE_RESOURCE_MANAGER_ENDPOINT", DEFAULT_ARM_ENDPOINT),
            client_id=reader.optional_guid("AZURE_CLIENT_ID"),
            storage=_storage_settings(reader),
            dry_run=reader.boolean("MAINTENANCE_DRY_RUN", False),
            start_vms=reader.boolean("MAINTENANCE_START_VMS", True),
            restore_vms=reader.boolean("MAINTENANCE_RESTORE_VMS", True),
            parallelism=reader.integer("MAINTENANCE_PARALLELISM", 32, 1, 256),
            opt_out_tag=reader.matching("MAINTENANCE_OPT_OUT_TAG", "maintenance-opt-out", _TAG_NAME,
                                        "a tag name without < > % & \\ ? /"),
            cancel_on_failure=reader.boolean("MAINTENANCE_CANCEL_ON_FAILURE", True),
            cutoff_safety_seconds=reader.integer("MAINTENANCE_CUTOFF_SAFETY_SECONDS", 120, 0, 1800),
            restore_timeout_seconds=reader.integer("MAINTENANCE_RESTORE_TIMEOUT_SECONDS", 1200, 10, 7200),
            poll_interval_seconds=reader.integer("MAINTENANCE_POLL_INTERVAL_SECONDS", 15, 1, 120),
            arm_retries=reader.integer("MAINTENANCE_ARM_RETRIES", 10, 0, 50),
            cancel_api_version=reader.matching("MAINTENANCE_CANCEL_API_VERSION", DEFAULT_CANCEL_API_VERSION,
                                               _API_VERSION, "an api-version like 2023-09-01-preview"),
            allowed_configuration_ids=reader.configuration_ids("MAINTENANCE_ALLOWED_CONFIGURATION_IDS"),
            work_queue=reader.matching("MAINTENANCE_WORK_QUEUE", "maintenance-work", _QUEUE_NAME,
                                       "3-63 lower-case letters, digits and single hyphens"),
            events_queue=reader.matching("MAINTENANCE_EVENTS_QUEUE", "maintenance-events", _QUEUE_NAME,
                                         "3-63 lower-case letters, digits and single hyphens"),
            ledger_table=reader.matching("MAINTENANCE_LEDGER_TABLE", "MaintenanceRuns", _TABLE_NAME,
                                         "3-63 letters and digits, starting with a letter"),
            snapshot_disks=reader.choice("MAINTENANCE_SNAPSHOT_DISKS", "os", SNAPSHOT_SCOPES),
            snapshot_incremental=reader.boolean("MAINTENANCE_SNAPSHOT_INCREMENTAL", True),
            snapshot_resource_group=reader.optional_matching(
                "MAINTENANCE_SNAPSHOT_RESOURCE_GROUP", _RG_NAME, "a resource group name (1-90 characters)"),
            snapshot_retention_days=reader.integer("MAINTENANCE_SNAPSHOT_RETENTION_DAYS", 7, 1, 3650),
            pre_checks=reader.names("MAINTENANCE_PRE_CHECKS", DEFAULT_CHECKS, CHECK_NAMES),
            hold_tag=reader.matching("MAINTENANCE_HOLD_TAG", "maintenance-hold", _TAG_NAME,
                                     "a tag name without < > % & \\ ? /"),
            check_vm_agent=reader.boolean("MAINTENANCE_CHECK_VM_AGENT", False),
            http_probe_url=reader.optional_url("MAINTENANCE_HTTP_PROBE_URL"),
            http_probe_timeout_seconds=reader.integer("MAINTENANCE_HTTP_PROBE_TIMEOUT_SECONDS", 10, 1, 120),
            sdk_log_level=reader.choice("MAINTENANCE_SDK_LOG_LEVEL", "warning", LOG_LEVELS),
            subscriptions_per_worker=reader.integer("MAINTENANCE_SUBSCRIPTIONS_PER_WORKER", 4, 1, 64),
            lease_seconds=reader.integer("MAINTENANCE_LEASE_SECONDS", 120, 4, 1800),
            unchecked_run=reader.choice("MAINTENANCE_UNCHECKED_RUN", "cancel", UNCHECKED_RUN_ACTIONS),
            missed_pre_grace_minutes=reader.integer("MAINTENANCE_MISSED_PRE_GRACE_MINUTES", 5, 1, 120),
            function_timeout_seconds=function_timeout_seconds(env),
            guest_actions=reader.boolean("MAINTENANCE_GUEST_ACTIONS", True),
            script_timeout_seconds=reader.integer("MAINTENANCE_SCRIPT_TIMEOUT_SECONDS", 600, 30, 3600),
            script_folder=reader.matching("MAINTENANCE_SCRIPT_FOLDER", "scripts", _FOLDER,
                                          "a folder path without .. (relative to the app's root, or absolute)"),
            script_container=reader.optional_matching("MAINTENANCE_SCRIPT_CONTAINER", _CONTAINER_NAME,
                                                      "a blob container name (3-63 lower-case letters, digits, -)"),
            patch_results_wait_seconds=reader.integer("MAINTENANCE_PATCH_RESULTS_WAIT_SECONDS", 900, 0, 7200),
            result_tags=_result_tags(reader),
            report_container=reader.matching("MAINTENANCE_REPORT_CONTAINER", "reports", _CONTAINER_NAME,
                                             "a blob container name (3-63 lower-case letters, digits, -)"),
            handoff_container=reader.matching("MAINTENANCE_HANDOFF_CONTAINER", "handoffs", _CONTAINER_NAME,
                                              "a blob container name (3-63 lower-case letters, digits, -)"),
            notify=notify,
            hold=read_hold(reader, notify),
            health=read_health(reader),
        )._validated()

    def _validated(self) -> Settings:
        for checks in ("MAINTENANCE_PRE_CHECKS", "MAINTENANCE_POST_CHECKS"):
            chosen = self.pre_checks if checks == "MAINTENANCE_PRE_CHECKS" else self.health.checks
            if "http-probe" in chosen and not self.http_probe_url:
                raise SettingsError("MAINTENANCE_HTTP_PROBE_URL", f"required when {checks} includes http-probe")
        if self.hold.key is not None and "no-hold-tag" not in self.pre_checks:
            raise SettingsError("MAINTENANCE_PRE_CHECKS", "must include no-hold-tag while MAINTENANCE_HOLD_KEY is "
                                "set: the hold and approve links take effect through that check")
        if self.script_container and not (self.storage.connection_string or self.storage.blob_service_uri):
            raise SettingsError("MAINTENANCE_SCRIPT_CONTAINER", "needs the app's blob endpoint: set "
                                "AzureWebJobsStorage__blobServiceUri (or __accountName)")
        # Waits inside one invocation must fit in it, with room for the wait's own work.
        budget = int(self.invocation_budget_seconds)
        for name, seconds, lowest, longest in (
            ("MAINTENANCE_POLL_INTERVAL_SECONDS", self.poll_interval_seconds, 1, 120),
            ("MAINTENANCE_HTTP_PROBE_TIMEOUT_SECONDS",
             self.http_probe_timeout_seconds if "http-probe" in (*self.pre_checks, *self.health.checks) else 0, 1, 120),
            ("MAINTENANCE_LEASE_SECONDS", self.lease_seconds, 4, 1800),
        ):
            if seconds * 2 > budget:
                raise SettingsError(name, f"{seconds} s does not fit twice in one invocation's "
                                    f"{budget} s (functionTimeout {self.function_timeout_seconds} s, from "
                                    f"host.json or {TIMEOUT_SETTING}); use {lowest}..{min(longest, budget // 2)}")
        return self


def _result_tags(reader: Reader) -> tuple[tuple[str, str], ...]:
    """MAINTENANCE_RESULT_TAGS: `name=field,...` (fields RESULT_TAG_FIELDS), or `none`."""
    name = "MAINTENANCE_RESULT_TAGS"
    value = reader.raw(name)
    if value is None:
        return DEFAULT_RESULT_TAGS
    if value.lower() == "none":
        return ()
    pairs = []
    for item in (part.strip() for part in value.split(",") if part.strip()):
        tag, _, field = item.partition("=")
        if not _TAG_NAME.fullmatch(tag.strip()) or field.strip().lower() not in RESULT_TAG_FIELDS:
            raise SettingsError(name, f"{item!r} is not name=field with a tag name (no < > % & \\ ? /) and a "
                                f"field among {', '.join(RESULT_TAG_FIELDS)}; or none")
        pairs.append((tag.strip(), field.strip().lower()))
    return tuple(pairs)


def queue_names(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(work queue, events queue): the trigger bindings need them when the app is indexed."""
    env = os.environ if environ is None else environ
    reader = Reader(env)
    rule = "3-63 lower-case letters, digits and single hyphens"
    return (
        reader.matching("MAINTENANCE_WORK_QUEUE", "maintenance-work", _QUEUE_NAME, rule),
        reader.matching("MAINTENANCE_EVENTS_QUEUE", "maintenance-events", _QUEUE_NAME, rule),
    )


def _storage_settings(reader: Reader) -> StorageSettings:
    connection = reader.raw("AzureWebJobsStorage")
    account = reader.raw("AzureWebJobsStorage__accountName")
    table_uri = reader.raw("AzureWebJobsStorage__tableServiceUri")
    queue_uri = reader.raw("AzureWebJobsStorage__queueServiceUri")
    blob_uri = reader.raw("AzureWebJobsStorage__blobServiceUri")
    client_id = reader.optional_guid("AzureWebJobsStorage__clientId")
    if connection:
        if connection.strip().lower().rstrip(";") == "usedevelopmentstorage=true":
            connection = _DEV_STORAGE
        elif "accountname=" not in connection.lower() and "endpoint=" not in connection.lower():
            raise SettingsError("AzureWebJobsStorage", "not a storage connection string "
                                "(expected AccountName=...;AccountKey=... or UseDevelopmentStorage=true)")
        return StorageSettings(connection, None, None, client_id)
    if account and not (table_uri and queue_uri):
        if not re.fullmatch(r"[a-z0-9]{3,24}", account):
            raise SettingsError("AzureWebJobsStorage__accountName", "3-24 lower-case letters and digits")
        table_uri = table_uri or f"https://{account}.table.core.windows.net"
        queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
    if account and not blob_uri:
        blob_uri = f"https://{account}.blob.core.windows.net"
    if not (table_uri and queue_uri):
        raise SettingsError(
            "AzureWebJobsStorage",
            "not set: give a connection string, AzureWebJobsStorage__accountName, or both "
            "AzureWebJobsStorage__tableServiceUri and AzureWebJobsStorage__queueServiceUri",
        )
    table_uri = reader.check_https("AzureWebJobsStorage__tableServiceUri", table_uri)
    queue_uri = reader.check_https("AzureWebJobsStorage__queueServiceUri", queue_uri)
    blob_uri = reader.check_https("AzureWebJobsStorage__blobServiceUri", blob_uri) if blob_uri else None
    return StorageSettings(None, table_uri, queue_uri, client_id, blob_uri)
