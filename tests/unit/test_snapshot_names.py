from __future__ import annotations

import re

from handlers.adapters.snapshots import snapshot_name
from handlers.core.settings import CHECK_NAMES
from handlers.phases.pre.checks import CHECKS

RUN = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
       "Microsoft.Maintenance/maintenanceConfigurations/mc/providers/Microsoft.Maintenance/applyUpdates/20261122020000")
DISK = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/disks/"
AZURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,78}[A-Za-z0-9_]$")


def test_names_are_deterministic_valid_and_case_insensitive() -> None:
    name = snapshot_name(DISK + "web-01-osdisk", RUN)
    assert name == snapshot_name((DISK + "web-01-osdisk").upper(), RUN.lower())
    assert name.startswith("mt-web-01-osdisk-20261122020000-") and AZURE_NAME.fullmatch(name)


def test_long_and_odd_disk_names_still_fit() -> None:
    name = snapshot_name(DISK + "a" * 80 + "(weird)", RUN)
    assert len(name) <= 80 and AZURE_NAME.fullmatch(name)


def test_different_disks_or_runs_never_share_a_name() -> None:
    assert snapshot_name(DISK + "x", RUN) != snapshot_name(DISK.replace("/rg/", "/rg2/") + "x", RUN)
    assert snapshot_name(DISK + "x", RUN) != snapshot_name(DISK + "x", RUN.replace("20261122", "20261129"))


def test_every_check_name_is_registered() -> None:
    assert tuple(CHECKS) == CHECK_NAMES
