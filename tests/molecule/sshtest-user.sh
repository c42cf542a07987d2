#!/bin/bash
# molecule host.yml: a test user with a password and a key (the password makes the refusal
# meaningful), and an SSH_ASKPASS helper that types the password.
set -euo pipefail
id neo-sshtest >/dev/null 2>&1 || useradd -m -s /bin/sh neo-sshtest
echo 'neo-sshtest:Molecule-Pw-4711' | chpasswd
test -f /root/.ssh/neo-sshtest || { install -d -m 0700 /root/.ssh; ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/neo-sshtest; }
install -d -m 0700 -o neo-sshtest -g neo-sshtest ~neo-sshtest/.ssh
install -m 0600 -o neo-sshtest -g neo-sshtest /root/.ssh/neo-sshtest.pub ~neo-sshtest/.ssh/authorized_keys
printf '#!/bin/sh\necho Molecule-Pw-4711\n' > /root/.ssh/askpass && chmod 0700 /root/.ssh/askpass
