"""The checkov gate (`./dev checkov`): checkov's findings on infra/ must be exactly the accepted ones.

`infra/checkov-accepted.yaml` lists each finding we accept, by check id, Bicep file and checkov's
resource address (never a line number), with the reason. The gate fails on a finding not in the
list, on an entry no finding matches any more (stale: the list cannot rot), on a reason still
`TODO`, on a Bicep file checkov cannot parse (its resources would go unchecked) and on an inline
`checkov:skip` (accepting belongs in the list). `--write-accepted` prints the list for the current
findings instead, keeping the reasons it has and `why: TODO` for new ones.

checkov runs from its own venv (.venv-checkov) and never reaches the network: nothing is downloaded
from the Prisma Cloud platform (--skip-download), the PyPI version check is off, and no API key or
checkov setting from the environment or the home directory takes part.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCANNED = "infra"
ACCEPTED_PATH = ROOT / SCANNED / "checkov-accepted.yaml"
DEFAULT_CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
TODO = "TODO"
FIELDS = ("check", "file", "resource", "why")
CHECKOV_TIMEOUT_S = 600
WIDTH = 100
# Variables of checkov's own that could change what it checks or make it call out (an API key sends
# results to the platform): none of the caller's take part.
FOREIGN_ENV_PREFIXES = ("CKV_", "BC_", "PRISMA_")
HEADER = """\
# checkov findings on infra/ that we accept, and why. tools/checkov_gate.py (./dev checkov, part of
# ./dev test) fails on any finding not listed here, on an entry no finding matches any more and on a
# reason left as TODO. An entry matches on check id, file and checkov's resource address, not on
# line numbers. After changing the Bicep:
#   ./dev checkov --write-accepted > /tmp/accepted.yaml && mv /tmp/accepted.yaml infra/checkov-accepted.yaml
# then replace each `why: TODO` with the reason (or fix the Bicep instead).
"""

Key = tuple[str, str, str]


class GateError(Exception):
    """checkov could not run, or its output or the accepted list cannot be read."""


@dataclass(frozen=True)
class _Keyed:
    """What a finding and an accepted entry are matched on: check id, file, resource address."""

    check: str
    file: str
    resource: str

    @property
    def key(self) -> Key:
        return (self.check, self.file, self.resource)


@dataclass(frozen=True)
class Finding(_Keyed):
    """One failed (or inline-skipped) check on one resource."""

    name: str

    def describe(self) -> str:
        return f"{self.file} {self.resource} {self.check} ({self.name})"


@dataclass(frozen=True)
class Accepted(_Keyed):
    """One entry of the accepted list."""

    why: str

    def describe(self) -> str:
        return f"{self.file} {self.resource} {self.check}"


@dataclass(frozen=True)
class Report:
    """What checkov found in the Bicep."""

    passed: int
    failed: tuple[Finding, ...]
    skipped: tuple[Finding, ...]
    parse_errors: tuple[str, ...]
    resource_count: int


@dataclass(frozen=True)
class Verdict:
    """The comparison of a report with the accepted list: problems empty means the gate passes."""

    problems: tuple[str, ...]
    summary: str

    @property
    def ok(self) -> bool:
        return not self.problems


def _finding(raw: Mapping[str, object]) -> Finding:
    # file_path is relative to the scanned directory ("/app/storage.bicep"), wherever the clone is.
    file = f"{SCANNED}/{str(raw['file_path']).lstrip('/')}"
    return Finding(str(raw["check_id"]), file, str(raw["resource"]), str(raw.get("check_name") or ""))


def _order(key: Key) -> tuple[str, str, str, int, str]:
    # By file, then resource, then check with its number as a number (CKV_AZURE_18 before CKV_AZURE_109).
    check, file, resource = key
    prefix, _, number = check.rpartition("_")
    return (file, resource, prefix, int(number) if number.isdigit() else -1, check)


def _unique(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    by_key = {f.key: f for f in findings}
    return tuple(by_key[k] for k in sorted(by_key, key=_order))


def _relative(path: str, root: Path) -> str:
    return Path(path).relative_to(root).as_posix() if Path(path).is_relative_to(root) else path


def parse_report(data: Any, *, root: Path = ROOT) -> Report:
    """checkov's `-o json` output (one report, a list of reports, or the bare summary it prints when
    no file was scanned) as a Report of its Bicep results."""
    reports: list[Any] = data if isinstance(data, list) else [data]
    if not all(isinstance(r, dict) for r in reports):
        raise GateError("checkov's JSON output is neither a report nor a list of reports")
    bicep: list[dict[str, Any]] = [r for r in reports if r.get("check_type") == "bicep"]
    if not bicep:
        return Report(0, (), (), (), 0)
    passed, resources = 0, 0
    failed: list[Finding] = []
    skipped: list[Finding] = []
    parse_errors: list[str] = []
    try:
        for report in bicep:
            results, summary = report["results"], report["summary"]
            passed += int(summary["passed"])
            resources += int(summary["resource_count"])
            failed += [_finding(raw) for raw in results.get("failed_checks", [])]
            skipped += [_finding(raw) for raw in results.get("skipped_checks", [])]
            parse_errors += [_relative(str(path), root) for path in results.get("parsing_errors", [])]
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise GateError(f"checkov's JSON report lacks or mistypes {error}") from error
    return Report(passed, _unique(failed), _unique(skipped), tuple(sorted(parse_errors)), resources)


def load_accepted(text: str, *, source: str = "infra/checkov-accepted.yaml") -> tuple[Accepted, ...]:
    """The accepted list: a YAML list of {check, file, resource, why}; each key at most once."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise GateError(f"{source} is not valid YAML: {error}") from error
    if data is None:
        return ()
    if not isinstance(data, list):
        raise GateError(f"{source} must be a list of entries ({', '.join(FIELDS)})")
    entries: list[Accepted] = []
    seen: set[Key] = set()
    for number, raw in enumerate(data, start=1):
        if not isinstance(raw, dict) or set(raw) != set(FIELDS):
            raise GateError(f"{source} entry {number} must have exactly the keys {', '.join(FIELDS)}; it has "
                            f"{', '.join(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__}")
        if not all(isinstance(raw[k], str) and raw[k].strip() for k in FIELDS):
            raise GateError(f"{source} entry {number}: {', '.join(FIELDS)} must be non-empty strings")
        entry = Accepted(*(raw[k].strip() for k in FIELDS))
        if entry.key in seen:
            raise GateError(f"{source} lists {entry.describe()} twice")
        seen.add(entry.key)
        entries.append(entry)
    return tuple(entries)


def judge(report: Report, accepted: Sequence[Accepted]) -> Verdict:
    """Compare the findings with the accepted list (on check id, file and resource)."""
    accepted_keys = {a.key for a in accepted}
    found_keys = {f.key for f in report.failed}
    new = [f for f in report.failed if f.key not in accepted_keys]
    stale = [a for a in accepted if a.key not in found_keys]
    todo = [a for a in accepted if TODO in a.why]
    problems = [f"checkov: new finding {f.describe()}: fix the Bicep, or accept it in "
                f"infra/checkov-accepted.yaml with the reason" for f in new]
    problems += [f"checkov: stale accepted entry {a.describe()}: no such finding any more; remove it from "
                 f"infra/checkov-accepted.yaml" for a in stale]
    problems += [f"checkov: accepted entry {a.describe()} has no reason yet (why: {a.why})" for a in todo]
    problems += [f"checkov: inline skip {f.describe()}: accept it in infra/checkov-accepted.yaml instead of "
                 f"a checkov:skip comment" for f in report.skipped]
    problems += [f"checkov: could not parse {path}: its resources went unchecked" for path in report.parse_errors]
    if report.resource_count == 0 and not report.parse_errors:
        problems.append(f"checkov: found no Bicep resources to check in {SCANNED}/")
    failed = len(report.failed)
    if not problems:
        summary = f"checkov: {report.passed} checks passed, {failed} failed, all {failed} accepted"
    else:
        summary = (f"checkov: {report.passed} checks passed, {failed} failed, {failed - len(new)} accepted, "
                   f"{len(new)} new; {len(stale)} stale and {len(todo)} TODO entries, {len(report.skipped)} "
                   f"inline skips, {len(report.parse_errors)} unparsed files")
    return Verdict(tuple(problems), summary)


def _scalar(value: str) -> str:
    plain = f"k: {value}"
    try:
        if yaml.safe_load(plain) == {"k": value}:
            return value
    except yaml.YAMLError:
        pass
    return json.dumps(value)


def _why(text: str) -> str:
    line = f"  why: {_scalar(text)}"
    if len(line) <= WIDTH and not line.endswith('"'):
        return line + "\n"
    # A folded scalar: wrapped for reading, one line again when loaded, no quoting to escape.
    wrapped = textwrap.wrap(text, WIDTH - 4, break_long_words=False, break_on_hyphens=False)
    return "  why: >-\n" + "".join(f"    {part}\n" for part in wrapped)


def skeleton(findings: Iterable[Finding], accepted: Sequence[Accepted]) -> str:
    """The accepted list for these findings: the reasons already given kept, `why: TODO` for new ones."""
    reasons = {a.key: a.why for a in accepted}
    parts = [HEADER]
    for finding in _unique(findings):
        parts.append(f"\n# {finding.check}: {finding.name}\n" if finding.name else "\n")
        parts.append(f"- check: {_scalar(finding.check)}\n  file: {_scalar(finding.file)}\n"
                     f"  resource: {_scalar(finding.resource)}\n")
        parts.append(_why(reasons.get(finding.key, TODO)))
    return "".join(parts)


def checkov_env(environ: Mapping[str, str], home: str) -> dict[str, str]:
    """The environment checkov runs in: the caller's without checkov's own variables, no PyPI version
    check, no platform mapping download, and a home directory of its own (no ~/.checkov.yaml)."""
    env = {k: v for k, v in environ.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
    env.update(CKV_SKIP_PACKAGE_UPDATE_CHECK="true", BC_SKIP_MAPPING="TRUE", HOME=home)
    return env


def run_checkov(checkov: Path, *, root: Path = ROOT) -> Any:
    """Run checkov on the Bicep under root/infra and return its parsed JSON output."""
    if not os.access(checkov, os.X_OK):
        raise GateError(f"{checkov} not found: ./dev checkov installs it (in .venv-checkov)")
    # Not --quiet: that drops the inline skips and the names of unparsed files from the JSON.
    command = [str(checkov), "--directory", SCANNED, "--framework", "bicep", "--output", "json", "--compact",
               "--skip-download", "--download-external-modules", "false"]
    with tempfile.TemporaryDirectory(prefix="checkov-home-") as home:
        try:
            done = subprocess.run(command, cwd=root, env=checkov_env(os.environ, home),  # noqa: S603 - our argv, no shell
                                  capture_output=True, text=True, timeout=CHECKOV_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as error:
            raise GateError(f"checkov did not finish within {CHECKOV_TIMEOUT_S} s") from error
    # checkov exits 1 when a check fails; anything else but 0 is checkov itself failing.
    if done.returncode not in (0, 1):
        raise GateError(f"checkov exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise GateError(f"checkov printed no JSON ({error}): {done.stderr.strip()[-2000:]}") from error


def _stdout_is(path: Path) -> bool:
    try:
        out, target = os.fstat(sys.stdout.fileno()), path.stat()
    except (OSError, ValueError):
        return False
    return (out.st_dev, out.st_ino) == (target.st_dev, target.st_ino)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev checkov", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write-accepted", action="store_true",
                        help="print the accepted list for the current findings (reasons kept, new ones "
                             "why: TODO) instead of checking; redirect it to another file, then move it")
    parser.add_argument("--checkov", type=Path, default=DEFAULT_CHECKOV, help="the checkov executable")
    parser.add_argument("--accepted", type=Path, default=ACCEPTED_PATH, help="the accepted list")
    args = parser.parse_args(argv)
    path: Path = args.accepted
    try:
        if args.write_accepted and _stdout_is(path):
            # The shell emptied the file before the gate could read its reasons.
            raise GateError(f"refusing to print into {path}, which the shell has already emptied: restore it, "
                            f"write to another file and move that over it")
        accepted = load_accepted(path.read_text() if path.exists() else "", source=str(path))
        report = parse_report(run_checkov(args.checkov))
    except GateError as error:
        print(f"checkov: {error}", file=sys.stderr)
        return 2
    if args.write_accepted:
        sys.stdout.write(skeleton(report.failed, accepted))
        known = {a.key for a in accepted}
        found = {f.key for f in report.failed}
        print(f"checkov: {len(found - known)} new entries (why: TODO), {len(known - found)} stale entries left out",
              file=sys.stderr)
        return 0
    verdict = judge(report, accepted)
    for line in verdict.problems:
        print(line)
    print(verdict.summary)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
