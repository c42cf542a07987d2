"""`neo-db import` attacked as a hostile operator would: edge values, kills at every step.

Real SQLite files, the CLI under the system python3 in a subprocess, real SIGKILLs (restore's
NEO_DB_FAULT_STEP seam: the run kills itself right after the named step), the service user
(nobody) running what comes next through runuser.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import NEO_DB, SYSTEM_PYTHON, Result, Runtime
from test_import import PHASE_SUBDIRS, no_crash, staged


@pytest.fixture
def box(runtime: Runtime) -> Runtime:
    """The runtime tree as neo_runtime leaves it, every directory the service user's (nobody), reachable by it."""
    top = runtime.root.parent
    for d in [top, runtime.root, runtime.db.parent, runtime.exports, runtime.state, runtime.backups]:
        d.mkdir(parents=True, exist_ok=True)
    for sub in PHASE_SUBDIRS:
        (runtime.backups / sub).mkdir(exist_ok=True)
    owned = [runtime.root, runtime.db.parent, runtime.exports, runtime.state, runtime.backups]
    for d in [*owned, *(runtime.backups / s for s in PHASE_SUBDIRS)]:
        os.chown(d, 65534, 65534)
    runtime.db.parent.chmod(0o700)
    # pytest's tmp dirs are 0700 root: let the service user through to the runtime tree and the config
    for p in [top, *top.parents]:
        if str(p) in ("/", "/tmp"):
            break
        p.chmod(p.stat().st_mode | 0o005)
    runtime.config_path.chmod(0o644)
    return runtime


def as_service_user(rt: Runtime, *args: str) -> Result:
    proc = subprocess.run(
        ["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, str(NEO_DB), *args],
        check=False,
        capture_output=True,
        text=True,
        env=rt.env(),
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


# ---- --next-session edge values ----


@pytest.mark.parametrize("value", ["S000", "S0", "S0000000"])
def test_next_session_zero_is_refused_and_changes_nothing(box: Runtime, tmp_path: Path, value: str) -> None:
    """Seen failing: --next-session S000 was accepted ('next session: S000'), wrote last_number -1 into
    the counter, and the service user's first session-start was refused (exit 2, counter damaged)."""
    src = staged(tmp_path)
    r = box.cli("import", str(src), "--next-session", value)
    no_crash(r, value)
    assert r.rc == 2 and value in r.err and "nothing was changed" in r.err and "S001" in r.err, r.err
    assert not box.db.exists() and not (box.state / "session_counter.json").exists()
    # positive control: the lowest real ID, then the service user's first session is it
    r = box.cli("import", str(src), "--next-session", "S001")
    assert r.rc == 0, r.err
    start = as_service_user(box, "session-start")
    assert start.rc == 0, start.err
    assert json.loads((box.state / "current_session.json").read_text())["session"] == "S001"


@pytest.mark.parametrize(("value", "rc", "session"), [("S9999999", 0, "S9999999"), ("S0051", 0, "S051"), ("s051", 2, None)])
def test_next_session_large_padded_and_lower_case_values(box: Runtime, tmp_path: Path, value: str, rc: int, session: str | None) -> None:
    src = staged(tmp_path)
    r = box.cli("import", str(src), "--next-session", value)
    no_crash(r, value)
    assert r.rc == rc, r.err
    if rc:
        assert value in r.err and "nothing was changed" in r.err and not box.db.exists()
        return
    start = as_service_user(box, "session-start")
    assert start.rc == 0, start.err
    assert json.loads((box.state / "current_session.json").read_text())["session"] == session
