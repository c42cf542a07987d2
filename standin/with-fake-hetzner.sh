#!/usr/bin/env bash
# Run a command with the fake Hetzner Cloud API serving on 127.0.0.1 (there is no real
# Hetzner here): HCLOUD_ENDPOINT and HCLOUD_TOKEN point the hetzner_backups role at it.
#   standin/with-fake-hetzner.sh [--state-file F] -- COMMAND...
# The stand-in servers neo-vps-local, neo-vps-molecule and neo-vps-prod-molecule exist in it, backups off.
set -euo pipefail
cd "$(dirname "$0")/.."
state_args=()
if [ "${1:-}" = --state-file ]; then state_args=(--state-file "$2"); mkdir -p "$(dirname "$2")"; shift 2; fi
[ "${1:-}" = -- ] && shift

python=${FAKE_HETZNER_PYTHON:-python3}
port_file=$(mktemp)
log=$(mktemp)
"$python" tests/fake_hetzner/server.py --port 0 --port-file "$port_file" --token fake-standin-token \
  --server neo-vps-local --server neo-vps-molecule --server neo-vps-prod-molecule "${state_args[@]}" >"$log" 2>&1 &
fake=$!
cleanup() {
  local status=$?  # the command's status, not the fake's (which dies by SIGTERM here)
  kill "$fake" 2>/dev/null || true
  wait "$fake" 2>/dev/null || true
  rm -f "$port_file" "$log"
  exit "$status"
}
trap cleanup EXIT
for _ in $(seq 1 50); do [ -s "$port_file" ] && break; sleep 0.1; done
[ -s "$port_file" ] || { echo "error: the fake Hetzner API did not start:" >&2; cat "$log" >&2; exit 1; }
export HCLOUD_ENDPOINT="http://127.0.0.1:$(cat "$port_file")/v1" HCLOUD_TOKEN=fake-standin-token
echo "fake Hetzner Cloud API at $HCLOUD_ENDPOINT"
"$@"
