#!/bin/bash
# molecule host.yml: make UNIT (the engine) and a free probe unit map a library that is then
# deleted (an upgraded library, for needrestart). Prints how many deleted mappings UNIT holds
# (fails if none).
set -euo pipefail
unit=$1
cp /lib/x86_64-linux-gnu/libz.so.1 /usr/local/lib/neo-test-preload.so
mkdir -p "/etc/systemd/system/$unit.d"
printf '[Service]\nEnvironment=LD_PRELOAD=/usr/local/lib/neo-test-preload.so\n' > "/etc/systemd/system/$unit.d/99-neo-test-preload.conf"
systemctl daemon-reload
systemd-run --unit neo-test-nr-free -p Environment=LD_PRELOAD=/usr/local/lib/neo-test-preload.so sleep infinity
systemctl start "$unit"
# Both must have mapped it before it is deleted (a fixed sleep raced a slow start).
for _ in $(seq 60); do
  e=$(systemctl show -p MainPID --value "$unit"); f=$(systemctl show -p MainPID --value neo-test-nr-free)
  grep -qs neo-test-preload.so /proc/"$e"/maps && grep -qs neo-test-preload.so /proc/"$f"/maps && break
  sleep 0.5
done
rm /usr/local/lib/neo-test-preload.so
grep -c 'neo-test-preload.so (deleted)' "/proc/$(systemctl show -p MainPID --value "$unit")/maps"
