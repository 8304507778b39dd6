"""The floors `./dev test-lowest` installs: one pin per requirement, and none may lack a floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.lowest_requirements import floors, main

ROOT = Path(__file__).resolve().parents[2]


def test_each_requirement_is_pinned_to_its_floor() -> None:
    text = "# comment\nazure-core>=1.33,<2\nazure-mgmt-core >= 1.6\nrequests[socks]>=2.31,<3  # why\n\n-r other.txt\n"
    assert floors(text) == ["azure-core==1.33", "azure-mgmt-core==1.6", "requests==2.31"]


@pytest.mark.parametrize("line", ["azure-core", "azure-core<2", "azure-core==1.33", "azure-core~=1.33"])
def test_a_requirement_without_a_floor_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="line 1: .* has no >= floor"):
        floors(line)


def test_the_project_s_requirements_all_have_floors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(ROOT / "requirements.txt")]) == 0
    pins = capsys.readouterr().out.split()
    names = [p.split("==")[0] for p in pins]
    assert "azure-functions" in names and "azure-mgmt-compute" in names and len(names) == len(set(names))
