"""`neo-db import` attacked as a hostile operator would: edge values, kills at every step.

Real SQLite files, the CLI under the system python3 in a subprocess, real SIGKILLs (restore's
NEO_DB_FAULT_STEP seam: the run kills itself right after the named step), the service user
(nobody) running what comes next through runuser.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import NEO_DB, SYSTEM_PYTHON, Result, Runtime, as_service_user, count_rows
from neo_db.core import install
from test_import import make_source, no_crash, sha, staged


@pytest.fixture
def box(role_box: Runtime) -> Runtime:
    """The runtime tree exactly as neo_runtime leaves it (conftest's role_box)."""
    return role_box


SEED = int(os.environ.get("NEO_TEST_SEED", "20261123"))


def imported_names(rt: Runtime) -> set[str]:
    return {p.name for p in rt.files("imported")}


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


# ---- SIGKILL at every step of the install ----


# the steps an import over a live DB with a hot -wal reaches (no -shm, -journal, or cross-filesystem quarantine here)
KILL_STEPS = [s for s in install.STEPS if s not in ("moved-shm", "moved-journal", "quarantine-copied")]


@pytest.mark.parametrize("step", KILL_STEPS)
def test_an_import_killed_at_any_step_leaves_the_old_or_the_new_db_and_a_rerun_converges(box: Runtime, tmp_path: Path, step: str) -> None:
    """Seen failing: killed before the install's commit, the killed run's imported backup stayed in the
    catalog (a verified restore point of a DB never installed); killed after it, the new DB was live
    but origin.json was never written and the counter never set (the service user's next session was
    S001, not S051)."""
    rnd = random.Random(f"{SEED}-{step}")
    print(f"seed {SEED} step {step}")
    old_rows, new_rows, wal_rows = rnd.randint(20, 60), rnd.randint(80, 160), rnd.randint(1, 20)
    make_source(box.db, old_rows - 5, wal_rows=5)  # the old DB with 5 of its rows only in its hot -wal
    for suffix in ("", "-wal"):
        os.chown(f"{box.db}{suffix}", 65534, 65534)
    old_sha = sha(box.db)
    src = staged(tmp_path, rows=new_rows, wal_rows=wal_rows)
    args = ("import", str(src), "--replace", "--next-session", "S051")
    r = box.cli(*args, env=box.env(**{install.ENV_FAULT_STEP: step}))
    assert r.rc == -9, f"the import was not killed after {step!r} (rc {r.rc}): is the step reached?\n{r.err}"
    # the service user's first command after the kill: the old DB or the new one, never missing or half
    check = as_service_user(box, "check")
    no_crash(check, step)
    assert check.rc == 0, check.err
    new_is_live = sha(box.db) != old_sha
    assert count_rows(box.db) == (new_rows + wal_rows if new_is_live else old_rows)
    if not new_is_live:  # rolled back: the killed run's imported backup is gone with it
        assert imported_names(box) == set(), f"{step}: orphan imported backups: {imported_names(box)}"
    # the rerun of the same command converges
    r = box.cli(*args, "--json")
    no_crash(r, step)
    assert r.rc == 0, f"{step}: {r.err}"
    origin = json.loads((box.state / "origin.json").read_text())
    assert origin["source_sha256"] == sha(src)
    assert count_rows(box.db) == new_rows + wal_rows
    assert imported_names(box) == {origin["imported_backup"]}, f"{step}: orphan imported backups: {imported_names(box)}"
    assert not [p for p in box.state.iterdir() if "pending" in p.name]
    again = box.cli(*args, "--json")
    assert again.rc == 0 and again.json["changed"] is False, again.err
    start = as_service_user(box, "session-start")
    assert start.rc == 0, start.err
    assert json.loads((box.state / "current_session.json").read_text())["session"] == "S051"
    assert box.stop().rc == 0
    confirm = box.cli("confirm", "--json")
    item = next(i for i in confirm.json["items"] if i["item"] == "the live DB's origin is recorded")
    assert item["result"] == "PASS", item


@pytest.mark.parametrize("step", ["committed", "recorded"])
def test_the_service_users_first_session_after_a_killed_import_is_the_imported_next_session(
    box: Runtime, tmp_path: Path, step: str
) -> None:
    """Killed after the install's commit, nothing else run: the engine's ExecStartPre (session-start as
    the service user) finishes the import first (origin recorded, counter set). Seen failing: S001."""
    make_source(box.db, 30)
    os.chown(box.db, 65534, 65534)
    src = staged(tmp_path, rows=90, wal_rows=7)
    r = box.cli("import", str(src), "--replace", "--next-session", "S051", env=box.env(**{install.ENV_FAULT_STEP: step}))
    assert r.rc == -9, r.err
    start = as_service_user(box, "session-start")
    no_crash(start, step)
    assert start.rc == 0, start.err
    assert json.loads((box.state / "current_session.json").read_text())["session"] == "S051"
    assert count_rows(box.db) == 97
    origin = json.loads((box.state / "origin.json").read_text())
    assert origin["source_sha256"] == sha(src) and origin["imported_backup"] in imported_names(box)
    assert not (box.state / "import-pending.json").exists()
    # positive control: an import left to finish is what made the difference: a plain rerun is a no-op
    assert box.stop().rc == 0
    r = box.cli("import", str(src), "--replace", "--json")
    assert r.rc == 0 and r.json["changed"] is False, r.err


def test_a_killed_import_whose_backup_is_out_of_sight_is_kept_for_later_not_called_rolled_back(box: Runtime, tmp_path: Path) -> None:
    """Killed after the install finished, the next run does not see the imported backup (its phase dir
    renamed away, as a backup disk not mounted yet): the new DB is live all the same (its sha256 is the
    record's), so the import must not be reported as rolled back and its record dropped; once the
    backup is back, origin and counter are written. Seen failing: origin.json never written, S001."""
    make_source(box.db, 30)
    os.chown(box.db, 65534, 65534)
    src = staged(tmp_path, rows=90, wal_rows=7)
    r = box.cli("import", str(src), "--replace", "--next-session", "S051", env=box.env(**{install.ENV_FAULT_STEP: "recorded"}))
    assert r.rc == -9, r.err
    imported = box.backups / "imported"
    hidden = box.backups / "imported.away"
    imported.rename(hidden)
    check = as_service_user(box, "check")
    no_crash(check, "recorded")
    assert "was rolled back" not in check.err, check.err
    assert (box.state / "import-pending.json").exists(), check.err
    shutil.rmtree(imported, ignore_errors=True)
    hidden.rename(imported)
    start = as_service_user(box, "session-start")
    assert start.rc == 0, start.err
    assert json.loads((box.state / "current_session.json").read_text())["session"] == "S051"
    origin = json.loads((box.state / "origin.json").read_text())
    assert origin["source_sha256"] == sha(src) and origin["imported_backup"] in imported_names(box)
    assert not (box.state / "import-pending.json").exists()
    assert box.stop().rc == 0


def test_a_killed_import_whose_backup_comes_back_after_sessions_changed_the_db_is_finished_not_undone(box: Runtime, tmp_path: Path) -> None:
    """Review finding: once the new DB was seen live (backup out of sight), sessions go on and change it;
    when the backup is visible again the live sha256 no longer matches, and the next run took that for a
    roll back: it deleted the imported backup of the DB that is live and never wrote origin.json."""
    make_source(box.db, 30)
    os.chown(box.db, 65534, 65534)
    src = staged(tmp_path, rows=90, wal_rows=7)
    r = box.cli("import", str(src), "--replace", "--next-session", "S051", env=box.env(**{install.ENV_FAULT_STEP: "recorded"}))
    assert r.rc == -9, r.err
    imported, hidden = box.backups / "imported", box.backups / "imported.away"
    imported.rename(hidden)
    start = as_service_user(box, "session-start")  # the new DB is seen live; the session goes on
    assert start.rc == 0, start.err
    assert json.loads((box.state / "current_session.json").read_text())["session"] == "S051"
    conn = sqlite3.connect(box.db)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS engine_notes (n INTEGER)")
        conn.execute("INSERT INTO engine_notes VALUES (1)")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert box.stop().rc == 0
    shutil.rmtree(imported, ignore_errors=True)
    hidden.rename(imported)
    names = imported_names(box)
    assert names, "precondition: the killed run's imported backup is back in sight"
    check = as_service_user(box, "session-start")
    no_crash(check, "recorded")
    assert check.rc == 0 and "was rolled back" not in check.err, check.err
    assert imported_names(box) == names, "the imported backup of the live DB is kept"
    origin = json.loads((box.state / "origin.json").read_text())
    assert origin["source_sha256"] == sha(src) and origin["imported_backup"] in names
    assert not (box.state / "import-pending.json").exists()
    assert json.loads((box.state / "current_session.json").read_text())["session"] == "S052", "the counter never goes back"
    assert box.stop().rc == 0


# ---- two imports at once ----


def _start_waiting_import(rt: Runtime, *args: str) -> subprocess.Popen[str]:
    """neo-db import started while the test holds the state lock: returns once it waits for the lock."""
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, str(NEO_DB), "import", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=rt.env(),
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "waiting for another neo-db run" in line:
            return proc
    raise AssertionError(f"the import did not wait for the lock: rc {proc.wait()}: {''.join(seen)}")


@pytest.mark.parametrize("replace", [False, True])
def test_two_imports_at_once_without_replace_never_replace_each_other(box: Runtime, tmp_path: Path, replace: bool) -> None:
    """Seen failing: both checked 'no live DB' before taking the lock, so the second quarantined the DB
    the first had just installed, without --replace (both exit 0). Positive control: with --replace
    the second does replace it (quarantined, recoverable)."""
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first, second = staged(first_dir, rows=70), staged(second_dir, rows=90)
    box.state.mkdir(exist_ok=True)
    extra = ("--replace",) if replace else ()
    lock = os.open(box.state / "neo-db.lock", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        procs = [_start_waiting_import(box, str(first), *extra)]
        procs.append(_start_waiting_import(box, str(second), *extra))
    finally:
        os.close(lock)  # both wait on it: one goes first, then the other
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(Result(proc.returncode, out, err))
    for r in results:
        no_crash(r)
    quarantines = list((box.backups / "abnormal_stop").iterdir())
    origin = json.loads((box.state / "origin.json").read_text())
    if replace:
        assert sorted(r.rc for r in results) == [0, 0], [r.err for r in results]
        assert len(quarantines) == 1  # the first one's DB, recoverable
    else:
        assert sorted(r.rc for r in results) == [0, 2], [r.err for r in results]
        refused = next(r for r in results if r.rc == 2)
        assert "--replace" in refused.err and str(box.db) in refused.err and "nothing was changed" in refused.err, refused.err
        assert quarantines == []
    # the live DB is the one origin.json names, and only imports that stayed installed keep a backup
    assert sha(box.db) == origin["installed_sha256"]
    assert count_rows(box.db) == origin["tables"]["trades"]
