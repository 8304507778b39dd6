#!/bin/sh
# azd preprovision hook (azure.yaml): fixes the first window of a new maintenance configuration.
# main.bicep gives it no default: one computed at deployment time would move the schedule's start on
# every provision, and a deployment late in the day would miss the first pre event, which comes 40
# minutes before the window. So when azd is to create the configuration (MAINTENANCE_CONFIGURATION_ID
# empty) and MAINTENANCE_WINDOW_START is empty, this picks tomorrow at 22:00 and stores it in the azd
# environment, where every later provision finds the same value (azd reloads its environment before
# it reads main.parameters.json). A start that is set is checked for the form main.bicep takes.
set -eu

# An existing configuration keeps its own schedule: the start is not used.
if [ -n "${MAINTENANCE_CONFIGURATION_ID:-}" ]; then
  exit 0
fi

# yyyy-MM-dd HH:mm and nothing else (grep matches line by line, so a second line is refused first).
is_start() {
  case $1 in *"
"*) return 1 ;; esac
  printf '%s\n' "$1" | grep -Eqx '[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]) ([01][0-9]|2[0-3]):[0-5][0-9]'
}

# Tomorrow, so the window is always more than 40 minutes ahead, in any time zone. GNU date, else BSD date.
tomorrow="$(date -u -d tomorrow +%Y-%m-%d 2>/dev/null || date -u -v+1d +%Y-%m-%d) 22:00"

start=${MAINTENANCE_WINDOW_START:-}
if [ -n "$start" ]; then
  if is_start "$start"; then
    exit 0
  fi
  echo "preprovision: MAINTENANCE_WINDOW_START is '$start'; it must be yyyy-MM-dd HH:mm, e.g. azd env set MAINTENANCE_WINDOW_START \"$tomorrow\"" >&2
  exit 1
fi

azd env set MAINTENANCE_WINDOW_START "$tomorrow"
echo "preprovision: MAINTENANCE_WINDOW_START was empty: the new maintenance configuration's first window starts $tomorrow (${MAINTENANCE_WINDOW_TIME_ZONE:-UTC}), kept in the azd environment for every later provision."
echo "preprovision: another start: azd env set MAINTENANCE_WINDOW_START \"yyyy-MM-dd HH:mm\", then azd provision"
