#!/usr/bin/env bash
# `make demo`: bring up the stand-in VPS neo-vps-local (left running for inspection),
# provision it with site.yml, run one engine session through the safeguards, and
# show where the backups and db_health landed. Rerun it: site.yml then reports changed=0.
set -euo pipefail
cd "$(dirname "$0")/.."

name=neo-vps-local
suite=${NEO_STANDIN_SUITE:-bookworm}
# site.yml's host baseline loads an nftables ruleset (NET_ADMIN; without it: "netlink: cache
# initialization failed: Operation not permitted") and needrestart reads /proc/PID/maps
# (SYS_PTRACE), as on a real host whose root has every capability; molecule grants the same.
caps=(--cap-add NET_ADMIN --cap-add SYS_PTRACE)
case "$suite" in
  bookworm) image=${NEO_STANDIN_IMAGE:-localhost/neo-vps-standin:debian12} ;;
  # systemd 257 keeps CAP_SYS_ADMIN for ProtectHostname=/ProtectKernelTunables= with User=:
  # a container must grant it (a real host's PID 1 has it), or sessions fail with 217/USER.
  trixie) image=${NEO_STANDIN_IMAGE:-localhost/neo-vps-standin:debian13-fresh}; caps+=(--cap-add SYS_ADMIN) ;;
  *) echo "error: NEO_STANDIN_SUITE=$suite: use bookworm (Debian 12) or trixie (Debian 13)" >&2; exit 2 ;;
esac
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/standin/containers.conf}
export ANSIBLE_CONFIG=$PWD/ansible.cfg
in_vps() { podman exec "$name" "$@"; }
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "stand-in VPS $name ($image)"
if podman container exists "$name" && [ "$(podman inspect -f '{{.ImageName}}' "$name")" != "$image" ]; then
  echo "error: $name runs $(podman inspect -f '{{.ImageName}}' "$name"), not $image: 'make standin-down' removes it" >&2
  exit 2
fi
if podman container exists "$name" && ! podman inspect -f '{{range .HostConfig.CapAdd}}{{.}} {{end}}' "$name" | grep -q NET_ADMIN; then
  echo "error: $name was started without NET_ADMIN (an older demo), which the host baseline's firewall needs: 'make standin-down' removes it (its demo DB with it), then rerun" >&2
  exit 2
fi
if ! podman container exists "$name"; then
  podman run -d --name "$name" --hostname "$name" --systemd=always "${caps[@]}" "$image" /sbin/init >/dev/null
  echo "started $name"
elif [ "$(podman inspect -f '{{.State.Running}}' "$name")" != true ]; then
  podman start "$name" >/dev/null
  echo "restarted $name"
else
  echo "$name is already running"
fi
for _ in $(seq 1 60); do
  state=$(in_vps systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 1
done
echo "systemd in $name: ${state:-unknown}"

step "ansible-playbook -i inventory/local.yml site.yml"
ansible-playbook -i inventory/local.yml site.yml

step "one session of the demo engine: systemctl start, 4 s of ticks, systemctl stop"
in_vps systemctl start neo-engine
sleep 4
in_vps systemctl stop neo-engine
session=$(in_vps sh -c 'sed -n "s/^NEO_SESSION_ID=//p" /opt/neo/runtime/state/session.env')
in_vps journalctl -u neo-engine -o cat --no-pager -n 40 | grep -E "session|backup|demo-engine" | tail -n 12

step "no migration on the demo box: record the demo engine's DB as its own origin (neo-db import --adopt)"
show=$(in_vps neo-db import --show --json)
if [ "$(printf '%s' "$show" | python3 -c 'import json, sys; print(json.load(sys.stdin)["origin"] is None)')" = True ]; then
  in_vps neo-db import --adopt
else
  echo "the origin is already recorded (neo-db import --show)"
fi

step "backups (neo-db list)"
in_vps neo-db list

step "db_health of $session (neo-db health --session $session)"
in_vps neo-db health --session "$session"

cat <<TXT

Where things landed, inside $name:
  backups    /opt/neo/runtime/backups/{pre_session,post_session,abnormal_stop}/
  db_health  /opt/neo/runtime/exports/sessions/$session/db_health.json (merged into summary.json)
  config     /etc/neo/db_safeguards.yml
Look around:  podman exec -it $name bash     Remove it:  make standin-down
TXT
