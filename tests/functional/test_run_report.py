"""After the window, through the registered functions: each machine's patch results read from
Resource Graph (waiting out its lag), and the run's report written to the app's storage."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from azure.storage.blob import BlobClient

from emulator import AzureEmulator
from emulator.functions_host import FunctionsHost
from handlers.ledger import Ledger, MachineRecord
from handlers.runtime import get_runtime
from tests.conftest import SUB_A, SUB_B, make_event
from tools.report import main as report_cli


def run_of(event: dict[str, object]) -> str:
    return str(event["data"]["correlationId"])  # type: ignore[index]


def ledger() -> Ledger:
    return get_runtime().ledger


def rows(event: dict[str, object]) -> dict[str, MachineRecord]:
    return {r.name: r for r in ledger().list_machines(run_of(event))}


def whole_run(host: FunctionsHost, emulator: AzureEmulator, machines: list[str], *,
              before_post: object = None) -> dict[str, object]:
    pre = make_event("pre")
    emulator.add_run(run_of(pre), machines)
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    if callable(before_post):
        before_post(pre)
    host.deliver_event("post_maintenance", make_event("post"))
    host.run_queues()
    return pre


@pytest.fixture
def mixed(emulator: AzureEmulator) -> dict[str, str]:
    return {
        "ok": emulator.add_vm(SUB_A, "rg-app", "app-01", power_state="deallocated"),
        "failed": emulator.add_vm(SUB_A, "rg-app", "app-02", power_state="running", os_type="Windows"),
        "silent": emulator.add_vm(SUB_B, "rg-db", "db-01", power_state="running"),
        "late": emulator.add_vm(SUB_B, "rg-db", "db-02", power_state="stopped"),
        "arc": emulator.add_arc_machine(SUB_B, "rg-arc", "onprem-01"),
    }


def test_patch_results_are_read_into_the_rows_waiting_out_the_index_lag(
    host: FunctionsHost, emulator: AzureEmulator, mixed: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_PATCH_RESULTS_WAIT_SECONDS", "900")
    def results(pre: dict[str, object]) -> None:
        emulator.add_patch_result(mixed["ok"], run_of(pre), status="Succeeded", installed=4, reboot_status="Required")
        emulator.add_patch_result(mixed["failed"], run_of(pre), status="Failed", installed=2, failed=2, patches=[
            {"name": "2026-11 Cumulative Update", "kb_id": "5031356", "classifications": ["Security"],
             "state": "Failed"},
            {"name": "Defender update", "kb_id": "2267602", "classifications": ["Definition"], "state": "Failed"},
            {"name": "Servicing stack", "kb_id": "5031000", "classifications": ["Critical"], "state": "Installed"},
        ], error={"code": "PatchInstallationFailed", "message": "2 updates failed"})
        emulator.add_patch_result(mixed["late"], run_of(pre), status="Succeeded", installed=1, appears_after=180.0,
                                  run_id_form="run")
        emulator.add_patch_result(mixed["arc"], run_of(pre), status="CompletedWithWarnings", installed=3)

    pre = whole_run(host, emulator, list(mixed.values()), before_post=results)

    recorded = rows(pre)
    assert (recorded["app-01"].patch_status, recorded["app-01"].patch_installed) == ("Succeeded", 4)
    assert recorded["app-01"].patch_reboot == "Required"
    assert recorded["app-02"].patch_status == "Failed" and recorded["app-02"].patch_failed == 2
    failed_updates = json.loads(recorded["app-02"].patch_failed_updates)
    assert sorted(u["kb_id"] for u in failed_updates) == ["2267602", "5031356"], "only the failed ones"
    assert "PatchInstallationFailed: 2 updates failed" in recorded["app-02"].patch_error
    assert recorded["db-02"].patch_status == "Succeeded", "a result Resource Graph shows three minutes later"
    assert recorded["onprem-01"].patch_status == "CompletedWithWarnings"
    assert recorded["db-01"].patch_status == "not-reported"
    run = ledger().get_run(run_of(pre))
    assert run is not None
    assert json.loads(str(run["PatchSummary"])) == {"patched": 2, "warnings": 1, "failed": 1, "not_reported": 1,
                                                    "needs_reboot": 1}
    assert all(i.succeeded for i in host.invocations)


def test_the_report_is_written_with_its_links_and_says_what_failed(
    host: FunctionsHost, emulator: AzureEmulator, mixed: dict[str, str], app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pre = whole_run(host, emulator, list(mixed.values()), before_post=lambda pre: emulator.add_patch_result(
        mixed["failed"], run_of(pre), status="Failed", installed=0, failed=1))

    run = ledger().get_run(run_of(pre))
    assert run is not None and str(run["ReportUrl"]).endswith("/report.html")
    connection = app_env["AzureWebJobsStorage"]
    name = str(run["ReportUrl"]).split("/reports/", 1)[1]
    assert name.startswith("mc-weekly/") and name.endswith("/report.html")
    blob = BlobClient.from_connection_string(connection, "reports", name)
    page = blob.download_blob().readall().decode()
    assert blob.get_blob_properties().content_settings.content_type.startswith("text/html")
    parser = HTMLParser()
    parser.feed(page)
    assert "app-02" in page and "db-01" in page and "onprem-01" in page
    data = json.loads(BlobClient.from_connection_string(connection, "reports", name.replace(".html", ".json"))
                      .download_blob().readall())
    assert data["schema"] == "update-manager-maintenance-toolkit/report@1"
    assert data["counts"]["failed"] == 1 and data["counts"]["not_reported"] == 4
    by_name = {m["name"]: m for m in data["machines"]}
    assert by_name["app-01"]["before"] == "deallocated" and by_name["app-01"]["after"] == "deallocated"
    assert by_name["app-01"]["pre_action"] == "start" and by_name["app-01"]["restore_outcome"] == "succeeded"
    assert by_name["app-01"]["snapshots"][0]["outcome"] == "succeeded"
    assert by_name["app-02"]["patch"]["status"] == "Failed"
    assert data["run"]["verdict"] == "ready" and data["run"]["run_status"] == "succeeded"

    # The CLI: the last runs, then this one's text and HTML from the ledger.
    monkeypatch.setenv("MAINTENANCE_LEDGER_TABLE", get_runtime().settings.ledger_table)
    assert report_cli([]) == 0
    assert "mc-weekly" in capsys.readouterr().out
    assert report_cli([run_of(pre).rsplit("/", 1)[1], "--html", str(tmp_path / "r.html")]) == 0
    text = capsys.readouterr().out
    assert "app-02" in text and "Failed" in text and "not-reported" in text
    assert "app-02" in (tmp_path / "r.html").read_text()


def test_a_failed_step_is_named_in_the_report(
    host: FunctionsHost, emulator: AzureEmulator, mixed: dict[str, str], app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINTENANCE_ARM_RETRIES", "0")
    pre = make_event("pre")
    emulator.add_run(run_of(pre), list(mixed.values()))
    host.deliver_event("pre_maintenance", pre)
    host.run_queues()
    # Resource Graph refuses every query from here: retention and patch results fail, the report is still written.
    emulator.fail("graph", status=400, code="BadRequest", message="query refused")
    host.deliver_event("post_maintenance", make_event("post"))
    host.run_queues()

    run = ledger().get_run(run_of(pre))
    assert run is not None and run.get("ReportUrl")
    errors = json.loads(str(run["StepErrors"]))
    assert "patch-results" in errors and "retention" in errors
    name = str(run["ReportUrl"]).split("/reports/", 1)[1].replace(".html", ".json")
    data = json.loads(BlobClient.from_connection_string(app_env["AzureWebJobsStorage"], "reports", name)
                      .download_blob().readall())
    assert set(data["run"]["step_errors"]) >= {"patch-results", "retention"}
    assert "query refused" in data["run"]["step_errors"]["patch-results"]
