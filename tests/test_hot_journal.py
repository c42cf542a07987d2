"""A hot rollback -journal at the gate: SQLite recovers it on a read-write open, so it is not
corruption (exit 3) and not a permission problem (exit 8). The gate rolls back a copy, checks it,
refuses the start with its own exit code (9) naming what the copy showed, and session-start keeps
the raw DB and -journal first. A journal whose rolled-back copy is damaged is corruption."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import FLAG049, Runtime


def _hot_journal(db: Path, rows: int = 200) -> None:
    """A rollback-mode writer killed mid-transaction after its changes spilled into the DB file."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, note TEXT)")
    conn.executemany("INSERT INTO trades(note) VALUES (?)", [("n" * 200,)] * rows)
    conn.close()
    child = (
        "import sqlite3, os, signal\n"
        f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "c.execute('PRAGMA cache_size=1'); c.execute('BEGIN')\n"
        "c.execute(\"UPDATE trades SET note = 'x' || note\"); c.execute('DELETE FROM trades WHERE id > 100')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", child], check=False).returncode == -signal.SIGKILL


def _rolled_back_rows(db: Path, where: Path) -> int:
    where.mkdir()
    for suffix in ("", "-journal"):
        shutil.copy2(f"{db}{suffix}", where / f"{db.name}{suffix}")
    conn = sqlite3.connect(where / db.name)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(conn.execute("SELECT count(*) FROM trades").fetchone()[0])
    finally:
        conn.close()


def test_a_hot_rollback_journal_is_its_own_verdict_not_corruption_or_permission(runtime: Runtime, tmp_path: Path) -> None:
    db = runtime.db
    _hot_journal(db)
    journal = Path(f"{db}-journal")
    assert journal.stat().st_size > 0
    assert _rolled_back_rows(db, tmp_path / "reference") == 200  # what SQLite itself makes of it
    before = {p.name: p.read_bytes() for p in db.parent.iterdir()}

    r = runtime.cli("check")
    assert r.rc == 9, r.err
    assert FLAG049 not in r.err and "permission problem" not in r.err
    assert "hot rollback journal" in r.err and "integrity_check ok, rows trades 200" in r.err, r.err
    assert {p.name: p.read_bytes() for p in db.parent.iterdir()} == before, "the live files are untouched"

    r = runtime.cli("session-start")
    assert r.rc == 9, r.err
    assert runtime.files("pre_session") == []
    [raw] = [p for p in (runtime.backups / "abnormal_stop").iterdir() if p.name.endswith(".raw")]
    assert (raw / journal.name).read_bytes() == before[journal.name], "the -journal is preserved byte for byte"
    assert (raw / db.name).read_bytes() == before[db.name]
    assert str(raw) in r.err
    assert {p.name: p.read_bytes() for p in db.parent.iterdir()} == before
    assert not [p for p in runtime.state.iterdir() if p.name.startswith(".neo-db-rollback-")], "the rolled-back copy is gone"

    # Positive control: once SQLite has rolled it back (the hint's read-write open), the gate passes.
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA integrity_check").fetchone()
    conn.close()
    assert not journal.exists()
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    assert runtime.stop().rc == 0


def test_a_hot_journal_whose_rolled_back_copy_is_damaged_is_corruption(runtime: Runtime, tmp_path: Path) -> None:
    """An index page the interrupted transaction never touched is damaged in the DB file: rolling
    the journal back cannot mend it, so the copy fails integrity_check and the verdict is exit 3."""
    db = runtime.db
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("CREATE TABLE other (id INTEGER PRIMARY KEY, symbol TEXT)")
    conn.execute("CREATE INDEX other_symbol ON other(symbol)")
    conn.executemany("INSERT INTO other(symbol) VALUES (?)", [(f"SYM{i % 17}",) for i in range(50)])
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name='other_symbol'").fetchone()[0]
    conn.close()
    _hot_journal(db)
    data = bytearray(db.read_bytes())
    psize = int.from_bytes(data[16:18], "big")
    offset = (root - 1) * psize + data[(root - 1) * psize : root * psize].find(b"SYM1") + 3
    assert offset > (root - 1) * psize + 3
    data[offset] = ord("9")
    db.write_bytes(bytes(data))
    r = runtime.cli("check")
    assert r.rc == 3, r.err
    assert FLAG049 in r.err.splitlines() and "a copy rolled back fails integrity_check" in r.err, r.err
