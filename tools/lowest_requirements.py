"""Pin every runtime requirement to its floor: the constraints `./dev test-lowest` installs, so a
floor in requirements.txt that the code has outgrown fails CI instead of a user's deployment.

    python -m tools.lowest_requirements [requirements.txt]  ->  name==floor, one per line
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?P<spec>[^;#]*)")
_FLOOR = re.compile(r">=\s*(?P<version>[0-9][A-Za-z0-9.]*)")


def floors(text: str) -> list[str]:
    """`name==floor` for each requirement; ValueError naming one that has no `>=` floor."""
    pins = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _REQUIREMENT.match(line)
        floor = _FLOOR.search(match["spec"]) if match else None
        if match is None or floor is None:
            raise ValueError(f"line {number}: {raw.strip()!r} has no >= floor: every requirement needs one")
        pins.append(f"{match['name']}=={floor['version']}")
    return pins


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else Path(__file__).resolve().parents[1] / "requirements.txt")
    try:
        print("\n".join(floors(path.read_text(encoding="utf-8"))))
    except ValueError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
