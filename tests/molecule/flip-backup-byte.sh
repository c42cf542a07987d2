#!/bin/bash
# molecule monitoring.yml: keep BACKUP as /root/post.good, flip one bit of byte 200 in BACKUP
# (same size, wrong sha256) and clear the receiver log.
set -euo pipefail
backup=$1
cp -a "$backup" /root/post.good
byte=$(od -An -tu1 -j200 -N1 "$backup")
[ -n "${byte// /}" ] || { echo "$backup: shorter than 201 bytes" >&2; exit 1; }
# shellcheck disable=SC2059  # the format is the octal escape of the flipped byte
printf "\\$(printf '%03o' $((byte ^ 1)))" | dd of="$backup" bs=1 seek=200 conv=notrunc status=none
: > /root/received.jsonl
