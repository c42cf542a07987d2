"""Restore never loses the old database (issue 12): out of space, killed, hot -journal, another DB, two at once.

Real files, real processes, real SIGKILLs, a real tmpfs for "another filesystem" and "out of space".
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import NEO_DB, SYSTEM_PYTHON, Runtime, make_db

SIDES = ("", "-wal", "-shm", "-journal")

# A writer that commits into the -wal and is then killed: the -wal (never checkpointed) and -shm stay.
WAL_WRITER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("BEGIN")
c.execute("DELETE FROM trades WHERE id % 2 = 0")
c.execute("UPDATE trades SET qty = -1")
for i in range(int(sys.argv[2])):
    c.execute("INSERT INTO trades(symbol, qty, note) VALUES ('WAL', ?, ?)", (i, "w" * 500))
c.execute("COMMIT")
print("ready", flush=True)
time.sleep(3600)
"""

# A rollback-journal writer killed mid-transaction: its cache spills, so the DB file holds
# uncommitted pages and the -journal is hot (the next read-write open rolls it back).
HOT_JOURNAL_WRITER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=DELETE")
c.execute("PRAGMA cache_size=2")
c.execute("BEGIN")
c.execute("UPDATE trades SET note = 'hot' || note, qty = -7")
print("ready", flush=True)
time.sleep(3600)
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def live_shas(runtime: Runtime) -> dict[str, str]:
    return {p.name: sha(p) for p in (Path(f"{runtime.db}{s}") for s in SIDES) if p.exists()}


def live_state(runtime: Runtime) -> dict[str, str]:
    """The live files by content, except the -shm: any reader rebuilds that index, so only its presence counts."""
    return {name: "present" if name.endswith("-shm") else digest for name, digest in live_shas(runtime).items()}


def db_dir_names(runtime: Runtime) -> list[str]:
    return sorted(os.listdir(runtime.db.parent))


def run_and_kill(script: str, *args: str) -> None:
    """Run a writer until it says ready, then SIGKILL it (a real crash, leaving what SQLite leaves)."""
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    assert "ready" in line, proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def leave_wal(db: Path, inserts: int = 100) -> None:
    run_and_kill(WAL_WRITER, str(db), str(inserts))
    assert Path(f"{db}-wal").stat().st_size > 0 and Path(f"{db}-shm").exists()


def leave_hot_journal(db: Path) -> None:
    run_and_kill(HOT_JOURNAL_WRITER, str(db))
    assert Path(f"{db}-journal").stat().st_size > 0


def manual_backup(runtime: Runtime) -> Path:
    r = runtime.cli("backup", "--json")
    assert r.rc == 0, r.err
    return Path(r.json["path"])


def rows_of(db: Path) -> list[tuple[int, str, int, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, symbol, qty, note FROM trades ORDER BY id").fetchall()
    finally:
        conn.close()


def quarantines(runtime: Runtime) -> list[Path]:
    d = runtime.backups / "abnormal_stop"
    return sorted(p for p in d.iterdir() if "_quarantine_" in p.name and not p.name.startswith(".")) if d.exists() else []


def assert_complete_quarantine(q: Path, old: dict[str, str]) -> None:
    """Every old live file is in the quarantine, and its sha256 matches both the file and the manifest."""
    files = json.loads((q / "stop.json").read_text())["files"]
    assert set(files) == set(old), (files, old)
    for name, digest in old.items():
        assert files[name]["sha256"] == digest
        assert sha(q / name) == digest


def tmp_entries(runtime: Runtime) -> list[Path]:
    """Temp entries where a restore works: abnormal_stop/ (the quarantine) and exports_dir/restores/."""
    return sorted(p for d in (runtime.backups / "abnormal_stop", runtime.exports / "restores") if d.exists() for p in d.glob(".tmp-*"))


@pytest.fixture
def backup_tmpfs(runtime: Runtime) -> Iterator[Path]:
    """backup_dir on its own real tmpfs (1 MiB): another filesystem than the DB's, and a small one."""
    mnt = runtime.backups
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


# ---- 1. out of space ----


def test_a_temp_dir_holding_the_live_db_is_put_back_not_removed(runtime: Runtime) -> None:
    """What an interrupted quarantine of an older neo-db left: the live DB moved into a .tmp- dir."""
    make_db(runtime.db)
    manual_backup(runtime)
    leave_wal(runtime.db)
    old = live_state(runtime)
    tmp = runtime.backups / "abnormal_stop" / ".tmp-neo_live_stage1_abnormal_quarantine_2026-01-01T00-00-00Z.raw.4242"
    tmp.mkdir(parents=True)
    os.rename(runtime.db, tmp / runtime.db.name)  # the DB moved, its -wal and -shm not yet
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    assert live_state(runtime) == old, "the DB is back beside its -wal, byte for byte"
    assert not tmp.exists()
    assert runtime.stop().rc == 0
    # Positive control: a temp dir that holds only copies is still removed.
    copies = runtime.backups / "abnormal_stop" / ".tmp-neo_live_stage1_abnormal_S002_2026-01-01T00-00-00Z.raw.4243"
    copies.mkdir()
    (copies / runtime.db.name).write_bytes(runtime.db.read_bytes())
    r = runtime.cli("backup")
    assert r.rc == 0, r.err
    assert not copies.exists() and "left by an interrupted run" in r.err


# ---- 3. a hot -journal ----


def test_an_abnormal_stop_preserves_a_hot_journal_with_the_raw_files(runtime: Runtime) -> None:
    make_db(runtime.db, rows=2000, wal=False)
    assert runtime.cli("session-start").rc == 0
    leave_hot_journal(runtime.db)
    old = live_shas(runtime)
    r = runtime.stop(exit_code="killed", exit_status="9", result="signal")
    assert r.rc == 0, r.err
    [raw] = [p for p in (runtime.backups / "abnormal_stop").iterdir() if p.name.endswith(".raw")]
    kept = {p.name: sha(p) for p in raw.iterdir() if p.name != "stop.json"}
    assert kept == old, "the raw copy holds the DB and its hot -journal, byte for byte"
    assert set(json.loads((raw / "stop.json").read_text())["files"]) == set(old)
    assert live_shas(runtime) == old, "preservation copies; the live files stay as they are"


def test_the_holder_scan_names_a_process_holding_the_journal(runtime: Runtime, tmp_path: Path) -> None:
    from neo_db import holders

    make_db(runtime.db, rows=2000, wal=False)
    backup = manual_backup(runtime)
    journal = Path(f"{runtime.db}-journal")
    leave_hot_journal(runtime.db)
    assert holders.find_holders(runtime.db) == [], "a hot -journal nobody holds is not a holder"
    # A process that has only the -journal open (no SQLite, no lock): the /proc scan names it.
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", "import sys, time; f = open(sys.argv[1], 'rb'); print('ready', flush=True); time.sleep(3600)", str(journal)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and "ready" in proc.stdout.readline()
        found = holders.find_holders(runtime.db)
        assert [(h.pid, h.path, h.how) for h in found] == [(proc.pid, str(journal), "open file")]
        r = runtime.cli("restore", backup.stem, "--yes")
        assert r.rc == 5 and f"PID {proc.pid}" in r.err and "-journal" in r.err, r.err
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    assert holders.find_holders(runtime.db) == []


def test_the_lock_probe_names_a_rollback_journal_writer_it_cannot_see_in_proc(tmp_path: Path) -> None:
    """As a user who cannot read root's /proc/PID/fd, only SQLite's locks show the writer of a -journal DB."""
    shared = Path(subprocess.run(["mktemp", "-d", "/tmp/neo-lockprobe.XXXXXX"], capture_output=True, text=True, check=True).stdout.strip())
    try:
        shared.chmod(0o755)
        db = shared / "neo_live_stage1.db"
        make_db(db, rows=2000, wal=False)
        db.chmod(0o644)
        probe = (
            "import sys; sys.path.insert(0, sys.argv[1]); from neo_db import holders; "
            "print([(h.pid, h.how) for h in holders.find_holders(__import__('pathlib').Path(sys.argv[2]))])"
        )
        scripts = str(Path(NEO_DB).parent)

        def probe_as_nobody() -> str:
            r = subprocess.run(
                ["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-c", probe, scripts, str(db)], capture_output=True, text=True, check=False
            )
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()

        proc = subprocess.Popen([SYSTEM_PYTHON, "-c", HOT_JOURNAL_WRITER, str(db)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and "ready" in proc.stdout.readline()
            assert Path(f"{db}-journal").exists()
            assert probe_as_nobody() == str([(proc.pid, "sqlite lock")])
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
        assert Path(f"{db}-journal").exists()
        assert probe_as_nobody() == "[]", "the hot -journal left by the dead writer is held by nobody"
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)
