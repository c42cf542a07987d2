#!/usr/bin/env bash
# `make test`: run each stage as its own `make STAGE`, in order, stopping at the first failure,
# and print every stage's wall time at the end (also after a failure: what ran, what failed,
# what did not run).   tests/stages.sh STAGE...
set -uo pipefail
make=${MAKE:-make}
declare -a names times results
failed=""
total_start=$(date +%s)
for stage in "$@"; do
  names+=("$stage")
  if [ -n "$failed" ]; then times+=("-"); results+=("not run"); continue; fi
  echo "==> make $stage"
  start=$(date +%s)
  if $make --no-print-directory "$stage"; then results+=("ok"); else results+=("FAILED"); failed=$stage; fi
  times+=("$(( $(date +%s) - start ))")
done
total=$(( $(date +%s) - total_start ))
echo
echo "make test: wall time per stage"
for i in "${!names[@]}"; do
  t=${times[$i]}
  [ "$t" = - ] || t=$(printf '%dm%02ds' $((t / 60)) $((t % 60)))
  printf '  %-14s %8s  %s\n' "${names[$i]}" "$t" "${results[$i]}"
done
printf '  %-14s %8s  %s\n' total "$(printf '%dm%02ds' $((total / 60)) $((total % 60)))" "${failed:+failed at $failed}"
[ -z "$failed" ]
