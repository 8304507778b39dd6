"""What the deployment package holds: `.funcignore` (gitignore syntax, as Core Tools and azd read
it) keeps out a developer's settings and caches, and keeps in what the app imports."""

from __future__ import annotations

from pathlib import Path

import pathspec

ROOT = Path(__file__).resolve().parents[2]
SPEC = pathspec.PathSpec.from_lines("gitignore", (ROOT / ".funcignore").read_text().splitlines())


def test_secrets_caches_and_development_files_stay_out() -> None:
    for path in ("local.settings.json", "__pycache__/function_app.cpython-311.pyc",
                 "handlers/core/__pycache__/settings.cpython-312.pyc", "handlers/x.pyc", ".venv/bin/python",
                 "tests/conftest.py", "emulator/service.py", ".demo/report.html", ".git/config", "infra/main.bicep",
                 ".venv-checkov/bin/checkov", "requirements-checkov.txt", "infra/checkov-accepted.yaml"):
        assert SPEC.match_file(path), f"{path} would be deployed"


def test_what_the_app_needs_goes_in() -> None:
    for path in ("function_app.py", "host.json", "requirements.txt", "handlers/core/settings.py",
                 "handlers/phases/post/report_html.py", "scripts/README.md"):
        assert not SPEC.match_file(path), f"{path} would be left out"
