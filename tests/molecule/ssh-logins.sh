#!/bin/bash
# molecule host.yml: log in with the key, and try the password (SSH_ASKPASS types it), on sshd and
# on a probe sshd on port 2222 with PasswordAuthentication forced on (the positive control).
# Prints "key: ...", "password: ...", "probe-password: ..." lines, each ending in rc=N.
# No -e: a refused login is an expected result, reported in its line; the exit status is kill's.
set -uo pipefail
opts=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
# shellcheck disable=SC2054  # the comma is in an ssh option value, not between array elements
pw=(-o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive -o NumberOfPasswordPrompts=1)
# one line per login: ssh ends its messages with CR LF, and each rc is taken right after its ssh
# (dash, the default /bin/sh, expanded "$(ssh ...) rc=$?" to rc=0 whatever ssh returned)
login() { out=$("$@" 2>&1 </dev/null); rc=$?; printf '%s rc=%s\n' "$(printf '%s' "$out" | tr '\r\n' '  ')" "$rc"; }
/usr/sbin/sshd -p 2222 -o PasswordAuthentication=yes -o AuthenticationMethods=any -o PidFile=/run/sshd-probe.pid
echo "key: $(login ssh "${opts[@]}" -o BatchMode=yes -i /root/.ssh/neo-sshtest neo-sshtest@127.0.0.1 id -un)"
export SSH_ASKPASS=/root/.ssh/askpass SSH_ASKPASS_REQUIRE=force DISPLAY=none
echo "password: $(login setsid -w ssh "${opts[@]}" "${pw[@]}" neo-sshtest@127.0.0.1 id -un)"
echo "probe-password: $(login setsid -w ssh "${opts[@]}" "${pw[@]}" -p 2222 neo-sshtest@127.0.0.1 id -un)"
kill "$(cat /run/sshd-probe.pid)"
