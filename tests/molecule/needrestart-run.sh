#!/bin/bash
# molecule host.yml: needrestart in automatic mode, as after an unattended upgrade. Prints
# "batch: UNIT" lines (-b), needrestart's own output, and "pids: E F -> E' F'" (UNIT, probe unit).
# No -e: needrestart's exit status is not the result; the assert reads the output.
set -uo pipefail
unit=$1
before="$(systemctl show -p MainPID --value "$unit") $(systemctl show -p MainPID --value neo-test-nr-free)"
needrestart -b | sed -n 's/^NEEDRESTART-SVC: /batch: /p'
needrestart -r a 2>&1
echo "pids: $before -> $(systemctl show -p MainPID --value "$unit") $(systemctl show -p MainPID --value neo-test-nr-free)"
