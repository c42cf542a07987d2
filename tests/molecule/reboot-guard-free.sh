#!/bin/bash
# molecule host.yml: no session open now; run the reboot guard's unit again. Prints "calls: N",
# the guard's last two journal lines and its decision metric, then starts the timer again.
# No -e: each line is a result for the assert; the exit status is the timer start's.
set -uo pipefail
systemctl start neo-host-reboot-guard.service
echo "calls: $(wc -l 2>/dev/null </root/neo-test-reboots.log || echo 0)"
journalctl -u neo-host-reboot-guard.service -o cat --no-pager | grep 'reboot-guard:' | tail -n 2
grep '^neo_host_reboot_guard_last_decision{decision="rebooting"}' /var/lib/prometheus/node-exporter/neo_host.prom
rm -f /run/neo-test-reboot-required
systemctl start neo-host-reboot-guard.timer
