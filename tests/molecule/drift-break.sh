#!/bin/bash
# molecule drift.yml: change the box behind Ansible's back (pre_session/ aside, db/ opened, the
# engine drop-in edited, a timer removed, the hook code owned by neo).
set -euo pipefail
mv /opt/neo/runtime/backups/pre_session /root/drift-pre_session.aside
chmod 755 /opt/neo/runtime/db
echo '# drift' >> /etc/systemd/system/neo-engine.service.d/10-safeguards.conf
rm /etc/systemd/system/neo-db-prune.timer
chown neo /opt/neo/hooks/neo_db.pyz
systemctl daemon-reload
