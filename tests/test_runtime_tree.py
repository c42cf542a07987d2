"""The runtime tree (tmpfiles.d, one check-and-repair task) on a real systemd stand-in (issue 18).

`site.yml --tags runtime` over the podman connection: a converge, drift behind Ansible's back
(a directory removed, a mode opened), a directory that is a symlink to a volume, and a runtime
root under a directory that root does not own, which systemd-tmpfiles refuses.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import site_playbook

pytestmark = pytest.mark.standin

NAME = os.environ.get("NEO_TREE_BOX", "neo-vps-tree")
IMAGE = os.environ.get("NEO_STANDIN_IMAGE", "localhost/neo-vps-standin:debian12")
RUNTIME = "/opt/neo/runtime"


def box(script: str, check: bool = True) -> str:
    proc = subprocess.run(["podman", "exec", NAME, "sh", "-c", script], capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode != 0:
        pytest.fail(f"the stand-in image {IMAGE} is missing: run `make image` (make test builds it)")
    subprocess.run(["podman", "rm", "-f", NAME], capture_output=True, check=False)
    subprocess.run(["podman", "run", "-d", "--name", NAME, "--hostname", NAME, "--systemd=always", IMAGE, "/sbin/init"],
                   capture_output=True, check=True)  # fmt: skip
    deadline = time.monotonic() + 90
    while box("systemctl is-system-running || true").strip() not in ("running", "degraded"):
        assert time.monotonic() < deadline, f"systemd in {NAME} did not come up"
        time.sleep(0.5)
    inv = tmp_path_factory.mktemp("tree") / "inventory.yml"
    inv.write_text(
        f"neo_vps:\n  hosts:\n    {NAME}:\n      ansible_connection: containers.podman.podman\n"
        "      ansible_python_interpreter: /usr/bin/python3\n"
    )
    yield inv
    if os.environ.get("NEO_FAULT_KEEP") != "1":
        subprocess.run(["podman", "rm", "-f", NAME], capture_output=True, check=False)


def runtime(inv: Path, *args: str) -> tuple[int, str, int]:
    rc, out = site_playbook(inv, "--tags", "runtime", *args)
    recap = re.search(r"changed=(\d+)", out.split("PLAY RECAP")[-1])
    return rc, out, int(recap[1]) if recap else -1


def test_drift_and_a_symlinked_directory_are_repaired_and_an_unsafe_parent_is_named(inventory: Path) -> None:
    rc, out, _ = runtime(inventory)
    assert rc == 0, out[-4000:]
    assert box(f"stat -c '%a %U' {RUNTIME}/db").split() == ["700", "neo"]

    # Drift: a directory gone, one opened up. The rerun repairs both, naming them; the next is clean.
    box(f"rmdir {RUNTIME}/backups/manual && chmod 0755 {RUNTIME}/db")
    rc, out, changed = runtime(inventory)
    assert rc == 0 and changed >= 1, out[-4000:]
    assert f"repair {RUNTIME}/db: 755 neo neo, want 700 neo neo" in out, out[-4000:]
    assert f"repair {RUNTIME}/backups/manual: absent" in out, out[-4000:]
    assert box(f"stat -c '%a %U' {RUNTIME}/db {RUNTIME}/backups/manual").split() == ["700", "neo", "750", "neo"]
    rc, out, changed = runtime(inventory)
    assert (rc, changed) == (0, 0), out[-4000:]

    # exports/ as a symlink to a directory on a "volume", with root's owner and an open mode: the
    # link's target gets the tree's owner and mode (systemd-tmpfiles itself does not follow links).
    box(f"mkdir -p /srv/vol/exports && chmod 0777 /srv/vol/exports && rm -rf {RUNTIME}/exports && ln -s /srv/vol/exports {RUNTIME}/exports")
    want = box(f"grep -E '^d {RUNTIME}/exports ' /etc/tmpfiles.d/neo-runtime.conf").split()
    rc, out, changed = runtime(inventory)
    assert rc == 0 and changed >= 1, out[-4000:]
    assert box(f"test -L {RUNTIME}/exports && stat -c '%a %U %G' /srv/vol/exports").split() == [want[2].lstrip("0"), want[3], want[4]]
    rc, out, changed = runtime(inventory)
    assert (rc, changed) == (0, 0), out[-4000:]

    # A runtime root under a directory another user owns: systemd-tmpfiles refuses it (an unsafe
    # path transition); the failure says so and names the fix. Nothing is created there.
    box("install -d -o nobody /srv/shared")
    rc, out, _ = runtime(inventory, "-e", json.dumps({"neo_runtime_root": "/srv/shared/neo"}))
    assert rc != 0, out[-4000:]
    assert "make every parent of /srv/shared/neo owned by root" in out, out[-4000:]
    assert box("ls -A /srv/shared").strip() in ("", "neo"), "tmpfiles half-created a tree under an unsafe parent"
    # Positive control: the same root under a root-owned parent converges.
    box("chown root /srv/shared")
    rc, out, _ = runtime(inventory, "-e", json.dumps({"neo_runtime_root": "/srv/shared/neo"}))
    assert rc == 0, out[-4000:]
    assert box("stat -c '%U' /srv/shared/neo/db").strip() == "neo"
