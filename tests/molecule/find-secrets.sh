#!/bin/bash
# molecule token.yml and monitoring.yml: search every file on the box and the journal for each
# secret read from stdin (one a line; never argv or the environment: with become, sudo logs the
# command line, environment assignments included, to the journal). Paths given as arguments
# may hold them. Per secret: up to 5 other files holding it, then the journal's match count.
# .ansible/ is skipped: it holds the running task's module payload, removed when it ends.
# A journalctl that fails prints a line of its own (grep alone would count 0 and pass).
# No -e: every secret is searched; the lines are the result (exit 0).
set -uo pipefail
allowed=()
for p in "$@"; do allowed+=(-e "$p"); done
others() { if [ ${#allowed[@]} -gt 0 ]; then grep -vxF "${allowed[@]}"; else cat; fi; }
while IFS= read -r token || [ -n "$token" ]; do
  grep -rlaF --exclude-dir=.ansible -e "$token" /etc /opt /root /srv /tmp /var /home /usr/local | others | head -n 5
  journalctl -o cat --no-pager | grep -caF -e "$token"
  s=("${PIPESTATUS[@]}"); [ "${s[0]}" = 0 ] || echo "journalctl failed: exit ${s[0]}"
done
true
