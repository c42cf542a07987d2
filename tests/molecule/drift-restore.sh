#!/bin/bash
# molecule drift.yml: put the pre-session backups moved aside by drift-break.sh back.
set -euo pipefail
cp -a /root/drift-pre_session.aside/. /opt/neo/runtime/backups/pre_session/
rm -rf /root/drift-pre_session.aside
