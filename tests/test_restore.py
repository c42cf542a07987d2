"""Restore never loses the old database (issue 12): out of space, killed, hot -journal, another DB, two at once.

Real files, real processes, real SIGKILLs, a real tmpfs for "another filesystem" and "out of space".
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import NEO_DB, SERVICE_PYTHON, SYSTEM_PYTHON, Runtime, count_rows, make_db

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


def test_a_quarantine_that_does_not_fit_is_refused_before_anything_moves(runtime: Runtime, backup_tmpfs: Path) -> None:
    make_db(runtime.db)
    backup = manual_backup(runtime)
    leave_wal(runtime.db, inserts=1500)  # ~0.8 MB of -wal: the DB fits in what is left of the tmpfs, the -wal does not
    old = live_shas(runtime)
    assert set(old) == {"neo_live_stage1.db", "neo_live_stage1.db-wal", "neo_live_stage1.db-shm"}

    r = runtime.cli("restore", backup.stem, "--yes")
    assert r.rc == 1, r.err
    assert "internal error" not in r.err and "Traceback" not in r.err
    assert str(backup_tmpfs / "abnormal_stop") in r.err and "bytes" in r.err, r.err
    assert live_shas(runtime) == old, "the old DB is untouched"
    state = live_state(runtime)
    assert tmp_entries(runtime) == [] and quarantines(runtime) == []
    assert db_dir_names(runtime) == sorted(old)
    # The next session-start finds nothing of the live DB in a temp dir to remove, and passes the gate.
    start = runtime.cli("session-start")
    assert start.rc == 0, start.err
    assert "left by an interrupted run" not in start.err
    assert live_state(runtime) == state
    assert runtime.stop().rc == 0

    # Positive control: with room on that filesystem, the same restore works (copied across, then verified).
    subprocess.run(["mount", "-o", "remount,size=16m", str(backup_tmpfs)], check=True)
    old = live_shas(runtime)
    r = runtime.cli("restore", backup.stem, "--yes", "--json")
    assert r.rc == 0, r.err
    assert db_dir_names(runtime) == ["neo_live_stage1.db"]
    assert rows_of(runtime.db) == rows_of(backup)
    [q] = quarantines(runtime)
    assert Path(r.json["quarantine"]) == q
    assert_complete_quarantine(q, old)
    assert tmp_entries(runtime) == []
    assert runtime.cli("check").rc == 0


def test_an_error_half_way_through_the_moves_puts_back_what_moved(runtime: Runtime) -> None:
    make_db(runtime.db)
    backup = manual_backup(runtime)
    leave_wal(runtime.db)
    old = live_shas(runtime)
    shm = Path(f"{runtime.db}-shm")
    subprocess.run(["chattr", "+i", str(shm)], check=True)  # a real EPERM on its rename, after the DB and the -wal moved
    try:
        r = runtime.cli("restore", backup.stem, "--yes")
    finally:
        subprocess.run(["chattr", "-i", str(shm)], check=True)
    assert r.rc == 1, r.err
    assert "internal error" not in r.err and "Traceback" not in r.err
    assert str(shm) in r.err and "rolled back" in r.err, r.err
    assert live_shas(runtime) == old, "the DB and the -wal are back beside the -shm, byte for byte"
    assert db_dir_names(runtime) == sorted(old)
    assert quarantines(runtime) == [] and tmp_entries(runtime) == []
    # Positive control: nothing in the way, the same restore goes through.
    r = runtime.cli("restore", backup.stem, "--yes")
    assert r.rc == 0, r.err
    assert db_dir_names(runtime) == ["neo_live_stage1.db"]
    assert_complete_quarantine(quarantines(runtime)[0], old)


def test_a_quarantine_that_cannot_be_finished_keeps_the_old_files_until_it_can(runtime: Runtime, backup_tmpfs: Path) -> None:
    make_db(runtime.db)
    backup = manual_backup(runtime)
    leave_wal(runtime.db)
    old = live_shas(runtime)
    r = runtime.cli("restore", backup.stem, "--yes", env=runtime.env(NEO_DB_FAULT_STEP="installed"))
    assert r.rc == -signal.SIGKILL, r.err
    filler = backup_tmpfs / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)  # until ENOSPC
    # The next session-start finds the restored DB in place and cannot copy the quarantine: the
    # session goes on, and the old files stay where the restore put them.
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    assert "could not be finished" in r.err and "No space left on device" in r.err, r.err
    staging = runtime.db.parent / f".{runtime.db.name}.restore"
    assert {p.name: sha(p) for p in (staging / "old").iterdir() if p.name in old} == old
    assert rows_of(runtime.db) == rows_of(backup)
    assert quarantines(runtime) == [] and tmp_entries(runtime) == []
    assert runtime.stop().rc == 0
    r = runtime.cli("restore", backup.stem, "--yes")
    assert r.rc == 1 and "an earlier restore is not finished" in r.err, r.err
    # Positive control: with room again, any command finishes it.
    filler.unlink()
    r = runtime.cli("list")
    assert r.rc == 0, r.err
    assert not staging.exists()
    assert_complete_quarantine(quarantines(runtime)[0], old)
    assert [n for n in db_dir_names(runtime) if n.startswith(".")] == []


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


def test_a_partial_raw_copy_is_never_put_in_place_of_a_missing_live_db(runtime: Runtime) -> None:
    """A raw preservation killed half-way holds a (maybe partial) copy named like the DB. If the
    live DB is missing, that copy is neither put in place nor removed: it is kept and named."""
    make_db(runtime.db)
    manual_backup(runtime)
    raw_tmp = runtime.backups / "abnormal_stop" / ".tmp-neo_live_stage1_abnormal_S009_2026-01-01T00-00-00Z.raw.4244"
    raw_tmp.mkdir(parents=True)
    partial = runtime.db.read_bytes()[: len(runtime.db.read_bytes()) // 2]
    (raw_tmp / runtime.db.name).write_bytes(partial)
    runtime.db.unlink()
    r = runtime.cli("session-start")
    assert r.rc == 6, r.err  # the DB is missing: the gate says so, nothing was put in its place
    assert not runtime.db.exists()
    assert (raw_tmp / runtime.db.name).read_bytes() == partial, "the copy is kept as it was"
    assert str(raw_tmp) in r.err and "kept, not put in place" in r.err
    # Positive control: an older neo-db's quarantine holds the originals, and they are put back.
    quarantine = runtime.backups / "abnormal_stop" / ".tmp-neo_live_stage1_abnormal_quarantine_2026-01-01T00-00-00Z.raw.4245"
    quarantine.mkdir()
    make_db(quarantine / runtime.db.name)
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    assert runtime.db.is_file() and not quarantine.exists()
    # With the live DB back in place, the raw temp dir holds only copies: the usual cleanup.
    assert not raw_tmp.exists()


# ---- 2. killed mid-restore: seeded random moments (the named steps are in test_restore_steps.py) ----


def test_kill_9_at_seeded_random_moments_of_a_restore_leaves_the_old_or_the_new_db_whole(runtime: Runtime, tmp_path: Path) -> None:
    seed = int(os.environ.get("NEO_RESTORE_SEED", random.SystemRandom().randrange(1 << 32)))
    print(f"NEO_RESTORE_SEED={seed}")
    rng = random.Random(seed)
    make_db(runtime.db, rows=40_000)  # ~10 MB: a restore takes long enough to be caught in each stage
    backup = manual_backup(runtime)
    new_rows = rows_of(backup)
    leave_wal(runtime.db, inserts=2000)
    template = tmp_path / "template"
    template.mkdir()
    old_rows = rows_of(runtime.db)
    old = live_shas(runtime)
    for name in old:
        (template / name).write_bytes((runtime.db.parent / name).read_bytes())
    old_state = live_state(runtime)

    def reset() -> None:
        for name in os.listdir(runtime.db.parent):
            path = runtime.db.parent / name
            subprocess.run(["rm", "-rf", str(path)], check=True)
        for name in old:
            (runtime.db.parent / name).write_bytes((template / name).read_bytes())
        for d in (runtime.backups / "abnormal_stop", runtime.exports / "restores"):
            subprocess.run(["rm", "-rf", str(d)], check=True)

    # How long an uninterrupted restore takes here (only to spread the kills over it; nothing is asserted on it).
    t0 = time.monotonic()
    assert runtime.cli("restore", backup.stem, "--yes").rc == 0
    span = time.monotonic() - t0
    outcomes = []
    for i in range(10):
        reset()
        delay = rng.uniform(0.3, 1.0) * span  # the first third is mostly the interpreter starting and the backup's check
        after = rng.choice(["session-start", "backup", "prune", "list", "check", "restore"])
        proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(NEO_DB), "restore", backup.stem, "--yes"],
            env=runtime.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        where = f"kill {i} at {delay:.3f}s of {span:.3f}s (rc {rc}), then {after} (NEO_RESTORE_SEED={seed})"
        args = [after, backup.stem, "--dry-run"] if after == "restore" else [after]
        r = runtime.cli(*args)
        assert "internal error" not in r.err and "Traceback" not in r.err, f"{where}: {r.err}"
        names = db_dir_names(runtime)
        assert not [n for n in names if n.startswith(".")], f"{where}: left behind in db/: {names}"
        if live_state(runtime) == old_state:
            outcomes.append("old")
            assert rows_of(runtime.db) == old_rows, where
            assert quarantines(runtime) == [], where
        else:
            outcomes.append("new")
            assert runtime.db.is_file(), f"{where}: no live DB: {names}"
            assert rows_of(runtime.db) == new_rows, where
            [q] = quarantines(runtime)
            assert_complete_quarantine(q, old)
        assert tmp_entries(runtime) == [], f"{where}: {tmp_entries(runtime)}"
        check = runtime.cli("check")
        assert check.rc == 0, f"{where}: {check.err}"
        if after == "session-start":
            assert runtime.stop().rc == 0
    print(f"outcomes: {outcomes}")


# ---- 3. a hot -journal ----


def test_a_hot_journal_is_moved_aside_with_the_db_so_the_restored_db_opens_clean(runtime: Runtime) -> None:
    make_db(runtime.db, rows=2000, wal=False)
    backup = manual_backup(runtime)
    expected = rows_of(backup)
    # The live DB goes on to differ from the backup, then a writer dies mid-transaction.
    conn = sqlite3.connect(runtime.db, isolation_level=None)
    conn.execute("DELETE FROM trades WHERE id % 3 = 0")
    conn.execute("INSERT INTO trades(symbol, qty, note) SELECT 'NEW', qty, note || note FROM trades WHERE id < 500")
    conn.execute("VACUUM")
    conn.close()
    leave_hot_journal(runtime.db)
    old = live_shas(runtime)
    assert set(old) == {"neo_live_stage1.db", "neo_live_stage1.db-journal"}

    r = runtime.cli("restore", backup.stem, "--yes", "--json")
    assert r.rc == 0, r.err
    assert db_dir_names(runtime) == ["neo_live_stage1.db"], "no stale -journal beside the restored DB"
    assert_complete_quarantine(Path(r.json["quarantine"]), old)
    # The engine's first read-write open: nothing is rolled back into the restored DB.
    conn = sqlite3.connect(runtime.db, isolation_level=None)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert rows_of(runtime.db) == expected
    assert runtime.cli("check").rc == 0


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
                ["runuser", "-u", "nobody", "--", SERVICE_PYTHON, "-c", probe, scripts, str(db)],
                capture_output=True,
                text=True,
                check=False,
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


# ---- 4. a backup of another database ----


@pytest.mark.parametrize("other", ["db_path", "stem"])
def test_a_backup_of_another_database_is_refused_unless_the_operator_says_so(runtime: Runtime, tmp_path: Path, other: str) -> None:
    make_db(runtime.db)
    own = manual_backup(runtime)
    # Another database's backup, taken by neo-db with that database's config.
    other_db = tmp_path / "elsewhere" / ("neo_live_stage1.db" if other == "db_path" else "atlas.db")
    other_db.parent.mkdir()
    make_db(other_db, rows=7)
    other_cfg = tmp_path / "other.yml"
    settings = {**runtime.settings, "db_path": str(other_db), "state_dir": str(tmp_path / "other-state")}
    if other == "stem":
        settings["backup_dir"] = str(tmp_path / "other-backups")
    other_cfg.write_text(yaml.safe_dump({"db_safeguards": settings}))
    r = runtime.cli("backup", "--json", env=runtime.env(NEO_DB_CONFIG=str(other_cfg)))
    assert r.rc == 0, r.err
    foreign = Path(r.json["path"])
    if other == "stem":  # copied into this DB's backup_dir under this DB's name
        stamp = foreign.stem.rsplit("_", 1)[1]
        name = f"{runtime.db.stem}_manual_{stamp}"
        if (runtime.backups / "manual" / f"{name}.db").exists():
            name = f"{runtime.db.stem}_manual_2030-01-01T00-00-00Z"
        (runtime.backups / "manual" / f"{name}.db").write_bytes(foreign.read_bytes())
        (runtime.backups / "manual" / f"{name}.json").write_bytes(foreign.with_suffix(".json").read_bytes())
        foreign = runtime.backups / "manual" / f"{name}.db"
    before = live_shas(runtime)

    for extra in (["--dry-run"], ["--yes"]):
        r = runtime.cli("restore", foreign.stem, *extra)
        assert r.rc == 2, r.err
        assert "Traceback" not in r.err and "--allow-other-db" in r.err
        if other == "db_path":
            assert str(other_db) in r.err and str(runtime.db) in r.err, r.err
        else:
            assert "'atlas'" in r.err and "'neo_live_stage1'" in r.err, r.err
        assert live_shas(runtime) == before
    assert quarantines(runtime) == []

    # Positive controls: this DB's own backup needs no flag; the other one goes in when the operator says so.
    r = runtime.cli("restore", own.stem, "--yes")
    assert r.rc == 0, r.err
    assert count_rows(runtime.db) == 200
    r = runtime.cli("restore", foreign.stem, "--yes", "--allow-other-db")
    assert r.rc == 0, r.err
    assert count_rows(runtime.db) == 7


# ---- 5. two restores at once ----


def test_two_restores_started_at_the_same_moment_leave_a_live_db(runtime: Runtime) -> None:
    make_db(runtime.db)
    backup = manual_backup(runtime)
    leave_wal(runtime.db)
    old = live_shas(runtime)
    go = runtime.root / "go"
    barrier = 'while [ ! -e "$0" ]; do sleep 0.001; done; exec "$@"'
    procs = [
        subprocess.Popen(
            ["sh", "-c", barrier, str(go), SYSTEM_PYTHON, str(NEO_DB), "restore", backup.stem, "--yes"],
            env=runtime.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    for rc, _out, err in results:
        assert rc in (0, 7), err
        assert "Directory not empty" not in err and "internal error" not in err and "Traceback" not in err, err
    assert [rc for rc, _, _ in results].count(0) >= 1
    assert db_dir_names(runtime) == ["neo_live_stage1.db"]
    assert rows_of(runtime.db) == rows_of(backup)
    qs = quarantines(runtime)
    assert len(qs) == [rc for rc, _, _ in results].count(0), "one complete quarantine per restore done"
    assert_complete_quarantine(qs[0], old)
    assert tmp_entries(runtime) == []
    assert runtime.cli("check").rc == 0
