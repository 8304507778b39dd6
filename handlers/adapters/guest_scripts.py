"""The scripts that stop services before patching and start them after, for Linux and Windows.

Service names arrive validated (`handlers.core.guest_tags.SERVICE_NAME`: no quote, space or
backslash) and go in as single-quoted literals: in bash and in PowerShell nothing inside single
quotes is expanded, `$` included. Stopping ends at the first service that does not stop (what
was listed before it stays stopped and is started again after the window); starting tries every
service and fails if any did not come up. Each waits until its service has reached the state,
at most `wait_seconds` per service (the run command's own timeout bounds the whole).
"""

from __future__ import annotations

from collections.abc import Sequence

from handlers.core.guest_tags import SERVICE_NAME

_HEADER = "update-manager-maintenance-toolkit"

_BASH_STOP = """#!/bin/bash
# {header}: stop services before patching, in order; wait until each is inactive.
set -u
wait_seconds={wait}
for unit in {names}; do
  if ! systemctl stop -- "$unit"; then
    echo "$unit: systemctl stop failed" >&2
    exit 1
  fi
  waited=0
  while systemctl is-active --quiet -- "$unit"; do
    if [ "$waited" -ge "$wait_seconds" ]; then
      echo "$unit: still active after ${{wait_seconds}} s" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "$unit: stopped"
done
"""

_BASH_START = """#!/bin/bash
# {header}: start services after patching, in order; wait until each is active.
set -u
wait_seconds={wait}
failed=0
for unit in {names}; do
  if ! systemctl start -- "$unit"; then
    echo "$unit: systemctl start failed" >&2
    failed=1
    continue
  fi
  waited=0
  until systemctl is-active --quiet -- "$unit"; do
    if [ "$waited" -ge "$wait_seconds" ]; then
      echo "$unit: not active after ${{wait_seconds}} s" >&2
      failed=1
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done
  systemctl is-active --quiet -- "$unit" && echo "$unit: running"
done
exit "$failed"
"""

_POWERSHELL_STOP = """# {header}: stop services before patching, in order; wait until each is stopped.
$ErrorActionPreference = 'Stop'
$wait = New-TimeSpan -Seconds {wait}
foreach ($name in @({names})) {{
  try {{
    $service = Get-Service -Name $name
    # -Force: a service others depend on stops with its dependents (list those too, to start them after).
    Stop-Service -InputObject $service -Force
    $service.WaitForStatus('Stopped', $wait)
    Write-Output "${{name}}: stopped"
  }} catch {{
    Write-Error "${{name}}: $($_.Exception.Message)" -ErrorAction Continue
    exit 1
  }}
}}
exit 0
"""

_POWERSHELL_START = """# {header}: start services after patching, in order; wait until each is running.
$ErrorActionPreference = 'Stop'
$wait = New-TimeSpan -Seconds {wait}
$failed = 0
foreach ($name in @({names})) {{
  try {{
    $service = Get-Service -Name $name
    Start-Service -InputObject $service
    $service.WaitForStatus('Running', $wait)
    Write-Output "${{name}}: running"
  }} catch {{
    Write-Error "${{name}}: $($_.Exception.Message)" -ErrorAction Continue
    $failed = 1
  }}
}}
exit $failed
"""

_TEMPLATES = {
    ("linux", "stop"): (_BASH_STOP, " "),
    ("linux", "start"): (_BASH_START, " "),
    ("windows", "stop"): (_POWERSHELL_STOP, ", "),
    ("windows", "start"): (_POWERSHELL_START, ", "),
}


def services_script(os_type: str, verb: str, services: Sequence[str], *, wait_seconds: int) -> str:
    """The script that runs `verb` ("stop" | "start") on `services`, in the order given."""
    template, separator = _TEMPLATES[(os_type.lower(), verb)]
    for name in services:
        if not SERVICE_NAME.fullmatch(name):  # checked when the tag was read; never paste an unchecked name
            raise ValueError(f"refusing to put {name!r} in a script")
    names = separator.join(f"'{name}'" for name in services)
    return template.format(header=_HEADER, wait=int(wait_seconds), names=names)
