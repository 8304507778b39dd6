"""The HTML report: well-formed, self-contained, escaped, problems first, and nothing missing or
crashing when a run recorded little. `sample_report()` is a realistic run for others to reuse."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from handlers.phases.post.report_html import render_html

SUB = "3f2a9c1e-7b4d-4e8a-9c11-5d6e7f8a9b0c"
SUB_ARC = "b7e41d02-99aa-4c3f-8d21-0a1b2c3d4e5f"
CONFIG = (f"/subscriptions/{SUB}/resourceGroups/rg-maintenance/providers/Microsoft.Maintenance/"
          "maintenanceConfigurations/weekly")
RUN = "20261202030000"
LONG_ERROR = ("Patch installation failed: 2 of 7 updates could not be installed. "
              "KB5031356: 0x80070643 - Fatal error during installation "
              "(the MSI for SQL Server 2019 CU22 returned 1603). "
              "KB5032007: 0x800f0922 - The installation of the update failed because the system reserved partition "
              "has insufficient free space. See C:\\Windows\\Logs\\CBS\\CBS.log and the setup bootstrap log under "
              "C:\\Program Files\\Microsoft SQL Server\\150\\Setup Bootstrap\\Log for details; "
              "retry after freeing space.")


APP_03_DOWN = "not running: power state stopped (it was running before the window)"
SHOP_DOWN = "http-probe: https://shop.example.com/healthz answered 503"


def _vm(name: str, rg: str = "rg-web", sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"


def _snap(machine: str, rg: str, role: str = "os", outcome: str = "succeeded", detail: str = "") -> dict[str, Any]:
    disk = f"{machine}-{'osdisk' if role == 'os' else 'data0'}"
    name = f"mmt-{RUN}-{disk}"
    return {"disk": f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/disks/{disk}", "role": role,
            "snapshot_id": f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/snapshots/{name}",
            "name": name, "outcome": outcome, "detail": detail}


def _patch(status: str, installed: int = 0, failed: int = 0, pending: int = 0, reboot: str = "NotNeeded",
           minutes: float | None = 9.5, **extra: Any) -> dict[str, Any]:
    patch: dict[str, Any] = {
        "status": status, "installed": installed, "failed": failed, "pending": pending, "reboot_status": reboot,
        "window_exceeded": False, "error": "", "started_at": "2026-12-02T03:02:10+00:00",
        "finished_at": "2026-12-02T03:11:40+00:00" if minutes else None,
        "duration_seconds": minutes * 60 if minutes else None, "failed_updates": []}
    patch.update(extra)
    return patch


def _machine(name: str, rg: str = "rg-web", **values: Any) -> dict[str, Any]:
    machine: dict[str, Any] = {
        "id": _vm(name, rg), "name": name, "kind": "vm", "subscription": SUB, "resource_group": rg,
        "location": "westeurope", "wave": 1, "before": "running", "pre_action": "none", "pre_outcome": "not-needed",
        "pre_detail": "", "start_seconds": None, "snapshots": [_snap(name, rg)], "check_failures": [],
        "guest": {"pre": None, "post": None}, "patch": _patch("Succeeded", 3),
        "restore_action": "none", "restore_outcome": "not-needed", "restore_detail": "", "after": "running",
        "health": {"passed": True, "reasons": [], "rollback_candidate": False, "snapshot_ids": []}}
    machine.update(values)
    return machine


def sample_report(*, dry_run: bool = False) -> dict[str, Any]:
    """A run of nine machines: patched, failed with two failed updates, not reported, a start that
    failed, an Arc server (disconnected after patching), in-guest services, a rollback candidate (not
    running again), the application's probe failing after patching; `dry_run` for its dry run."""
    app_snaps = [_snap("app-03", "rg-app"), _snap("app-03", "rg-app", "data")]
    sql_snaps = [_snap("sql-01", "rg-data"), _snap("sql-01", "rg-data", "data")]
    machines = [
        _machine("web-01", before="deallocated", pre_action="start", pre_outcome="succeeded", start_seconds=61.2,
                 restore_action="deallocate", restore_outcome="succeeded", after="deallocated", health=None),
        _machine("sql-01", "rg-data", wave=2, snapshots=sql_snaps,
                 guest={"pre": {"what": "stop-services MSSQLSERVER, SQLSERVERAGENT", "outcome": "succeeded",
                                "detail": "stop-services: exit 0 after 14 s"},
                        "post": {"what": "start-services MSSQLSERVER, SQLSERVERAGENT", "outcome": "succeeded",
                                 "detail": "start-services: exit 0 after 22 s"}},
                 patch=_patch("Failed", 5, 2, 0, "Required", 41.0, error=LONG_ERROR, failed_updates=[
                     {"name": "2026-11 Cumulative Update for SQL Server 2019 (KB5031356)", "kb_id": "5031356",
                      "version": "", "classifications": ["Security", "Critical"], "state": "Failed"},
                     {"name": "2026-11 Servicing Stack Update for Windows Server 2022", "kb_id": "5032007",
                      "version": "", "classifications": ["ServicePack"], "state": "Failed"}])),
        _machine("batch-04", "rg-batch", wave=None, before="deallocated", pre_action="start", pre_outcome="failed",
                 pre_detail="AllocationFailed: Allocation failed. We do not have sufficient capacity for the requested "
                            "VM size Standard_E16s_v5 in this region.", start_seconds=184.0,
                 patch=_patch("not reported", minutes=None, reboot=""), snapshots=[], after="deallocated",
                 check_failures=["vms-running: not running: batch-04 (deallocated)"], health=None),
        _machine("web-06", patch=_patch("not reported", minutes=None, reboot=""), health=None),
        _machine("app-03", "rg-app", guest={"pre": None, "post": {
                     "what": "post-script smoke_test", "outcome": "failed",
                     "detail": "smoke_test: exit 1 after 31 s: GET http://localhost:8080/health returned 503"}},
                 patch=_patch("Succeeded", 4, minutes=12.25),
                 health={"passed": False, "reasons": [APP_03_DOWN], "rollback_candidate": True,
                         "snapshot_ids": [s["snapshot_id"] for s in app_snaps]},
                 snapshots=app_snaps),
        _machine("onprem-fs-05", "rg-arc", kind="arc", subscription=SUB_ARC, location="germanywestcentral",
                 id=f"/subscriptions/{SUB_ARC}/resourceGroups/rg-arc/providers/Microsoft.HybridCompute/machines/"
                    "onprem-fs-05", before="connected", snapshots=[], patch=_patch("Succeeded", 7, reboot="Required"),
                 restore_action="", restore_outcome="", after="",
                 health={"passed": False, "reasons": ["Arc agent disconnected, not connected"],
                         "rollback_candidate": False, "snapshot_ids": []}),
        _machine("db-07", "rg-data", wave=2, snapshots=[_snap("db-07", "rg-data"), _snap(
                     "db-07", "rg-data", "data", "failed",
                     "OperationNotAllowed: Operation results in exceeding quota limits of Snapshots.")],
                 patch=_patch("CompletedWithWarnings", 2, 0, 1, window_exceeded=True, minutes=66.0)),
        _machine("web-08", wave=2, before="deallocated", pre_action="start", pre_outcome="succeeded",
                 start_seconds=48.9, health=None,
                 restore_action="deallocate", restore_outcome="succeeded", after="deallocated"),
        _machine("linux-09", "rg-app", patch=_patch("Succeeded", 0, minutes=1.1)),
    ]
    report: dict[str, Any] = {
        "schema": "update-manager-maintenance-toolkit/report@1", "generated_at": "2026-12-02T04:10:00+00:00",
        "run": {"correlation_id": f"{CONFIG}/providers/Microsoft.Maintenance/applyUpdates/{RUN}",
                "configuration": "weekly", "configuration_id": CONFIG, "run_id": RUN,
                "window_start": "2026-12-02T03:00:00+00:00", "window_end": "2026-12-02T05:00:00+00:00",
                "cutoff": "2026-12-02T02:50:00+00:00", "verdict": "ready", "cancel_outcome": "not-needed",
                "run_status": "failed", "failing_reasons": ["sql-01: patch Failed (2 updates failed)"],
                "step_errors": {"retention": "HttpResponseError: (AuthorizationFailed) The client does not have "
                                             "authorization to perform action 'Microsoft.Compute/snapshots/delete'."},
                "dry_run": False, "pre_ended": "completed", "post_ended": "completed",
                "health": {"checks": ["running-again", "http-probe"], "checked": 5, "passed": 3, "failed": 2,
                           "rollback_candidates": [{"name": "app-03", "resource_id": _vm("app-03", "rg-app"),
                                                    "reasons": [APP_03_DOWN],
                                                    "snapshot_ids": [s["snapshot_id"] for s in app_snaps]}],
                           "rollback_candidates_not_listed": 0, "run_findings": [SHOP_DOWN], "waited_seconds": 300.0}},
        "counts": {"machines": 9, "started": 2, "restored": 2, "patched": 6, "failed": 1, "warnings": 1,
                   "needs_reboot": 2, "not_reported": 2, "snapshots": 12, "snapshots_failed": 1, "guest_failed": 1,
                   "unhealthy": 2, "rollback_candidates": 1},
        "machines": machines,
    }
    if dry_run:
        run = report["run"]
        run.update(verdict="dry-run", dry_run=True, run_status="succeeded", failing_reasons=[], step_errors={})
        report["counts"].update(started=0, restored=0, snapshots=0, snapshots_failed=0)
        for m in machines:
            m["pre_outcome"] = "planned" if m["pre_action"] == "start" else m["pre_outcome"]
            m["restore_outcome"] = "planned" if m["restore_action"] == "deallocate" else m["restore_outcome"]
            for snap in m["snapshots"]:
                snap["outcome"], snap["detail"] = "planned", ""
            for step in filter(None, m["guest"].values()):
                step["outcome"], step["detail"] = "planned", ""
    return report


VOID = {"meta", "br", "col", "hr", "img", "input", "link", "wbr"}
INLINE = {"span", "strong", "em", "b", "code", "summary"}


class _Page(HTMLParser):
    """Checks every tag opened is closed in order; collects tags, attributes and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._gap(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def _gap(self, tag: str) -> None:
        if tag not in INLINE:
            self.text.append(" ")

    def handle_endtag(self, tag: str) -> None:
        self._gap(tag)
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack[-1:] != ["style"]:
            self.text.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    return parser


def _text(page: str) -> str:
    return " ".join("".join(_parse(page).text).split())


def test_the_page_is_well_formed_self_contained_and_shows_the_header_figures() -> None:
    page = render_html(sample_report())
    parsed = _parse(page)
    assert page.startswith("<!DOCTYPE html>")
    text = _text(page)
    for figure in ("9 machines", "6 patched", "1 failed", "2 need a reboot", "2 not reported", "2 started",
                   "2 restored", "1 snapshots failed"):
        assert figure in text
    assert "Verdict ready" in text and "Cancel not-needed" in text and "Run status failed" in text
    assert "2026-12-02 03:00 UTC to 2026-12-02 05:00 UTC" in text
    assert "Generated 2026-12-02 04:10 UTC by update-manager-maintenance-toolkit" in text
    tags = {tag for tag, _ in parsed.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    for _, attrs in parsed.tags:
        assert not any(k in ("src", "href") or "http" in (v or "") for k, v in attrs.items()), attrs
    assert "url(" not in page and "@import" not in page


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr class="r-\w+"><td><div class="name">([^<]*)</div>', page)


def test_problems_sort_first_and_each_row_says_why() -> None:
    page = render_html(sample_report())
    order = _rows(page)
    assert len(order) == 9
    assert order[0] == "sql-01"  # patch failed
    assert set(order[1:3]) == {"batch-04", "web-06"}  # not reported
    assert order[3] == "app-03"  # rollback candidate
    assert order.index("db-07") < order.index("web-01") and order[-1] in ("web-01", "web-08", "linux-09")
    text = _text(page)
    assert "rollback candidate: snapshots mmt-20261202030000-app-03-osdisk mmt-20261202030000-app-03-data0" in text
    assert "start failed" in text and "window exceeded" in text and "snapshot failed" in text


def test_failed_updates_the_start_the_durations_and_the_arc_server_are_shown() -> None:
    text = _text(render_html(sample_report()))
    assert "2026-11 Cumulative Update for SQL Server 2019 (KB5031356) KB5031356 · Security, Critical" in text
    assert "2026-11 Servicing Stack Update for Windows Server 2022 KB5032007 · ServicePack" in text
    assert "Failed 5 installed · 2 failed · 0 pending" in text
    assert "start succeeded in 1 min 01 s" in text and "took 41 min 00 s" in text and "took 1 h 06 min" in text
    assert "Arc server · sub b7e41d02" in text and "VM · sub 3f2a9c1e · wave 2" in text
    assert "pre: stop-services MSSQLSERVER, SQLSERVERAGENT succeeded" in text


@pytest.mark.parametrize("patch", [None, {}, _patch("not-reported", minutes=None), _patch("NotStarted", minutes=None)])
def test_a_machine_without_a_result_says_not_reported_and_sorts_first(patch: dict[str, Any] | None) -> None:
    report = sample_report()
    healthy = report["machines"][-1]
    report["machines"] = [healthy, dict(report["machines"][0], name="nothing-back", patch=patch, health=None)]
    page = render_html(report)
    assert _rows(page) == ["nothing-back", "linux-09"]
    text = _text(page)
    assert "nothing-back VM · sub 3f2a9c1e · wave 1 rg-web · westeurope not reported" in text
    row = text.split("nothing-back", 1)[1].split("linux-09", 1)[0]
    assert row.count("not reported") == 2 and "not checked" in row and "installed" not in row


def test_long_detail_is_cut_with_the_whole_of_it_in_details() -> None:
    page = render_html(sample_report())
    details = re.findall(r"<details[^>]*><summary>(.*?)</summary><pre>(.*?)</pre></details>", page, re.S)
    whole = [full for _, full in details if "retry after freeing space." in full]
    assert whole, "the sql-01 error is in a <details>"
    summary = next(s for s, full in details if full == whole[0])
    assert "retry after freeing space" not in summary and len(summary) < 420


def test_values_are_escaped_wherever_they_come_from() -> None:
    report = sample_report()
    evil = '<script>alert("x")</script>'
    machine = report["machines"][1]
    machine["name"] = f"web{evil}"
    machine["patch"]["error"] = f"boom {evil}"
    machine["patch"]["failed_updates"][0]["name"] = evil
    machine["snapshots"][0]["snapshot_id"] = f'x" onmouseover="{evil}'
    report["run"]["step_errors"] = {evil: evil}
    report["run"]["configuration"] = evil
    page = render_html(report)
    _parse(page)
    assert "<script" not in page.lower() and "onmouseover=\"" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert f"web{evil}" in _text(page)  # shown as text


def test_dry_run_is_marked_in_a_banner_and_the_footer() -> None:
    page = render_html(sample_report(dry_run=True))
    text = _text(page)
    assert text.count("Dry run") == 1 and "DRY RUN" in text.split("Generated", 1)[1]
    assert text.startswith("Maintenance run weekly 20261202030000 Maintenance run weekly DRY RUN")
    assert "planned" in text and "Steps that failed" not in text
    assert "Dry run" not in _text(render_html(sample_report())) and "DRY RUN" not in render_html(sample_report())


def test_step_errors_and_failing_reasons_get_a_banner() -> None:
    text = _text(render_html(sample_report()))
    assert "Steps that failed (1) retention: HttpResponseError: (AuthorizationFailed)" in text
    assert "The report is written even when earlier steps failed" in text
    assert "Why the run was judged failing sql-01: patch Failed (2 updates failed)" in text


def test_health_after_patching_names_the_rollback_candidates_and_the_run_s_findings() -> None:
    page = render_html(sample_report())
    text = _text(page)
    assert "2 unhealthy" in text and "1 rollback candidates" in text
    assert f"Unhealthy after patching {SHOP_DOWN}" in text
    app = text.split("app-03", 1)[1].split("onprem-fs-05", 1)[0]
    assert f"failed {APP_03_DOWN} rollback candidate: snapshots mmt-20261202030000-app-03-osdisk" in app
    arc = text.split("onprem-fs-05", 1)[1].split("db-07", 1)[0]
    assert "unhealthy" in arc and "failed Arc agent disconnected, not connected" in arc and "rollback" not in arc
    healthy = sample_report()
    healthy["counts"].update(unhealthy=0, rollback_candidates=0)
    healthy["run"]["health"]["run_findings"] = []
    text = _text(render_html(healthy))
    assert "rollback candidates" not in text and "unhealthy" not in text.split("Machine", 1)[0]
    assert "Unhealthy after patching" not in text


def _nulled(value: Any) -> Any:
    """Every leaf of the report as None (dicts and lists kept, so every optional value is None)."""
    if isinstance(value, dict):
        return {k: _nulled(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulled(v) for v in value]
    return None


@pytest.mark.parametrize("report", [
    pytest.param({}, id="empty dict"),
    pytest.param(dict(sample_report(), machines=[], counts={}), id="no machines"),
    pytest.param(_nulled(sample_report()), id="every value None"),
    pytest.param({k: None for k in sample_report()}, id="every section None"),
    pytest.param(dict(sample_report(), machines=[{}, {"patch": {}, "guest": {}, "health": {}}]), id="empty machines"),
])
def test_little_or_nothing_recorded_still_renders(report: dict[str, Any]) -> None:
    text = _text(render_html(copy.deepcopy(report)))
    assert "Maintenance run" in text and "update-manager-maintenance-toolkit" in text
    if not report.get("machines"):
        assert "No machines were in this run." in text


def test_times_are_shown_in_utc_whatever_offset_they_carry() -> None:
    report = sample_report()
    report["run"].update(window_start="2026-12-02T05:00:00+02:00", window_end="2026-12-02T05:00:00",
                         cutoff="not a time <b>")
    text = _text(render_html(report))
    assert "window 2026-12-02 03:00 UTC to 2026-12-02 05:00 UTC · cutoff not a time <b>" in text
