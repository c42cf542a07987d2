"""Backups: consistent under a live writer, verified, crash-safe, and honest about a full disk."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import NEO_DB, SYSTEM_PYTHON, Runtime, count_rows, make_db, seqs_in


def backup_files(d: Path) -> list[Path]:
    return sorted(d.iterdir()) if d.exists() else []


def test_backup_under_a_steady_writer_holds_every_row_committed_before_it_started(runtime: Runtime, writer_factory) -> None:
    w = writer_factory(runtime.db, rate=0)
    w.wait_commits(500)
    committed_before = set(w.committed())
    r = runtime.cli("backup", "--json")
    assert r.rc == 0, r.err
    path = Path(r.json["path"])
    assert committed_before <= seqs_in(path)
    assert r.json["manifest"]["integrity_check"] == ["ok"]
    assert w.proc.poll() is None, "the writer kept running throughout"


def test_rows_only_in_the_wal_are_in_the_backup(runtime: Runtime) -> None:
    make_db(runtime.db, rows=10)
    conn = sqlite3.connect(runtime.db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("BEGIN")
    for i in range(300):
        conn.execute("INSERT INTO trades(symbol, qty) VALUES ('WAL', ?)", (i,))
    conn.execute("COMMIT")
    try:
        main_file_only = sqlite3.connect(f"file:{runtime.db}?immutable=1", uri=True)
        assert main_file_only.execute("SELECT count(*) FROM trades").fetchone()[0] == 10, "rows must still be only in the -wal"
        main_file_only.close()
        r = runtime.cli("backup", "--json")
        assert r.rc == 0, r.err
        assert count_rows(Path(r.json["path"])) == 310
    finally:
        conn.close()


def test_backup_is_self_contained_and_its_manifest_is_true(runtime: Runtime) -> None:
    make_db(runtime.db)
    r = runtime.cli("backup", "--json")
    path, manifest = Path(r.json["path"]), r.json["manifest"]
    assert path.read_bytes()[18:20] == b"\x01\x01", "journal_mode=DELETE: readers can open it mode=ro"
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["size"] == path.stat().st_size
    assert manifest["row_counts"] == {"trades": 200}
    for key in ("session", "phase", "trigger", "started", "finished", "sqlite_version"):
        assert key in manifest
    assert json.loads(path.with_suffix(".json").read_text()) == manifest
    assert not Path(f"{path}-wal").exists()


@pytest.fixture
def tiny_backup_fs(runtime: Runtime):
    """backup_dir on a real 64 KiB tmpfs: too small for any backup."""
    mnt = runtime.root / "backups"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_leaves_no_partial_file_and_does_not_block_the_session(runtime: Runtime, tiny_backup_fs: Path) -> None:
    make_db(runtime.db, rows=2000)
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    assert "pre-session backup FAILED (session not blocked)" in r.err
    pre = tiny_backup_fs / "pre_session"
    assert backup_files(pre) == [], f"partial files left: {backup_files(pre)}"
    block = runtime.health("S001")
    assert block["pre_session_backup"] is None and block["integrity_check"] == "ok"
    assert any("FAILED" in w for w in block["warnings"])


def test_kill_9_during_a_backup_leaves_no_final_name_and_the_next_run_cleans_up(runtime: Runtime) -> None:
    make_db(runtime.db, rows=150_000)  # ~40 MB: the backup takes long enough to be caught
    manual = runtime.backups / "manual"
    proc = subprocess.Popen([SYSTEM_PYTHON, str(NEO_DB), "backup"], env=runtime.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".tmp-") for p in backup_files(manual)):
        assert time.monotonic() < deadline and proc.poll() is None, "the backup finished before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    left = backup_files(manual)
    assert left and all(p.name.startswith(".tmp-") for p in left), left
    r = runtime.cli("backup")
    assert r.rc == 0, r.err
    assert "left by an interrupted run" in r.err
    names = [p.name for p in backup_files(manual)]
    assert not any(n.startswith(".tmp-") for n in names)
    assert len([n for n in names if n.endswith(".db")]) == 1


def test_a_symlink_planted_as_a_phase_dir_is_not_followed(runtime: Runtime, tmp_path: Path) -> None:
    make_db(runtime.db)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runtime.backups.mkdir()
    (runtime.backups / "manual").symlink_to(elsewhere)
    r = runtime.cli("backup")
    assert r.rc == 1 and "symlink" in r.err
    assert list(elsewhere.iterdir()) == []


def test_the_live_db_is_never_written_by_a_backup(runtime: Runtime) -> None:
    make_db(runtime.db)
    before = (runtime.db.read_bytes(), os.stat(runtime.db).st_mtime_ns)
    assert runtime.cli("backup").rc == 0
    assert (runtime.db.read_bytes(), os.stat(runtime.db).st_mtime_ns) == before


def _backup_under_fsize_limit(runtime: Runtime, limit: int | None) -> subprocess.CompletedProcess[str]:
    import resource

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [SYSTEM_PYTHON, str(NEO_DB), "backup"], env=runtime.env(), capture_output=True, text=True, timeout=120, preexec_fn=cap, check=False
    )


def test_a_file_size_limit_mid_copy_names_the_likely_cause_and_leaves_nothing(runtime: Runtime) -> None:
    """EFBIG past `ulimit -f` reaches neo-db as SQLITE_IOERR_WRITE: the hint must not send the operator
    to permissions (the old hint), but to a full filesystem or the file-size limit."""
    make_db(runtime.db, rows=2000)
    r = _backup_under_fsize_limit(runtime, 100 * 1024)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "SQLITE_IOERR_WRITE" in r.stderr
    assert "file-size limit" in r.stderr and "ulimit -f" in r.stderr and "likely full" in r.stderr, r.stderr
    assert "readable" not in r.stderr, r.stderr
    assert backup_files(runtime.backups / "manual") == []
    # positive control: the same backup without the limit is made, and lands where the check looks
    ok = _backup_under_fsize_limit(runtime, None)
    assert ok.returncode == 0, ok.stderr
    assert [p.suffix for p in backup_files(runtime.backups / "manual")] == [".db", ".json"]


def test_a_disk_full_while_finishing_the_copy_leaves_no_tmp_sidecars(runtime: Runtime) -> None:
    """A tmpfs that holds the copy but not its -shm: SQLite fails switching the copy to DELETE mode
    (SQLITE_IOERR_SHMSIZE) and leaves the temp's -wal and -shm; the failed run removes them itself."""
    make_db(runtime.db, rows=2000)
    mnt = runtime.backups
    mnt.mkdir()
    size_k = -(-runtime.db.stat().st_size // 4096) * 4 + 8  # the copy fits, its 32 KiB -shm does not
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(mnt)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        r = runtime.cli("backup")
        assert r.rc == 1, r.err
        assert "SQLITE_IOERR_SHMSIZE" in r.err and "likely full" in r.err, r.err
        assert backup_files(mnt / "manual") == [], "the failed run left files behind"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    # positive control: with room, the backup is made and listed by the same check
    ok = runtime.cli("backup")
    assert ok.rc == 0, ok.err
    assert [p.suffix for p in backup_files(mnt / "manual")] == [".db", ".json"]


def test_a_writer_holding_the_db_exclusive_fails_the_backup_named_instead_of_hanging(runtime: Runtime) -> None:
    """Python's backup() retries SQLITE_BUSY forever: a writer in EXCLUSIVE locking mode hung `neo-db backup`
    (and the state lock) for as long as it held the DB. Now the copy gives up after COPY_LOCK_WAIT_S, named."""
    make_db(runtime.db, rows=2000, wal=False)
    holder = subprocess.Popen(
        [
            SYSTEM_PYTHON,
            "-c",
            "import sqlite3,sys,time\n"
            "c=sqlite3.connect(sys.argv[1],isolation_level=None)\n"
            "c.execute('PRAGMA locking_mode=EXCLUSIVE'); c.execute('BEGIN EXCLUSIVE')\n"
            "c.execute(\"INSERT INTO trades(symbol) VALUES ('X')\")\n"
            "print('ready', flush=True); sys.stdin.read()\n",
            str(runtime.db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and "ready" in holder.stdout.readline()
        r = runtime.cli("backup", timeout=120)  # a hang (the old behaviour) fails here, on the timeout
        assert r.rc == 1, r.err
        assert "stayed locked by another process" in r.err and "neo-db holders" in r.err, r.err
        assert "Traceback" not in r.err
        assert [p for p in backup_files(runtime.backups / "manual") if not p.name.startswith(".tmp-")] == []
    finally:
        holder.communicate("", timeout=30)  # stdin closed: the holder rolls back and exits
    # positive control: the lock released, the same backup is made
    ok = runtime.cli("backup")
    assert ok.rc == 0, ok.err
    assert [p.suffix for p in backup_files(runtime.backups / "manual")] == [".db", ".json"]


def test_an_empty_live_db_is_refused_not_backed_up_as_intact(runtime: Runtime) -> None:
    """A zero-length live DB (truncated) reads as a new, empty database: it was backed up as an intact,
    empty backup, and retention counts those; now it is refused like any unreadable source (exit 1, the
    hint to run 'neo-db check'; the session gate refuses it with exit 3)."""
    runtime.db.parent.mkdir(parents=True, exist_ok=True)
    runtime.db.write_bytes(b"")
    for args in (["backup"], ["snapshot"]):
        r = runtime.cli(*args)
        assert r.rc == 1, (args, r.rc, r.err)
        assert "is empty (0 bytes, no pages)" in r.err and "neo-db check" in r.err and "Traceback" not in r.err, r.err
    assert [p for p in backup_files(runtime.backups / "manual") if not p.name.startswith(".tmp-")] == []
    assert runtime.db.stat().st_size == 0  # the live file untouched
    # positive control: a real DB at the same path is backed up
    runtime.db.unlink()
    make_db(runtime.db)
    ok = runtime.cli("backup")
    assert ok.rc == 0, ok.err
    assert [p.suffix for p in backup_files(runtime.backups / "manual")] == [".db", ".json"]
