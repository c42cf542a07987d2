#!/bin/bash
# molecule drift.yml: what the rerun left on the box, one line each (the assert compares the lines).
set -euo pipefail
stat -c 'pre %U %a' /opt/neo/runtime/backups/pre_session
stat -c 'db %U %a' /opt/neo/runtime/db
grep -c '# drift' /etc/systemd/system/neo-engine.service.d/10-safeguards.conf || true
echo "timer $(systemctl is-enabled neo-db-prune.timer) $(systemctl is-active neo-db-prune.timer)"
stat -c 'pyz %U %a' /opt/neo/hooks/neo_db.pyz
