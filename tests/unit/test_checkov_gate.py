"""The checkov gate's comparison (tools/checkov_gate.py), over checkov's real JSON shapes, without checkov.

tests/fixtures/checkov/bicep_report.json is `checkov -d infra --framework bicep -o json --compact`
(3.3.30) cut down to three failed checks and one passed one; the other shapes below (an inline skip,
a file checkov could not parse, no file at all) are as checkov printed them for small Bicep samples.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tools.checkov_gate import (
    TODO,
    Accepted,
    GateError,
    checkov_env,
    judge,
    load_accepted,
    main,
    parse_report,
    skeleton,
)

ROOT = Path(__file__).resolve().parents[2]
REPORT = json.loads((ROOT / "tests" / "fixtures" / "checkov" / "bicep_report.json").read_text())
STORAGE = Accepted("CKV_AZURE_35", "infra/app/storage.bicep", "Microsoft.Storage/storageAccounts.storage",
                   "Flex Consumption without VNet integration reaches storage from no fixed address.")
SECRET = Accepted("CKV_AZURE_114", "infra/app/key-vault.bicep", "Microsoft.KeyVault/vaults/secrets.teamsWebhook",
                  "False positive: contentType is set inside a conditional resource.")
SETTINGS = Accepted("CKV_AZURE_222", "infra/app/function-app.bicep",
                    "Microsoft.Web/sites/config.functionApp__settings", "An appsettings child has no such property.")
ALL = [STORAGE, SECRET, SETTINGS]


def report(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(REPORT)
    data["results"].update(changes)
    return data


def test_all_findings_accepted_passes_with_one_summary_line() -> None:
    verdict = judge(parse_report(REPORT), ALL)
    assert verdict.ok and verdict.problems == ()
    assert verdict.summary == "checkov: 1 checks passed, 3 failed, all 3 accepted"


def test_a_new_finding_fails_naming_file_resource_check_and_its_name() -> None:
    verdict = judge(parse_report(REPORT), [STORAGE, SETTINGS])
    assert not verdict.ok
    assert verdict.problems == (
        "checkov: new finding infra/app/key-vault.bicep Microsoft.KeyVault/vaults/secrets.teamsWebhook "
        "CKV_AZURE_114 (Ensure that key vault secrets have \"content_type\" set): fix the Bicep, or accept it in "
        "infra/checkov-accepted.yaml with the reason",)
    assert "2 accepted, 1 new" in verdict.summary


def test_the_same_check_on_another_resource_or_file_is_a_new_finding() -> None:
    other_resource = Accepted(STORAGE.check, STORAGE.file, "Microsoft.Storage/storageAccounts.other", STORAGE.why)
    other_file = Accepted(STORAGE.check, "infra/app/other.bicep", STORAGE.resource, STORAGE.why)
    for entry in (other_resource, other_file):
        problems = judge(parse_report(REPORT), [entry, SECRET, SETTINGS]).problems
        assert any(p.startswith("checkov: new finding infra/app/storage.bicep") for p in problems)
        assert any(p.startswith(f"checkov: stale accepted entry {entry.describe()}") for p in problems)


def test_an_accepted_entry_no_finding_matches_is_stale_and_fails() -> None:
    gone = Accepted("CKV_AZURE_59", STORAGE.file, STORAGE.resource, "Public network access is needed.")
    verdict = judge(parse_report(REPORT), [*ALL, gone])
    assert verdict.problems == (
        "checkov: stale accepted entry infra/app/storage.bicep Microsoft.Storage/storageAccounts.storage "
        "CKV_AZURE_59: no such finding any more; remove it from infra/checkov-accepted.yaml",)


def test_a_todo_reason_fails_even_when_the_finding_matches() -> None:
    todo = Accepted(SECRET.check, SECRET.file, SECRET.resource, TODO)
    verdict = judge(parse_report(REPORT), [STORAGE, todo, SETTINGS])
    assert not verdict.ok
    assert verdict.problems == (f"checkov: accepted entry {todo.describe()} has no reason yet (why: TODO)",)


def test_matching_ignores_line_numbers_and_the_order_of_findings() -> None:
    failed = copy.deepcopy(REPORT["results"]["failed_checks"])[::-1]
    for raw in failed:
        raw["file_line_range"] = [raw["file_line_range"][0] + 40, raw["file_line_range"][1] + 40]
    assert judge(parse_report(report(failed_checks=failed)), ALL).ok


def test_an_inline_skip_fails_the_gate() -> None:
    skipped = copy.deepcopy(REPORT["results"]["failed_checks"][0])
    skipped["check_result"] = {"result": "SKIPPED", "suppress_comment": " accepted here"}
    failed = REPORT["results"]["failed_checks"][1:]
    problems = judge(parse_report(report(failed_checks=failed, skipped_checks=[skipped])), [SECRET, SETTINGS]).problems
    assert problems == ("checkov: inline skip infra/app/storage.bicep Microsoft.Storage/storageAccounts.storage "
                        "CKV_AZURE_35 (Ensure default network access rule for Storage Accounts is set to deny): "
                        "accept it in infra/checkov-accepted.yaml instead of a checkov:skip comment",)


def test_a_file_checkov_cannot_parse_fails_the_gate() -> None:
    data = report(parsing_errors=[str(ROOT / "infra" / "app" / "broken.bicep")])
    data["summary"]["parsing_errors"] = 1
    problems = judge(parse_report(data, root=ROOT), ALL).problems
    assert problems == ("checkov: could not parse infra/app/broken.bicep: its resources went unchecked",)


def test_no_bicep_scanned_at_all_fails_the_gate() -> None:
    # What checkov prints when the directory holds no file of the framework: the summary alone.
    bare = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0, "resource_count": 0,
            "checkov_version": "3.3.30"}
    assert judge(parse_report(bare), []).problems == ("checkov: found no Bicep resources to check in infra/",)


def test_of_several_reports_only_the_bicep_one_counts() -> None:
    other = {"check_type": "arm", "results": {"failed_checks": [REPORT["results"]["failed_checks"][0]]},
             "summary": dict(REPORT["summary"], passed=9)}
    parsed = parse_report([other, REPORT])
    assert parsed.passed == 1 and len(parsed.failed) == 3


def test_a_report_missing_its_summary_is_an_error() -> None:
    with pytest.raises(GateError, match="summary"):
        parse_report({"check_type": "bicep", "results": {"failed_checks": []}})


@pytest.mark.parametrize(("text", "message"), [
    ("check: CKV_AZURE_35\n", "must be a list"),
    ("- check: CKV_AZURE_35\n  file: f\n  resource: r\n", "entry 1 must have exactly the keys"),
    ("- {check: CKV_AZURE_35, file: f, resource: r, why: w, line: 3}\n", "entry 1 must have exactly the keys"),
    ("- {check: CKV_AZURE_35, file: f, resource: r, why: ''}\n", "entry 1: .* non-empty strings"),
    ("- {check: C, file: f, resource: r, why: a}\n- {check: C, file: f, resource: r, why: b}\n", "lists f r C twice"),
    ("- [unclosed\n", "not valid YAML"),
])
def test_a_malformed_accepted_list_is_refused(text: str, message: str) -> None:
    with pytest.raises(GateError, match=message):
        load_accepted(text)


def test_the_skeleton_keeps_reasons_adds_todo_drops_stale_and_reads_back() -> None:
    gone = Accepted("CKV_AZURE_59", STORAGE.file, STORAGE.resource, "no longer found")
    text = skeleton(parse_report(REPORT).failed, [STORAGE, SETTINGS, gone])
    entries = load_accepted(text)
    assert [e.key for e in entries] == [SETTINGS.key, SECRET.key, STORAGE.key]  # by file, then resource
    assert {e.key: e.why for e in entries} == {SETTINGS.key: SETTINGS.why, SECRET.key: TODO, STORAGE.key: STORAGE.why}
    assert "# CKV_AZURE_114: Ensure that key vault secrets have \"content_type\" set\n" in text
    verdict = judge(parse_report(REPORT), entries)
    assert verdict.problems == (f"checkov: accepted entry {SECRET.describe()} has no reason yet (why: TODO)",)


def test_a_long_or_awkward_reason_survives_the_round_trip() -> None:
    why = ("It's 'quoted': with a colon, a # hash, \"double quotes\" and `backticks`, " * 3).strip()
    entries = load_accepted(skeleton(parse_report(REPORT).failed, [Accepted(*STORAGE.key, why)]))
    assert {e.key: e.why for e in entries}[STORAGE.key] == why


def test_checkov_runs_with_no_setting_of_the_caller_and_no_version_check() -> None:
    env = checkov_env({"PATH": "/bin", "BC_API_KEY": "secret", "CKV_SKIP_CHECK": "CKV_AZURE_35",
                       "PRISMA_API_URL": "https://example.invalid", "HOME": "/root"}, "/nonexistent/home")
    assert env == {"PATH": "/bin", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE",
                   "HOME": "/nonexistent/home"}


def fake_checkov(tmp_path: Path, output: dict[str, Any], code: int) -> Path:
    """An executable that records how it was called and prints `output` as checkov would."""
    (tmp_path / "report.json").write_text(json.dumps(output))
    script = tmp_path / "checkov"
    script.write_text(f"#!{sys.executable}\n"
                      "import json, os, pathlib, sys\n"
                      "here = pathlib.Path(__file__).parent\n"
                      "(here / 'call.json').write_text(json.dumps({'argv': sys.argv[1:], 'home': os.environ['HOME'],"
                      " 'update_check': os.environ.get('CKV_SKIP_PACKAGE_UPDATE_CHECK')}))\n"
                      "sys.stdout.write((here / 'report.json').read_text())\n"
                      f"sys.exit({code})\n")
    script.chmod(0o755)
    return script


def test_main_runs_checkov_offline_and_passes_when_all_is_accepted(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    accepted = tmp_path / "accepted.yaml"
    accepted.write_text(skeleton(parse_report(REPORT).failed, ALL))
    assert main(["--checkov", str(fake_checkov(tmp_path, REPORT, 1)), "--accepted", str(accepted)]) == 0
    assert capsys.readouterr().out == "checkov: 1 checks passed, 3 failed, all 3 accepted\n"
    call = json.loads((tmp_path / "call.json").read_text())
    assert call["argv"][:6] == ["--directory", "infra", "--framework", "bicep", "--output", "json"]
    assert "--skip-download" in call["argv"] and call["update_check"] == "true"
    assert call["home"] != os.environ.get("HOME") and not Path(call["home"]).exists()


def test_main_fails_on_a_new_finding_and_write_accepted_prints_the_list(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    accepted = tmp_path / "accepted.yaml"
    accepted.write_text(skeleton(parse_report(REPORT).failed, ALL))
    extra = copy.deepcopy(REPORT["results"]["failed_checks"][0])
    extra.update(check_id="CKV_AZURE_59", check_name="Ensure that Storage accounts disallow public access")
    checkov = fake_checkov(tmp_path, report(failed_checks=[*REPORT["results"]["failed_checks"], extra]), 1)
    assert main(["--checkov", str(checkov), "--accepted", str(accepted)]) == 1
    out = capsys.readouterr().out
    assert "new finding infra/app/storage.bicep Microsoft.Storage/storageAccounts.storage CKV_AZURE_59" in out
    assert main(["--checkov", str(checkov), "--accepted", str(accepted), "--write-accepted"]) == 0
    entries = load_accepted(capsys.readouterr().out)
    assert len(entries) == 4 and [e.why for e in entries if e.check == "CKV_AZURE_59"] == [TODO]


def test_main_reports_checkov_failing_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--checkov", str(tmp_path / "missing"), "--accepted", str(tmp_path / "none.yaml")]) == 2
    assert "not found: ./dev checkov installs it" in capsys.readouterr().err
    crashed = fake_checkov(tmp_path, REPORT, 2)
    assert main(["--checkov", str(crashed), "--accepted", str(tmp_path / "none.yaml")]) == 2
    assert "checkov exited 2" in capsys.readouterr().err
