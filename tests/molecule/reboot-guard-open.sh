#!/bin/bash
# molecule host.yml: a reboot is pending and the session is open; run the reboot guard's unit.
# Prints "calls: N", the fake reboot command's calls so far.
# No -e: the guard's unit may fail; the calls line is the result.
set -u
systemctl stop neo-host-reboot-guard.timer  # only these two runs decide
touch /run/neo-test-reboot-required
systemctl start neo-host-reboot-guard.service
test -f /root/neo-test-reboots.log && echo "calls: $(wc -l < /root/neo-test-reboots.log)" || echo "calls: 0"
