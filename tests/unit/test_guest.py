"""In-guest tags are read strictly; the service scripts do what they say (the Linux one run for
real against a stand-in `systemctl`); the catalogue serves only its own files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from handlers.adapters.guest_scripts import services_script
from handlers.adapters.script_catalogue import MAX_SCRIPT_BYTES, ScriptCatalogue, ScriptNotFound
from handlers.core.guest_tags import GuestTagError, read_guest_tags, wave_of


def test_tags_are_read_into_services_scripts_and_a_wave() -> None:
    tags = {"Maintenance-Stop-Services": " MSSQL$SQLEXPRESS, W3SVC ,getty@tty1.service",
            "maintenance-pre-script": "drain-node", "maintenance-post-script": "smoke_test", "maintenance-wave": "2"}
    asked = read_guest_tags(tags)
    assert asked.services == ("MSSQL$SQLEXPRESS", "W3SVC", "getty@tty1.service")
    assert (asked.pre_script, asked.post_script, asked.wave) == ("drain-node", "smoke_test", 2)
    assert read_guest_tags({}).any is False and read_guest_tags({}).wave is None


@pytest.mark.parametrize(("tags", "expected"), [
    ({"maintenance-stop-services": "nginx; rm -rf /"}, "'nginx; rm -rf /' is not a service name"),
    ({"maintenance-stop-services": "nginx,'x'"}, "\"'x'\" is not a service name"),
    ({"maintenance-stop-services": "a,,b"}, "an empty name"),
    ({"maintenance-stop-services": "$(reboot)"}, "is not a service name"),
    ({"maintenance-stop-services": ",".join(f"s{i}" for i in range(33))}, "at most 32"),
    ({"maintenance-pre-script": "../etc/passwd"}, "maintenance-pre-script='../etc/passwd' is not a script name"),
    ({"maintenance-post-script": "curl http://x | sh"}, "maintenance-post-script="),
    ({"maintenance-wave": "first"}, "maintenance-wave='first' is not a wave; use a whole number 0..99"),
    ({"maintenance-wave": "-1"}, "is not a wave"),
])
def test_a_refused_tag_value_names_the_tag_and_what_is_allowed(tags: dict[str, str], expected: str) -> None:
    with pytest.raises(GuestTagError) as raised:
        read_guest_tags(tags)
    assert expected in str(raised.value)
    assert wave_of(tags) is None or tags.get("maintenance-wave") is None


def test_an_unchecked_name_never_reaches_a_script() -> None:
    with pytest.raises(ValueError, match="refusing"):
        services_script("linux", "stop", ["ok", "bad'name"], wait_seconds=10)


def _fake_systemctl(tmp_path: Path, states: dict[str, str], refuse: str = "") -> Path:
    """A `systemctl` that keeps unit states in files: stop/start change them, is-active reads them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    for unit, value in states.items():
        (state / unit).write_text(value)
    script = bin_dir / "systemctl"
    script.write_text(f"""#!/bin/bash
verb=$1; shift
[ "$1" = "--quiet" ] && shift
[ "$1" = "--" ] && shift
unit=$1
echo "$verb $unit" >> {tmp_path}/calls
[ "$unit" = "{refuse}" ] && exit 5
case $verb in
  stop) echo inactive > {state}/"$unit" ;;
  start) echo active > {state}/"$unit" ;;
  is-active) [ "$(cat {state}/"$unit" 2>/dev/null)" = active ] ;;
esac
""")
    script.chmod(0o755)
    (bin_dir / "sleep").write_text("#!/bin/bash\nexit 0\n")
    (bin_dir / "sleep").chmod(0o755)
    return bin_dir


def _run(script: str, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", script],  # noqa: S607 - the machine's bash, from PATH as on a VM
                          capture_output=True, text=True, env=env, timeout=30)


def test_the_linux_stop_script_stops_in_order_and_waits(tmp_path: Path) -> None:
    bin_dir = _fake_systemctl(tmp_path, {"nginx": "active", "my$app.service": "active"})
    done = _run(services_script("linux", "stop", ["nginx", "my$app.service"], wait_seconds=5), bin_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["nginx: stopped", "my$app.service: stopped"]
    calls = (tmp_path / "calls").read_text().split("\n")
    assert calls[0] == "stop nginx" and "stop my$app.service" in calls
    assert calls.index("stop nginx") < calls.index("stop my$app.service")


def test_the_linux_stop_script_ends_at_the_first_service_that_does_not_stop(tmp_path: Path) -> None:
    bin_dir = _fake_systemctl(tmp_path, {"a": "active", "b": "active", "c": "active"}, refuse="b")
    done = _run(services_script("linux", "stop", ["a", "b", "c"], wait_seconds=5), bin_dir)
    assert done.returncode == 1 and "b: systemctl stop failed" in done.stderr
    assert "stop c" not in (tmp_path / "calls").read_text()


def test_the_linux_start_script_starts_every_service_and_reports_the_ones_that_did_not(tmp_path: Path) -> None:
    bin_dir = _fake_systemctl(tmp_path, {"a": "inactive", "b": "inactive", "c": "inactive"}, refuse="b")
    done = _run(services_script("linux", "start", ["c", "b", "a"], wait_seconds=3), bin_dir)
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["c: running", "a: running"]
    assert "b: systemctl start failed" in done.stderr


def test_a_service_that_never_stops_fails_after_the_wait(tmp_path: Path) -> None:
    bin_dir = _fake_systemctl(tmp_path, {"stuck": "active"})
    # A systemctl whose stop returns but leaves the unit active.
    (bin_dir / "systemctl").write_text("#!/bin/bash\n[ \"$1\" = is-active ] && exit 0\nexit 0\n")
    done = _run(services_script("linux", "stop", ["stuck"], wait_seconds=3), bin_dir)
    assert done.returncode == 1 and "stuck: still active after 3 s" in done.stderr


def test_the_windows_scripts_quote_every_name_and_wait_for_the_state() -> None:
    stop = services_script("windows", "stop", ["MSSQL$SQLEXPRESS", "W3SVC"], wait_seconds=120)
    assert "foreach ($name in @('MSSQL$SQLEXPRESS', 'W3SVC'))" in stop
    assert "Stop-Service -InputObject $service -Force" in stop and "WaitForStatus('Stopped', $wait)" in stop
    assert "New-TimeSpan -Seconds 120" in stop and "exit 1" in stop
    start = services_script("windows", "start", ["W3SVC"], wait_seconds=60)
    assert "Start-Service -InputObject $service" in start and "WaitForStatus('Running', $wait)" in start


def test_the_catalogue_serves_its_own_files_by_os_type(tmp_path: Path) -> None:
    (tmp_path / "drain.sh").write_text("echo drained\n")
    (tmp_path / "big.sh").write_bytes(b"#" * (MAX_SCRIPT_BYTES + 1))
    catalogue = ScriptCatalogue(str(tmp_path))
    assert catalogue.get("drain", "Linux") == "echo drained\n"
    (tmp_path / "drain.sh").write_text("changed\n")
    assert catalogue.get("drain", "linux") == "echo drained\n"  # read once per catalogue
    with pytest.raises(ScriptNotFound, match="not in the catalogue: the app's script folder, file 'drain.ps1'"):
        catalogue.get("drain", "windows")
    with pytest.raises(ScriptNotFound, match="at most 65536"):
        catalogue.get("big", "linux")
    with pytest.raises(ScriptNotFound, match="OS type 'unknown'"):
        catalogue.get("drain", "")
    with pytest.raises(ScriptNotFound, match="not a catalogue script name"):
        catalogue.get("../drain", "linux")


def test_the_shipped_examples_are_in_the_default_catalogue() -> None:
    catalogue = ScriptCatalogue("scripts")
    assert "hostname" in catalogue.get("example", "linux")
    assert "COMPUTERNAME" in catalogue.get("example", "windows")
