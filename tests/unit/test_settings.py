from __future__ import annotations

from pathlib import Path

import pytest

from handlers.core.errors import SettingsError
from handlers.core.hosting import DEFAULT_FUNCTION_TIMEOUT, TIMEOUT_SETTING, function_timeout_seconds
from handlers.core.settings import Settings, queue_names

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
CONFIG = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
          "Microsoft.Maintenance/maintenanceConfigurations/mc")


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.arm_endpoint == "https://management.azure.com"
    assert settings.arm_scope == "https://management.azure.com/.default"
    assert settings.dry_run is False and settings.start_vms and settings.restore_vms
    assert settings.cancel_on_failure is True
    assert settings.cutoff_safety_seconds == 120
    assert settings.parallelism == 32
    assert settings.opt_out_tag == "maintenance-opt-out"
    assert (settings.work_queue, settings.events_queue, settings.ledger_table) == (
        "maintenance-work", "maintenance-events", "MaintenanceRuns")
    assert settings.storage.connection_string is not None
    assert "127.0.0.1:10002" in settings.storage.connection_string
    assert settings.allows_configuration(CONFIG)


def test_sovereign_cloud_scope_follows_endpoint() -> None:
    settings = Settings.from_env({**BASE, "AZURE_RESOURCE_MANAGER_ENDPOINT": "https://management.usgovcloudapi.net/"})
    assert settings.arm_endpoint == "https://management.usgovcloudapi.net"
    assert settings.arm_scope == "https://management.usgovcloudapi.net/.default"


def test_identity_based_storage_forms() -> None:
    by_account = Settings.from_env({"AzureWebJobsStorage__accountName": "stmaint01"}).storage
    assert by_account.table_service_uri == "https://stmaint01.table.core.windows.net"
    assert by_account.queue_service_uri == "https://stmaint01.queue.core.windows.net"
    by_uri = Settings.from_env({
        "AzureWebJobsStorage__tableServiceUri": "https://x.table.core.usgovcloudapi.net",
        "AzureWebJobsStorage__queueServiceUri": "https://x.queue.core.usgovcloudapi.net",
        "AzureWebJobsStorage__clientId": "11111111-2222-3333-4444-555555555555",
    }).storage
    assert by_uri.table_service_uri == "https://x.table.core.usgovcloudapi.net"
    assert by_uri.client_id == "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MAINTENANCE_DRY_RUN", "maybe", "use true or false"),
        ("MAINTENANCE_PARALLELISM", "0", "use 1..256"),
        ("MAINTENANCE_PARALLELISM", "lots", "use 1..256"),
        ("MAINTENANCE_CUTOFF_SAFETY_SECONDS", "-5", "use 0..1800"),
        ("AZURE_RESOURCE_MANAGER_ENDPOINT", "http://management.azure.com", "https URL"),
        ("AZURE_CLIENT_ID", "not-a-guid", "GUID"),
        ("MAINTENANCE_WORK_QUEUE", "Work_Queue", "lower-case"),
        ("MAINTENANCE_LEDGER_TABLE", "runs-table", "letters and digits"),
        ("MAINTENANCE_ALLOWED_CONFIGURATION_IDS", "/subscriptions/x", "maintenance configuration id"),
        ("MAINTENANCE_CANCEL_API_VERSION", "latest", "api-version"),
    ],
)
def test_bad_values_name_the_setting_and_what_is_allowed(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({**BASE, name: value})
    assert raised.value.setting == name
    assert name in str(raised.value) and expected in str(raised.value)


def test_storage_is_required() -> None:
    with pytest.raises(SettingsError, match="AzureWebJobsStorage"):
        Settings.from_env({})


def test_allow_list_is_case_insensitive_and_accepts_several() -> None:
    other = CONFIG.replace("/mc", "/mc2")
    settings = Settings.from_env({**BASE, "MAINTENANCE_ALLOWED_CONFIGURATION_IDS": f"{CONFIG.upper()}, {other}"})
    assert settings.allows_configuration(CONFIG)
    assert settings.allows_configuration(other)
    assert not settings.allows_configuration(CONFIG.replace("/mc", "/mc3"))


def test_queue_names_for_bindings() -> None:
    assert queue_names({}) == ("maintenance-work", "maintenance-events")
    assert queue_names({"MAINTENANCE_WORK_QUEUE": "w-q"}) == ("w-q", "maintenance-events")


def test_snapshot_and_check_settings() -> None:
    settings = Settings.from_env(BASE)
    assert settings.snapshot_disks == "os" and settings.snapshot_incremental is True
    assert settings.snapshot_retention_days == 7 and settings.snapshot_resource_group is None
    assert settings.pre_checks == ("subscriptions-readable", "vms-running", "snapshots-succeeded", "no-hold-tag",
                                   "guest-actions")
    assert settings.hold_tag == "maintenance-hold" and settings.check_vm_agent is False
    chosen = Settings.from_env({**BASE, "MAINTENANCE_PRE_CHECKS": "no-hold-tag, http-probe",
                                "MAINTENANCE_HTTP_PROBE_URL": "https://app.example/ready"})
    assert chosen.pre_checks == ("no-hold-tag", "http-probe")
    assert Settings.from_env({**BASE, "MAINTENANCE_PRE_CHECKS": "none"}).pre_checks == ()


def test_lease_and_unchecked_run_settings() -> None:
    settings = Settings.from_env(BASE)
    assert settings.lease_seconds == 120 and settings.unchecked_run == "cancel"
    chosen = Settings.from_env({**BASE, "MAINTENANCE_LEASE_SECONDS": "30", "MAINTENANCE_UNCHECKED_RUN": "Report"})
    assert chosen.lease_seconds == 30 and chosen.unchecked_run == "report"


@pytest.mark.parametrize(
    ("env", "setting", "expected"),
    [
        ({"MAINTENANCE_PRE_CHECKS": "vms-running,disk-space"}, "MAINTENANCE_PRE_CHECKS",
         "valid names: subscriptions-readable, vms-running, snapshots-succeeded, no-hold-tag, guest-actions, "
         "http-probe"),
        ({"MAINTENANCE_PRE_CHECKS": "http-probe"}, "MAINTENANCE_HTTP_PROBE_URL", "required"),
        ({"MAINTENANCE_SNAPSHOT_DISKS": "some"}, "MAINTENANCE_SNAPSHOT_DISKS", "os, all, none"),
        ({"MAINTENANCE_SDK_LOG_LEVEL": "verbose"}, "MAINTENANCE_SDK_LOG_LEVEL", "debug, info, warning, error"),
        ({"MAINTENANCE_SNAPSHOT_RETENTION_DAYS": "0"}, "MAINTENANCE_SNAPSHOT_RETENTION_DAYS", "1..3650"),
        ({"MAINTENANCE_HTTP_PROBE_URL": "ftp://x"}, "MAINTENANCE_HTTP_PROBE_URL", "http(s) URL"),
        ({"MAINTENANCE_LEASE_SECONDS": "2"}, "MAINTENANCE_LEASE_SECONDS", "4..1800"),
        ({"MAINTENANCE_UNCHECKED_RUN": "ignore"}, "MAINTENANCE_UNCHECKED_RUN", "cancel, report"),
    ],
)
def test_bad_snapshot_and_check_settings(env: dict[str, str], setting: str, expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({**BASE, **env})
    assert raised.value.setting == setting and expected in str(raised.value)


def test_function_timeout_is_read_as_the_host_reads_it(tmp_path: Path) -> None:
    assert Settings.from_env(BASE).function_timeout_seconds == 30 * 60  # this app's host.json
    overridden = Settings.from_env({**BASE, "AzureFunctionsJobHost__functionTimeout": "01:00:00"})
    assert overridden.function_timeout_seconds == 3600
    assert overridden.invocation_budget_seconds == 3600 - 120
    host_json = tmp_path / "host.json"
    host_json.write_text('{"version": "2.0", "functionTimeout": "00:10:00"}')
    assert function_timeout_seconds({}, host_json) == 600
    host_json.write_text('{"version": "2.0", "functionTimeout": "-1"}')
    assert function_timeout_seconds({}, host_json) == DEFAULT_FUNCTION_TIMEOUT
    assert function_timeout_seconds({}, tmp_path / "missing.json") == DEFAULT_FUNCTION_TIMEOUT


@pytest.mark.parametrize(
    ("extra", "setting", "expected"),
    [
        ({"AzureFunctionsJobHost__functionTimeout": "half an hour"}, TIMEOUT_SETTING, "time span like 00:30:00"),
        ({"AzureFunctionsJobHost__functionTimeout": "00:00:05"}, TIMEOUT_SETTING, "under 10 seconds"),
        ({"AzureFunctionsJobHost__functionTimeout": "00:02:00"}, "MAINTENANCE_LEASE_SECONDS", "use 4..48"),
        ({"AzureFunctionsJobHost__functionTimeout": "00:00:30", "MAINTENANCE_LEASE_SECONDS": "10"},
         "MAINTENANCE_POLL_INTERVAL_SECONDS", "use 1..12"),
        ({"AzureFunctionsJobHost__functionTimeout": "00:01:00", "MAINTENANCE_LEASE_SECONDS": "10",
          "MAINTENANCE_PRE_CHECKS": "http-probe", "MAINTENANCE_HTTP_PROBE_URL": "https://app.example.test/ready",
          "MAINTENANCE_HTTP_PROBE_TIMEOUT_SECONDS": "30"}, "MAINTENANCE_HTTP_PROBE_TIMEOUT_SECONDS", "use 1..24"),
    ],
)
def test_a_wait_that_does_not_fit_in_an_invocation_is_refused(extra: dict[str, str], setting: str,
                                                                expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, **extra})
    assert caught.value.setting == setting and expected in str(caught.value)
