#!/bin/bash
# A catalogue script: tag a Linux machine maintenance-pre-script=example to run it before patching.
set -eu
echo "host: $(hostname)"
echo "uptime: $(uptime -p 2>/dev/null || uptime)"
echo "failed units: $(systemctl list-units --state=failed --no-legend 2>/dev/null | wc -l)"
