#!/bin/bash
# molecule verify.yml: AtoCore's Chroma archives under ROOT and its state. Prints
# "count N", "state S", "newest NAME" and the newest archive's JSON record on one line.
# No -e, as before: a missing record leaves its line empty for the assert to report.
set -uo pipefail
root=$1
archives() { find "$root" -name 'chroma-*.tar.gz' -type f; }
echo "count $(archives | wc -l)"
echo "state $(systemctl is-active atocore.service)"
newest=$(archives | sort | tail -n 1)  # the newest is this run (an earlier archive says inactive too)
echo "newest $(basename "$newest")"
tr -d '\n' < "${newest%.tar.gz}.json"; echo
