"""`neo-db import` (issue 14, the box side): preflight, show, install, adopt, legacy backups.

Real SQLite files (rows held only in a hot -wal, rollback-journal sources, corrupt pages),
real processes (the CLI under the system python3), a real tmpfs for a full disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import FLAG049, NEO_DB, SYSTEM_PYTHON, Result, Runtime, count_rows, make_db


def no_crash(r: Result, where: str = "") -> None:
    assert "Traceback" not in r.err and "internal error" not in r.err, f"{where}: {r.err}"


def tree_digest(*dirs: Path) -> dict[str, str]:
    """sha256 of every file under dirs (directories listed too): 'nothing changed' is this, equal before and after."""
    out: dict[str, str] = {}
    for top in dirs:
        if not top.exists():
            continue
        for root, subdirs, names in os.walk(top):
            for d in subdirs:
                out[os.path.join(root, d) + "/"] = "dir"
            for n in names:
                p = os.path.join(root, n)
                out[p] = "link" if os.path.islink(p) else hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_source(path: Path, rows: int = 100, wal_rows: int = 0) -> None:
    """A WAL-mode source DB; with wal_rows, that many more rows held ONLY in its hot -wal (as a
    kill -9 of the engine leaves it): built elsewhere and copied raw while the writer is still open."""
    build = path.parent / f".build-{path.name}"
    build.mkdir()
    db = build / path.name
    make_db(db, rows)
    if wal_rows:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("BEGIN")
        for i in range(wal_rows):
            conn.execute("INSERT INTO trades(symbol, qty, note) VALUES (?, ?, ?)", ("WAL", i, "w"))
        conn.execute("COMMIT")
        shutil.copyfile(db, path)
        shutil.copyfile(f"{db}-wal", f"{path}-wal")
        conn.close()
    else:
        shutil.copyfile(db, path)
    shutil.rmtree(build)


def make_rollback_source(path: Path, rows: int = 80) -> None:
    """A source in rollback-journal mode (journal_mode=DELETE), as an older engine wrote it."""
    make_db(path, rows, wal=False)


def corrupt_page(db: Path) -> None:
    """Give page 2 (the trades table's root) an invalid b-tree page type."""
    data = bytearray(db.read_bytes())
    psize = int.from_bytes(data[16:18], "big")
    data[psize] = 0x07
    db.write_bytes(bytes(data))


def run_noconfig(*args: str) -> Result:
    """neo-db with no config file at all (the controller's checkout): --preflight needs none."""
    env = {k: v for k, v in os.environ.items() if k != "NEO_DB_CONFIG"}
    env["NEO_DB_CONFIG"] = "/nonexistent/db_safeguards.yml"
    proc = subprocess.run([SYSTEM_PYTHON, str(NEO_DB), *args], check=False, capture_output=True, text=True, env=env, timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def src_dir(tmp_path: Path) -> Path:
    d = tmp_path / "controller"
    d.mkdir()
    return d


# ---- --preflight ----


def test_preflight_bad_paths_are_usage_errors_naming_the_path(src_dir: Path) -> None:
    missing = src_dir / "nope.db"
    r = run_noconfig("import", "--preflight", str(missing))
    no_crash(r)
    assert r.rc == 2 and str(missing) in r.err and "does not exist" in r.err, r.err
    r = run_noconfig("import", "--preflight", str(src_dir), "--json")
    no_crash(r)
    assert r.rc == 2 and str(src_dir) in r.err and "not a file" in r.err, r.err
    assert r.json["rc"] == 2
    # positive control: a real DB at a path beside them passes
    good = src_dir / "neo_live_stage1.db"
    make_source(good)
    r = run_noconfig("import", "--preflight", str(good), "--json")
    assert r.rc == 0, r.err
    assert r.json["integrity"] == "ok" and r.json["tables"] == {"trades": 100}


def test_preflight_refuses_a_file_that_is_not_sqlite(src_dir: Path) -> None:
    text = src_dir / "notes.db"
    text.write_text("this is not a database\n" * 10)
    empty = src_dir / "empty.db"
    empty.write_bytes(b"")
    for path in (text, empty):
        r = run_noconfig("import", "--preflight", str(path))
        no_crash(r)
        assert r.rc == 2 and str(path) in r.err and "not a SQLite database" in r.err, r.err
        assert FLAG049 not in r.err  # not corruption of a DB: the wrong file
    good = src_dir / "good.db"
    make_source(good)
    assert run_noconfig("import", "--preflight", str(good)).rc == 0


def test_preflight_refuses_a_hot_wal_without_its_db(src_dir: Path) -> None:
    src = src_dir / "neo_live_stage1.db"
    make_source(src, wal_rows=7)
    wal = Path(f"{src}-wal")
    assert wal.stat().st_size > 0
    r = run_noconfig("import", "--preflight", str(src))  # positive control: with its DB
    assert r.rc == 0, r.err
    moved = src_dir / "elsewhere.db"
    src.rename(moved)
    r = run_noconfig("import", "--preflight", str(src))
    no_crash(r)
    assert r.rc == 2 and str(wal) in r.err and "without its DB" in r.err, r.err
    r = run_noconfig("import", "--preflight", str(wal))  # the -wal itself named as the source
    no_crash(r)
    assert r.rc == 2 and "-wal" in r.err and "name the DB file" in r.err, r.err


def test_preflight_recovers_rows_held_only_in_the_wal_and_writes_nothing_beside_the_source(src_dir: Path) -> None:
    src = src_dir / "neo_live_stage1.db"
    make_source(src, rows=100, wal_rows=25)
    assert count_rows_raw_main_file(src) == 100  # the main file alone holds 100
    before = tree_digest(src_dir)
    r = run_noconfig("import", "--preflight", str(src), "--json")
    assert r.rc == 0, r.err
    doc = r.json
    assert doc["tables"] == {"trades": 125}
    assert doc["sha256"] == sha(src) and doc["wal_sha256"] == sha(Path(f"{src}-wal"))
    assert doc["journal_mode"] == "wal" and doc["integrity"] == "ok" and doc["size_bytes"] == src.stat().st_size
    assert doc["source"] == str(src)
    assert tree_digest(src_dir) == before  # no -shm, no checkpoint, nothing next to SOURCE
    text = run_noconfig("import", "--preflight", str(src))
    assert text.rc == 0 and "trades" in text.out and "125" in text.out and doc["sha256"] in text.out


def count_rows_raw_main_file(db: Path) -> int:
    """Rows in the main file alone, ignoring its -wal (a copy without the -wal)."""
    tmp = db.with_name(db.name + ".mainonly")
    shutil.copyfile(db, tmp)
    try:
        return count_rows(tmp)
    finally:
        tmp.unlink()


def test_preflight_refuses_a_corrupt_source_with_flag049_and_names_the_backup_option(src_dir: Path) -> None:
    good = src_dir / "neo_live_stage1.db.bak.20260421T165223Z"
    make_source(good)
    r = run_noconfig("import", "--preflight", str(good))
    assert r.rc == 0, r.err  # positive control
    bad = src_dir / "neo_live_stage1.db"
    make_source(bad)
    corrupt_page(bad)
    before = tree_digest(src_dir)
    r = run_noconfig("import", "--preflight", str(bad), "--json")
    no_crash(r)
    assert r.rc == 3, r.err
    assert FLAG049 in r.err and "neo_live_stage1.db.bak.<UTC>" in r.err and "do not repair" in r.err, r.err
    assert r.json["rc"] == 3
    # a malformed -wal (the brief's case): refused too, not silently dropped
    walbad = src_dir / "walbad.db"
    make_source(walbad)
    Path(f"{walbad}-wal").write_bytes(b"\x00garbage" * 512)
    r = run_noconfig("import", "--preflight", str(walbad))
    no_crash(r)
    assert r.rc == 3 and FLAG049 in r.err and "WAL" in r.err, r.err
    assert {k: v for k, v in tree_digest(src_dir).items() if "walbad" not in k} == before


def test_preflight_reports_a_rollback_journal_source(src_dir: Path) -> None:
    src = src_dir / "old.db"
    make_rollback_source(src)
    r = run_noconfig("import", "--preflight", str(src), "--json")
    assert r.rc == 0, r.err
    assert r.json["journal_mode"] == "delete" and r.json["wal_sha256"] is None and r.json["tables"] == {"trades": 80}


# ---- --show ----


def test_show_on_a_fresh_box_and_the_highest_session(runtime: Runtime) -> None:
    r = runtime.cli("import", "--show", "--json")
    assert r.rc == 0, r.err
    assert r.json == {"origin": None, "live_db_exists": False, "live_sha256": None, "highest_session": None}
    runtime.state.mkdir(parents=True, exist_ok=True)
    (runtime.state / "session_counter.json").write_text(json.dumps({"last_number": 50, "session": "S050"}))
    assert runtime.cli("import", "--show", "--json").json["highest_session"] == "S050"
    make_db(runtime.db)
    assert runtime.cli("backup", "--phase", "pre", "--session", "S052").rc == 0
    doc = runtime.cli("import", "--show", "--json").json
    assert doc["highest_session"] == "S052" and doc["live_db_exists"] is True and doc["live_sha256"] == sha(runtime.db)
    text = runtime.cli("import", "--show")
    assert text.rc == 0 and "S052" in text.out
