"""The sshd lockout revert, over a real SSH connection to a stand-in's real sshd (issue 16).

neo_host installs its sshd drop-in, arms a transient timer on the box that puts the previous
settings back, reloads sshd and then needs a *fresh* SSH connection to disarm it. Here the
controller logs in as root, so `neo_host_ssh_permit_root_login: "no"` is a config that
passes `sshd -t` and still locks the operator out: the run must fail, say that the box
reverted by itself, and leave the box reachable with the previous settings. The same test
first converges with the default (root by key only) as the positive control: the drop-in is
kept and the revert timer is disarmed.

The box is reached on its podman bridge address at port 22, so the reconnect check dials
the port that sshd really listens on. A second test reaches the same box through a published
port (127.0.0.1:NNNNN -> 22, as the bench does, or as a NAT or jump host would): the check
must dial the inventory's port, not sshd's, when the port does not move.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import site_playbook

pytestmark = pytest.mark.standin

NAME = os.environ.get("NEO_SSHLOCK_BOX", "neo-vps-sshlock")
IMAGE = os.environ.get("NEO_STANDIN_IMAGE", "localhost/neo-vps-standin:debian12")
DROPIN = "/etc/ssh/sshd_config.d/00-neo-host.conf"
RECONNECT_TIMEOUT = 10  # the box reverts by itself RECONNECT_TIMEOUT + 30 s after arming
# Only the SSH part of the host role: the firewall needs NET_ADMIN, and the rest is molecule's.
ONLY_SSH = {
    "neo_host_packages_enabled": False,
    "neo_host_firewall_enabled": False,
    "neo_host_unattended_upgrades_enabled": False,
    "neo_host_needrestart_enabled": False,
    "neo_host_reboot_guard_enabled": False,
    "neo_host_timesync_enabled": False,
    "neo_host_journald_enabled": False,
    "neo_host_ssh_reconnect_timeout": RECONNECT_TIMEOUT,
}


def podman(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, input=stdin, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def box(script: str, check: bool = True) -> str:
    return podman("exec", NAME, "sh", "-c", script, check=check).stdout


def ssh_login(address: str, key: Path) -> subprocess.CompletedProcess[str]:
    """A fresh root login with the key, as the operator's next connection would be."""
    return subprocess.run(
        ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=10", "-o", "ControlMaster=no", "-o", "ControlPath=none", f"root@{address}", "echo in"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def wait_for_sshd(address: str, key: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ssh_login(address, key).stdout.strip() == "in":
            return
        time.sleep(1)
    raise AssertionError(f"no root login on {address} within 60 s: {ssh_login(address, key).stderr}")


@pytest.fixture(scope="module")
def sshbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Path]]:
    if subprocess.run(["ssh", "-V"], capture_output=True, check=False).returncode != 0:
        pytest.fail("no ssh client on this machine: `make deps` installs openssh-client")
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"the stand-in image {IMAGE} is missing: run `make image` (make test builds it)")
    work = tmp_path_factory.mktemp("sshlock")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    podman("rm", "-f", NAME, check=False)
    podman("run", "-d", "--name", NAME, "--hostname", NAME, "-p", "127.0.0.1::22", "--systemd=always", IMAGE, "/sbin/init")
    deadline = time.monotonic() + 90
    while box("systemctl is-system-running || true").strip() not in ("running", "degraded"):
        assert time.monotonic() < deadline, f"systemd in {NAME} did not come up"
        time.sleep(0.5)
    podman("exec", "-i", NAME, "sh", "-c",
           "ssh-keygen -A >/dev/null && install -d -m 0700 /root/.ssh && cat > /root/.ssh/authorized_keys"
           " && chmod 0600 /root/.ssh/authorized_keys && systemctl start ssh",
           stdin=key.with_suffix(".pub").read_text())  # fmt: skip
    address = podman("inspect", NAME, "--format", "{{.NetworkSettings.IPAddress}}").stdout.strip()
    assert address, f"{NAME} has no address on podman's bridge network"
    wait_for_sshd(address, key)
    inventory = work / "inventory.yml"
    inventory.write_text(
        f"neo_vps:\n  hosts:\n    {NAME}:\n      ansible_connection: ssh\n      ansible_host: {address}\n"
        f"      ansible_port: 22\n      ansible_user: root\n      ansible_ssh_private_key_file: {key}\n"
        "      ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n"
        "      ansible_python_interpreter: /usr/bin/python3\n"
    )
    forwarded = podman("port", NAME, "22/tcp").stdout.strip().rsplit(":", 1)[-1]
    (work / "inventory-forwarded.yml").write_text(
        inventory.read_text()
        .replace(f"ansible_host: {address}", "ansible_host: 127.0.0.1")
        .replace("ansible_port: 22", f"ansible_port: {forwarded}")
    )
    yield inventory, address, key
    if os.environ.get("NEO_FAULT_KEEP") != "1":
        podman("rm", "-f", NAME, check=False)


def converge(inventory: Path, **extra: object) -> tuple[int, str]:
    return site_playbook(inventory, "--tags", "host", "-e", json.dumps({**ONLY_SSH, **extra}))


def test_a_drop_in_that_locks_the_operator_out_is_reverted_by_the_box(sshbox: tuple[Path, str, Path]) -> None:
    inventory, address, key = sshbox

    # Positive control: root by key only lets the controller (root, key) back in, so the drop-in
    # is kept, the fresh connection disarmed the box's revert, and a new login works.
    rc, out = converge(inventory)
    assert rc == 0, out[-4000:]
    assert "Disarm the box's revert" in out, out[-4000:]
    kept = box(f"cat {DROPIN}")
    assert "PermitRootLogin prohibit-password" in kept, kept
    assert box("systemctl is-active neo-host-sshd-revert.timer", check=False).strip() != "active"
    assert "permitrootlogin without-password" in box("/usr/sbin/sshd -T") or "permitrootlogin prohibit-password" in box("/usr/sbin/sshd -T")
    assert ssh_login(address, key).stdout.strip() == "in"

    # The lockout: sshd -t accepts it, but root may no longer log in at all.
    rc, out = converge(inventory, neo_host_ssh_permit_root_login="no")
    assert rc != 0, "a drop-in that locks root out was kept:\n" + out[-4000:]
    assert "The box put the previous sshd settings back by itself" in out, out[-4000:]
    assert "Check neo_host_ssh_*" in out, out[-4000:]
    # Nothing of the lockout is left: the previous drop-in, byte for byte, and sshd running it.
    assert box(f"cat {DROPIN}") == kept
    assert "permitrootlogin no" not in box("/usr/sbin/sshd -T")
    assert ssh_login(address, key).stdout.strip() == "in"

    # And the box is still managed: the next run with the good settings is clean.
    rc, out = converge(inventory)
    assert rc == 0, out[-4000:]


def test_a_forwarded_port_is_dialled_as_the_inventory_says(sshbox: tuple[Path, str, Path]) -> None:
    """sshd stays on 22, the controller reaches it on a published port: the fresh connection that
    disarms the revert must use the inventory's port (it used neo_host_ssh_port, 22 on 127.0.0.1:
    "Connection refused", and the box reverted a good drop-in; seen in the bench)."""
    inventory, address, key = sshbox
    forwarded = inventory.with_name("inventory-forwarded.yml")
    box(f"rm -f {DROPIN} && systemctl reload ssh")  # the drop-in changes, so the reconnect check runs
    try:
        rc, out = converge(forwarded)
        assert rc == 0, out[-4000:]
        assert "Disarm the box's revert" in out, out[-4000:]
        assert "PermitRootLogin prohibit-password" in box(f"cat {DROPIN}")
        # Positive control for the dial itself: the published port is not sshd's port.
        assert "ansible_port: 22\n" not in forwarded.read_text()
        assert ssh_login(address, key).stdout.strip() == "in"
    finally:
        box(f"rm -f {DROPIN} && systemctl reload ssh", check=False)  # as the fixture left it: no drop-in
