#!/bin/bash
# molecule host.yml: stop UNIT and the probe unit cleanly, remove the preload drop-in.
# No -e, as before: the exit status is daemon-reload's.
set -u
unit=$1
systemctl stop "$unit" neo-test-nr-free
rm -f "/etc/systemd/system/$unit.d/99-neo-test-preload.conf"
systemctl daemon-reload
