#!/bin/bash
# Wait until every queued neo-db notification is sent and no notify unit runs (at most 90 s),
# then print what the receiver got. Waiting is not asserting: the assertions count requests.
set -u
log=$1 queue=$2
for _ in $(seq 1 90); do
  busy=$(systemctl list-units 'neo-db-notify*' --state=activating,active,reloading --no-legend --plain | grep -v '\.path' || true)
  if [ -z "$busy" ] && [ -z "$(ls -A "$queue" 2>/dev/null)" ]; then
    sleep 2
    busy=$(systemctl list-units 'neo-db-notify*' --state=activating,active --no-legend --plain | grep -v '\.path' || true)
    [ -z "$busy" ] && [ -z "$(ls -A "$queue" 2>/dev/null)" ] && break
  fi
  sleep 1
done
cat "$log" 2>/dev/null || true
