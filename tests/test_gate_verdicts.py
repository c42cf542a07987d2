"""The gate's verdicts: recoverable is not corrupt, silent loss is corrupt (issue 12, items 7-10).

Every state here is made by real SQLite in a real process that the kernel stops: the
checkpoint that grows the DB is cut by RLIMIT_FSIZE at a seeded page, the writers are
SIGKILLed by themselves after their commits. The verdict on the live files is then
compared with what SQLite itself recovers from a copy of them.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import FLAG049, NEO_DB, SYSTEM_PYTHON, Result, Runtime, count_rows, make_db

SEED = 12  # every random choice below comes from this seed

# Grows the DB inside the -wal (no automatic checkpoint), then checkpoints with a file-size
# limit at a seeded byte offset: SQLite copies the pages into the DB in page order, page 1
# (whose header already records the new page count) first, and the kernel kills the process
# (SIGXFSZ) at the first page at or past the limit, exactly as a SIGKILL at that moment would.
GROW_THEN_CHECKPOINT = r"""
import resource, signal, sqlite3, sys
db, rows, stop_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("PRAGMA synchronous=NORMAL")
for i in range(rows):
    conn.execute("INSERT INTO trades(symbol, qty, note) VALUES (?, ?, ?)", (f"G{i % 7}", i, "g" * 300))
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it by default
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_FSIZE, (stop_at, stop_at))
conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
print("the checkpoint finished", flush=True)
"""


def _header_pages(db: Path) -> tuple[int, int]:
    """(page count recorded in the header, whole pages in the file)."""
    head = db.read_bytes()[:100]
    psize = int.from_bytes(head[16:18], "big")
    return struct.unpack(">I", head[28:32])[0], db.stat().st_size // psize


def _copy_set(db: Path, dest_dir: Path, sides: tuple[str, ...] = ("", "-wal", "-shm")) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    for side in sides:
        src = Path(f"{db}{side}")
        if src.exists():
            shutil.copyfile(src, dest_dir / f"{db.name}{side}")
    return dest_dir / db.name


def _sqlite_recovers(copy: Path) -> tuple[str, int]:
    """What SQLite makes of a copy: (integrity_check, rows in trades)."""
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0]), int(conn.execute("SELECT count(*) FROM trades").fetchone()[0])
    finally:
        conn.close()


# ---- item 7: a valid hot -wal that holds the pages beyond the file's end ----


def _kill_mid_checkpoint(db: Path, rows: int, stop_page: int) -> subprocess.CompletedProcess[str]:
    psize = int.from_bytes(db.read_bytes()[16:18], "big")
    return subprocess.run(
        [SYSTEM_PYTHON, "-c", GROW_THEN_CHECKPOINT, str(db), str(rows), str(stop_page * psize)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("kill", range(3))
def test_a_kill_during_a_checkpoint_that_grows_the_db_is_recoverable_not_corrupt(runtime: Runtime, tmp_path: Path, kill: int) -> None:
    base_rows, grown = 20, 400
    make_db(runtime.db, rows=base_rows)
    # Where the checkpoint dies: a seeded page between page 2 and the last page it must write.
    probe = tmp_path / "probe" / runtime.db.name
    probe.parent.mkdir()
    shutil.copyfile(runtime.db, probe)
    done = _kill_mid_checkpoint(probe, grown, 1 << 20)
    assert done.returncode == 0, done.stderr
    final_pages = _header_pages(probe)[0]
    stop_page = random.Random(f"{SEED}-{kill}").randrange(2, final_pages)
    print(f"seed {SEED}, kill {kill}: the checkpoint dies writing page {stop_page + 1} of {final_pages}")

    proc = _kill_mid_checkpoint(runtime.db, grown, stop_page)
    assert proc.returncode == -signal.SIGXFSZ, (proc.returncode, proc.stdout, proc.stderr)
    header_pages, file_pages = _header_pages(runtime.db)
    assert header_pages == final_pages and file_pages < header_pages, "not the state of the issue: the file is not short"
    assert Path(f"{runtime.db}-wal").stat().st_size > 0
    # SQLite itself recovers every row from a copy of the three files.
    assert _sqlite_recovers(_copy_set(runtime.db, tmp_path / "recovered")) == ("ok", base_rows + grown)
    # The same DB file without its -wal is really truncated (the negative control).
    alone = _copy_set(runtime.db, tmp_path / "alone", sides=("",))

    r = runtime.cli("check")
    assert r.rc == 0, f"a recoverable DB was called corrupt:\n{r.err}"
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    [pre] = runtime.files("pre_session")
    assert count_rows(pre) == base_rows + grown

    runtime.write_config(db_path=str(alone))
    r = runtime.cli("check")
    assert r.rc == 3, r.err
    assert FLAG049 in r.err.splitlines() and "truncated" in r.err


def test_a_truncated_db_whose_hot_wal_lacks_the_missing_pages_is_still_corrupt(runtime: Runtime, writer_factory) -> None:
    make_db(runtime.db, rows=2000)
    w = writer_factory(runtime.db, rate=0)
    w.wait_commits(50)
    w.kill()  # a valid hot -wal, with commits, that touches only a few pages
    header_pages, file_pages = _header_pages(runtime.db)
    with open(runtime.db, "r+b") as fh:
        fh.truncate((file_pages // 2) * (runtime.db.stat().st_size // file_pages))
    assert Path(f"{runtime.db}-wal").stat().st_size > 0 and _header_pages(runtime.db)[1] < header_pages
    for command in ("check", "session-start"):
        r = runtime.cli(command)
        assert r.rc == 3, f"{command}: {r.err}"
        assert FLAG049 in r.err.splitlines() and "truncated" in r.err and "its -wal does not hold pages" in r.err


# ---- item 8: damage in the middle of the -wal is silent loss; a torn tail is a crash ----

# One commit per row, no checkpoint, then the writer SIGKILLs itself: every commit is in the -wal.
# With "restart", a first batch fills the -wal, a checkpoint lets the next writer start it over
# with new salts, and the second batch overwrites only its beginning: the older frames stay beyond.
COMMITS_THEN_KILL = r"""
import os, signal, sqlite3, sys
db, commits, restart = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "restart"
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("PRAGMA synchronous=NORMAL")
if restart:
    for i in range(commits * 3):
        conn.execute("INSERT INTO trades(symbol, qty, note) VALUES (?, ?, ?)", (f"OLD{i % 5}", i, "o" * 100))
    conn.execute("PRAGMA wal_checkpoint(RESTART)")
for i in range(commits):
    conn.execute("INSERT INTO trades(symbol, qty, note) VALUES (?, ?, ?)", (f"W{i % 11}", i, "w" * 100))
os.kill(os.getpid(), signal.SIGKILL)
"""

# A transaction bigger than the page cache spills frames into the -wal; rewriting a page that
# is already there overwrites its frame in place (its stored checksum goes stale until the
# commit rewrites the checksums). A kill before the commit leaves a bad frame followed by
# intact frames with the current salts, and no commit after it: a normal crash, nothing lost.
SPILL_THEN_KILL = r"""
import os, signal, sqlite3, sys
db = sys.argv[1]
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint=0")
for i in range(50):
    conn.execute("INSERT INTO trades(symbol, qty, note) VALUES (?, ?, ?)", ("S", i, "s" * 300))
conn.execute("PRAGMA cache_size=5")
conn.execute("BEGIN")
conn.execute("UPDATE trades SET note = ?", ("b" * 3000,))
conn.execute("UPDATE trades SET note = 'c' WHERE id = 1")
os.kill(os.getpid(), signal.SIGKILL)
"""


def _run_killed(script: str, *args: str) -> None:
    proc = subprocess.run([SYSTEM_PYTHON, "-c", script, *args], capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _frames(wal: Path) -> list[tuple[int, int, bytes]]:
    """(offset, commit size, salts) of every whole frame."""
    raw = wal.read_bytes()
    psize = struct.unpack(">I", raw[8:12])[0]
    step = 24 + psize
    return [(off, struct.unpack(">I", raw[off + 4 : off + 8])[0], raw[off + 8 : off + 16]) for off in range(32, len(raw) - step + 1, step)]


def _what_sqlite_keeps(db: Path, scratch: Path) -> tuple[int, int]:
    """From a copy of the DB and its -wal: (rows SQLite recovers, frames it replays: its mxFrame)."""
    copy = _copy_set(db, scratch, sides=("", "-wal"))
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        rows = int(conn.execute("SELECT count(*) FROM trades").fetchone()[0])
        _busy, replayed, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return rows, int(replayed)
    finally:
        conn.close()


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0x20]))


@pytest.mark.parametrize("where", ["middle byte", "seeded frame 0", "seeded frame 1", "seeded frame 2"])
def test_a_flipped_byte_in_the_middle_of_the_wal_fails_closed_naming_what_sqlite_would_drop(
    runtime: Runtime, tmp_path: Path, where: str
) -> None:
    base_rows, commits = 10, 1000
    make_db(runtime.db, rows=base_rows)
    _run_killed(COMMITS_THEN_KILL, str(runtime.db), str(commits), "no")
    wal = Path(f"{runtime.db}-wal")
    frames = _frames(wal)
    assert sum(1 for _, commit, _ in frames if commit) == commits
    psize = int.from_bytes(runtime.db.read_bytes()[16:18], "big")
    if where == "middle byte":
        offset = wal.stat().st_size // 2
    else:
        rng = random.Random(f"{SEED}-{where}")
        frame_off = frames[rng.randrange(len(frames) // 10, len(frames) * 9 // 10)][0]
        offset = frame_off + 24 + rng.randrange(psize)  # in the page, not the frame header
    print(f"seed {SEED}, {where}: byte {offset} of {wal.stat().st_size} flipped ({len(frames)} frames)")
    _flip(wal, offset)
    rows, replayed = _what_sqlite_keeps(runtime.db, tmp_path / "reference")
    lost_commits, lost_frames = base_rows + commits - rows, len(frames) - replayed
    assert 0 < lost_commits < commits, "the flip must land among the commits"
    wal_before = wal.read_bytes()

    r = runtime.cli("check")
    assert r.rc == 3, f"silent loss of {lost_commits} commits passed the gate:\n{r.err}"
    assert FLAG049 in r.err.splitlines()
    assert f"silently drop {lost_frames} frames holding {lost_commits} commits" in r.err, r.err
    assert f"stop at frame {replayed} " in r.err

    r = runtime.cli("session-start")
    assert r.rc == 3 and FLAG049 in r.err.splitlines(), r.err
    assert runtime.files("pre_session") == []
    # The raw files are kept as they are, and a byte-for-byte copy of them is preserved.
    assert wal.read_bytes() == wal_before
    [raw] = [p for p in (runtime.backups / "abnormal_stop").iterdir() if p.name.endswith(".raw")]
    assert (raw / wal.name).read_bytes() == wal_before
    assert (raw / runtime.db.name).read_bytes() == runtime.db.read_bytes()
    assert str(raw) in r.err
    [session] = [p.name for p in (runtime.exports / "sessions").iterdir()]
    health = runtime.health(session)
    assert health["refused_start_raw_copy"] == str(raw)
    # A retried start refuses again, and does not copy the same files a second time.
    r = runtime.cli("session-start")
    assert r.rc == 3 and str(raw) in r.err
    assert [p for p in (runtime.backups / "abnormal_stop").iterdir() if p.name.endswith(".raw")] == [raw]


TORN_TAILS = ["cut mid-frame", "garbage appended", "last frame half-written", "an older generation beyond, damaged"]


@pytest.mark.parametrize("how", TORN_TAILS)
def test_a_torn_tail_of_the_wal_still_passes(runtime: Runtime, tmp_path: Path, how: str) -> None:
    make_db(runtime.db, rows=10)
    _run_killed(COMMITS_THEN_KILL, str(runtime.db), "200", "restart" if "older" in how else "no")
    wal = Path(f"{runtime.db}-wal")
    frames = _frames(wal)
    psize = int.from_bytes(runtime.db.read_bytes()[16:18], "big")
    rng = random.Random(f"{SEED}-{how}")
    print(f"seed {SEED}, {how}")
    last_off = frames[-1][0]
    if how == "cut mid-frame":
        with open(wal, "r+b") as fh:
            fh.truncate(last_off + 24 + psize // 2)
    elif how == "garbage appended":
        with open(wal, "ab") as fh:
            fh.write(rng.randbytes(3 * (24 + psize)))
    elif how == "last frame half-written":
        with open(wal, "r+b") as fh:
            fh.seek(last_off + 24 + psize // 2)
            fh.write(rng.randbytes(psize // 2))
    else:
        current = frames[0][2]
        older = [off for off, _, salts in frames if salts != current]
        assert older, "the restart left no older frames beyond the current ones"
        _flip(wal, older[len(older) // 2] + 24 + rng.randrange(psize))
    rows, _ = _what_sqlite_keeps(runtime.db, tmp_path / "reference")

    r = runtime.cli("check")
    assert r.rc == 0, r.err
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    [pre] = runtime.files("pre_session")
    assert count_rows(pre) == rows


def test_a_kill_mid_transaction_that_rewrote_a_spilled_frame_in_place_passes(runtime: Runtime, tmp_path: Path) -> None:
    make_db(runtime.db, rows=10)
    _run_killed(SPILL_THEN_KILL, str(runtime.db))
    wal = Path(f"{runtime.db}-wal")
    rows, replayed = _what_sqlite_keeps(runtime.db, tmp_path / "reference")
    assert rows == 10 + 50 and replayed < len(_frames(wal))
    r = runtime.cli("check")
    assert r.rc == 0, r.err
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    [pre] = runtime.files("pre_session")
    assert count_rows(pre) == rows


# ---- item 9: a symlinked db_path: SQLite's -wal and -shm sit beside the real file ----


def _symlinked(runtime: Runtime, rows: int = 200) -> Path:
    """The DB in another directory, db_path a symlink to it (as an operator who moved it to a bigger disk)."""
    real = runtime.root / "bigdisk" / runtime.db.name
    real.parent.mkdir()
    make_db(real, rows=rows)
    runtime.db.symlink_to(real)
    return real


def _hot_wal(db: Path, writer_factory, commits: int = 100) -> list[int]:
    w = writer_factory(db, rate=0)
    w.wait_commits(commits)
    w.kill()
    return w.committed()


def test_a_symlinked_db_path_has_its_wal_checked_beside_the_real_file(runtime: Runtime) -> None:
    real = _symlinked(runtime)
    assert runtime.cli("check").rc == 0  # the positive control: the same link, no -wal
    Path(f"{real}-wal").write_bytes(random.Random(SEED).randbytes(65536))
    assert not Path(f"{runtime.db}-wal").exists()
    for command in ("check", "session-start"):
        r = runtime.cli(command)
        assert r.rc == 3, f"{command}: a garbage -wal beside the real file passed:\n{r.err}"
        assert FLAG049 in r.err.splitlines() and f"{real}-wal" in r.err


def test_a_symlinked_db_path_has_the_holders_of_the_real_files_named(runtime: Runtime, writer_factory) -> None:
    real = _symlinked(runtime)
    _hot_wal(runtime.db, writer_factory)
    assert Path(f"{real}-wal").stat().st_size > 0 and runtime.cli("check").rc == 0
    holder = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", f"import time; f = open({f'{real}-wal'!r}, 'rb'); print('ok', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        r = runtime.cli("check")
        assert r.rc == 5, f"a process holding the real -wal was not seen:\n{r.err}"
        assert f"PID {holder.pid}" in r.err and f"{real}-wal" in r.err
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
    assert runtime.cli("check").rc == 0


def test_a_symlinked_db_path_has_the_real_wal_preserved_after_an_abnormal_stop(runtime: Runtime, writer_factory) -> None:
    real = _symlinked(runtime)
    assert runtime.cli("session-start").rc == 0
    committed = set(_hot_wal(runtime.db, writer_factory, 300))
    wal_bytes = Path(f"{real}-wal").read_bytes()
    assert runtime.stop("killed", "KILL", "signal").rc == 0
    [copy] = runtime.files("abnormal_stop")
    raw = copy.with_suffix(".raw")
    assert (raw / f"{real.name}-wal").read_bytes() == wal_bytes, "the raw copy misses the -wal"
    assert (raw / real.name).read_bytes() == real.read_bytes()
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    assert committed <= {r[0] for r in conn.execute("SELECT seq FROM ticks")}
    conn.close()


def test_restore_through_a_symlinked_db_path_replaces_the_real_file_and_keeps_the_link(runtime: Runtime, writer_factory) -> None:
    real = _symlinked(runtime)
    assert runtime.cli("backup", "--phase", "manual").rc == 0
    [backup] = runtime.files("manual")
    _hot_wal(runtime.db, writer_factory)
    old = {side: Path(f"{real}{side}").read_bytes() for side in ("", "-wal", "-shm")}
    r = runtime.cli("restore", backup.name, "--yes", "--json")
    assert r.rc == 0, r.err
    assert runtime.db.is_symlink() and runtime.db.resolve() == real, "the link itself was replaced"
    assert real.is_file() and not Path(f"{real}-wal").exists(), "the old -wal was left beside the restored DB"
    assert count_rows(real) == 200
    quarantine = Path(r.json["quarantine"])
    for side, data in old.items():
        assert (quarantine / f"{real.name}{side}").read_bytes() == data, f"{side or 'the DB'} was not quarantined"
    assert runtime.cli("check").rc == 0


def test_a_backup_taken_before_db_path_became_a_symlink_is_of_this_database(runtime: Runtime) -> None:
    """The operator moves the DB to a bigger disk and leaves db_path as a symlink to it: the backups
    taken before name db_path as configured (the link's path now). They are this database's."""
    make_db(runtime.db)
    r = runtime.cli("backup", "--json")
    assert r.rc == 0, r.err
    before_move = Path(r.json["path"])
    assert json.loads(before_move.with_suffix(".json").read_text())["db_path"] == str(runtime.db)
    real = runtime.root / "bigdisk" / runtime.db.name
    real.parent.mkdir()
    runtime.db.rename(real)
    runtime.db.symlink_to(real)
    r = runtime.cli("restore", before_move.stem, "--yes", "--json")
    assert r.rc == 0, f"a backup of this DB, taken before the move, was refused:\n{r.err}"
    assert runtime.db.is_symlink() and count_rows(real) == 200
    # Negative control: the same backup, its manifest naming a third path, is another database's.
    manifest = before_move.with_suffix(".json")
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "db_path": str(runtime.root / "elsewhere" / real.name)}))
    r = runtime.cli("restore", before_move.stem, "--yes")
    assert r.rc == 2 and "another database" in r.err and "--allow-other-db" in r.err, r.err


def test_a_symlinked_db_path_that_loops_or_dangles_is_named(runtime: Runtime) -> None:
    target = runtime.root / "bigdisk" / runtime.db.name
    runtime.db.symlink_to(target)  # dangling: the DB is missing, and both names say where
    r = runtime.cli("check")
    assert r.rc == 6 and str(runtime.db) in r.err and str(target) in r.err, r.err
    runtime.db.unlink()
    runtime.db.symlink_to(runtime.db)
    r = runtime.cli("check")
    assert r.rc == 2 and "'db_path'" in r.err and "symlink" in r.err and "Traceback" not in r.err, r.err
    r = runtime.cli("config", "validate", str(runtime.config_path))
    assert r.rc == 2 and "symlink" in r.err


def test_config_validate_refuses_backups_beside_the_real_file_of_a_symlinked_db_path(runtime: Runtime) -> None:
    real = _symlinked(runtime)
    assert runtime.cli("config", "validate", str(runtime.config_path)).rc == 0
    runtime.write_config(backup_dir=str(real.parent / "backups"))
    r = runtime.cli("config", "validate", str(runtime.config_path))
    assert r.rc == 2 and "'backup_dir'" in r.err and f"inside the DB's directory {str(real.parent)!r}" in r.err, r.err


# ---- item 10: a permission problem is not corruption ----

USER = "nobody"


@pytest.fixture
def shared_runtime() -> Iterator[Runtime]:
    """A runtime that another user can reach: pytest's own tmp dirs are 0700 root.

    The DB's directory and the DB belong to root (0755, 0644): readable by anyone, writable
    by root only. The state, backup and export dirs belong to the test user.
    """
    top = Path(tempfile.mkdtemp(prefix="neo-perm-", dir="/tmp"))
    try:
        top.chmod(0o755)
        root = top / "runtime"
        (root / "db").mkdir(parents=True)
        (root / "db").chmod(0o755)
        for name in ("backups", "exports", "state"):
            (root / name).mkdir()
            shutil.chown(root / name, USER)
        rt = Runtime(root, top / "db_safeguards.yml")
        rt.write_config(
            db_path=str(root / "db" / "neo_live_stage1.db"),
            backup_dir=str(root / "backups"),
            exports_dir=str(root / "exports"),
            state_dir=str(root / "state"),
        )
        rt.config_path.chmod(0o644)
        yield rt
    finally:
        shutil.rmtree(top)


def as_user(runtime: Runtime, *args: str) -> Result:
    proc = subprocess.run(
        ["runuser", "-u", USER, "--", SYSTEM_PYTHON, str(NEO_DB), *args],
        check=False,
        capture_output=True,
        text=True,
        env=runtime.env(),
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _hot_wal_as_root(db: Path) -> None:
    _run_killed(COMMITS_THEN_KILL, str(db), "20", "no")


def _dir_not_writable(db: Path) -> tuple[str, str]:
    return str(db.parent), "write"  # as made: root's 0755, and no -shm yet (a clean stop removed it)


def _db_unreadable(db: Path) -> tuple[str, str]:
    db.chmod(0o600)
    return str(db), "read"


def _dir_not_searchable(db: Path) -> tuple[str, str]:
    db.parent.chmod(0o700)
    return str(db.parent), "search"


def _wal_unreadable(db: Path) -> tuple[str, str]:
    _hot_wal_as_root(db)
    Path(f"{db}-wal").chmod(0o600)
    return f"{db}-wal", "read"


PERMISSION_PROBLEMS = {
    "DB dir not writable, no -shm": _dir_not_writable,
    "DB file unreadable": _db_unreadable,
    "DB dir not searchable": _dir_not_searchable,
    "-wal unreadable": _wal_unreadable,
}


@pytest.mark.parametrize("how", list(PERMISSION_PROBLEMS))
def test_a_permission_problem_is_named_with_its_own_exit_code_not_flag049(shared_runtime: Runtime, how: str) -> None:
    rt = shared_runtime
    make_db(rt.db)
    path, permission = PERMISSION_PROBLEMS[how](rt.db)
    before = {p.name: p.read_bytes() for p in rt.db.parent.iterdir()}
    for command in ("check", "session-start"):
        r = as_user(rt, command)
        assert r.rc == 8, f"{command} as {USER}, {how}: rc={r.rc}\n{r.err}"
        assert FLAG049 not in r.err and "Traceback" not in r.err and "internal error" not in r.err
        assert f"{path}: no {permission} permission" in r.err and USER in r.err, r.err
        assert "not corruption" in r.err
    assert rt.files("pre_session") == []
    assert {p.name: p.read_bytes() for p in rt.db.parent.iterdir()} == before, "the live files were touched"
    # The positive control: the same user, given the permission, passes.
    shutil.chown(rt.db.parent, USER)
    rt.db.parent.chmod(0o755)
    for p in rt.db.parent.iterdir():
        p.chmod(0o644)
    for command in ("check", "session-start"):
        r = as_user(rt, command)
        assert r.rc == 0, f"{command} as {USER} with the permission: {r.err}"


def test_corruption_read_by_a_user_with_every_permission_is_still_exit_3(shared_runtime: Runtime) -> None:
    rt = shared_runtime
    make_db(rt.db, rows=2000)
    shutil.chown(rt.db.parent, USER)
    data = bytearray(rt.db.read_bytes())
    data[int.from_bytes(data[16:18], "big")] = 0x07  # page 2: not a b-tree page type
    rt.db.write_bytes(bytes(data))
    for command in ("check", "session-start"):
        r = as_user(rt, command)
        assert r.rc == 3 and FLAG049 in r.err.splitlines(), f"{command}: {r.err}"


def test_sqlites_own_access_errors_are_never_called_corruption(shared_runtime: Runtime) -> None:
    # Behind the access pre-check, SQLite's own answer decides too: what check_file returns for
    # a user who may not write the DB's directory is an access refusal (8), and what it returns
    # for a damaged DB stays an integrity failure (3).
    from neo_db import config, sqlitedb
    from neo_db.core import gates
    from neo_db.errors import IntegrityError, PermissionProblemError

    rt = shared_runtime
    make_db(rt.db)
    probe = (
        f"import json, sys; sys.path.insert(0, {str(NEO_DB.parent)!r}); "
        "from neo_db import sqlitedb; print(json.dumps(sqlitedb.check_file(sys.argv[1])))"
    )
    out = subprocess.run(["runuser", "-u", USER, "--", SYSTEM_PYTHON, "-c", probe, str(rt.db)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result[0].startswith("SQLITE_READONLY_DIRECTORY"), result
    cfg = config.load(rt.config_path)
    assert isinstance(gates.refusal(cfg, gates.GateReport(), result), PermissionProblemError)

    data = bytearray(rt.db.read_bytes())
    data[int.from_bytes(data[16:18], "big")] = 0x07
    rt.db.write_bytes(bytes(data))
    result = sqlitedb.check_file(rt.db)
    assert result != ["ok"] and sqlitedb.access_error(result) is None
    assert isinstance(gates.refusal(cfg, gates.GateReport(), result), IntegrityError)


def test_sqlite_error_names_do_not_depend_on_python_3_11() -> None:
    """Python 3.10 has no sqlite3.Error.sqlite_errorname: the name comes from SQLite's message, so a
    permission problem there is still exit 8 (an access error), never taken for corruption."""
    from neo_db import sqlitedb

    # As Python 3.10 raises them: no sqlite_errorname attribute.
    bare = sqlite3.OperationalError("unable to open database file")
    assert not hasattr(bare, "sqlite_errorname")
    assert sqlitedb.error_name(bare) == "SQLITE_CANTOPEN"
    assert sqlitedb.access_error([f"{sqlitedb.error_name(bare)}: cannot open: {bare}"])
    assert sqlitedb.error_name(sqlite3.OperationalError("attempt to write a readonly database")) == "SQLITE_READONLY"
    corrupt = sqlite3.DatabaseError("database disk image is malformed")
    assert sqlitedb.error_name(corrupt) == "SQLITE_CORRUPT"
    assert sqlitedb.access_error([f"{sqlitedb.error_name(corrupt)}: {corrupt}"]) is None  # corruption stays exit 3
    assert sqlitedb.error_name(sqlite3.OperationalError("no such table: x")) == ""
    # As Python 3.11+ raises them: SQLite's own name wins.
    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.Error) as raised:
        conn.execute("SELECT * FROM missing")
    assert sqlitedb.error_name(raised.value) == "SQLITE_ERROR"
