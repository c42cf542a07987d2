"""The gate's verdicts: recoverable is not corrupt, silent loss is corrupt (issue 12, items 7-10).

Every state here is made by real SQLite in a real process that the kernel stops: the
checkpoint that grows the DB is cut by RLIMIT_FSIZE at a seeded page, the writers are
SIGKILLed by themselves after their commits. The verdict on the live files is then
compared with what SQLite itself recovers from a copy of them.
"""

from __future__ import annotations

import random
import shutil
import signal
import sqlite3
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import FLAG049, SYSTEM_PYTHON, Runtime, count_rows, make_db

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
