"""`neo-db check`: the gates in order, each failing closed with its own exit code."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FLAG049, SYSTEM_PYTHON, Runtime, make_db


def test_a_good_db_passes_every_gate(runtime: Runtime) -> None:
    make_db(runtime.db)
    r = runtime.cli("check", "--json")
    assert r.rc == 0, r.err
    assert r.json["integrity_check"] == ["ok"] and r.json["holders"] == "none"
    assert r.json["filesystem"].startswith("local")


def _flip_root_page_type(db: Path) -> None:
    data = bytearray(db.read_bytes())
    psize = int.from_bytes(data[16:18], "big")
    data[psize] = 0x07  # page 2: not a b-tree page type
    db.write_bytes(bytes(data))


def _flip_index_bytes(db: Path) -> None:
    # Swap two index keys' payload bytes in the index's pages: the index no longer matches the table.
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name='trades_symbol'").fetchone()[0]
    conn.close()
    data = bytearray(db.read_bytes())
    psize = int.from_bytes(data[16:18], "big")
    page = data[(root - 1) * psize : root * psize]
    i = page.find(b"SYM1")
    assert i > 0
    data[(root - 1) * psize + i + 3] = ord("9")
    db.write_bytes(bytes(data))


def _truncate(db: Path) -> None:
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        fh.truncate(size // 2 + 100)


def _truncate_at_page(db: Path) -> None:
    psize = int.from_bytes(db.read_bytes()[16:18], "big")
    with open(db, "r+b") as fh:
        fh.truncate(psize * 3)


def _garbage_wal(db: Path) -> None:
    Path(f"{db}-wal").write_bytes(random.Random(7).randbytes(65536))


def _zero_length(db: Path) -> None:
    db.write_bytes(b"")


def _not_sqlite(db: Path) -> None:
    db.write_text("this is a trading log, not a database\n" * 200)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "flipped b-tree page type": _flip_root_page_type,
    "flipped index bytes": _flip_index_bytes,
    "truncated mid-page": _truncate,
    "truncated at a page boundary": _truncate_at_page,
    "garbage -wal": _garbage_wal,
    "zero-length DB": _zero_length,
    "not a SQLite file": _not_sqlite,
}


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_each_corruption_fails_closed_with_the_flag049_message(runtime: Runtime, how: str) -> None:
    make_db(runtime.db, rows=2000)
    CORRUPTIONS[how](runtime.db)
    for command in ("check", "session-start"):
        r = runtime.cli(command)
        assert r.rc == 3, f"{command} on {how}: rc={r.rc}\n{r.err}"
        assert FLAG049 in r.err.splitlines()
        assert "Traceback" not in r.err
    assert runtime.files("pre_session") == []


@pytest.mark.parametrize(
    ("fstype", "source"),
    [("nfs4", "server:/export"), ("cifs", "//winbox/neo"), ("smb3", "//winbox/neo"), ("fuse.sshfs", "neo@box:"), ("9p", "share")],
)
def test_a_network_filesystem_is_refused_and_named(runtime: Runtime, tmp_path: Path, fstype: str, source: str) -> None:
    # Injected mount table: the parser and the gate are real; no NFS server runs on this machine.
    make_db(runtime.db)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        f"99 22 0:50 / {runtime.db.parent} rw,relatime shared:9 - {fstype} {source} rw\n"
    )
    r = runtime.cli("check", env=runtime.env(NEO_DB_MOUNTINFO=str(mountinfo)))
    assert r.rc == 4, r.err
    assert fstype in r.err and str(runtime.db.parent) in r.err
    r = runtime.cli("session-start", env=runtime.env(NEO_DB_MOUNTINFO=str(mountinfo)))
    assert r.rc == 4


def test_a_local_mount_in_the_table_passes(runtime: Runtime, tmp_path: Path) -> None:
    make_db(runtime.db)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw - ext4 /dev/vda rw\n"
        f"99 22 0:50 / {runtime.db.parent} rw - nfs4 server:/x rw\n"
        f"100 99 8:2 / {runtime.db.parent} rw - xfs /dev/vdb rw\n"  # mounted on top: wins
    )
    r = runtime.cli("check", env=runtime.env(NEO_DB_MOUNTINFO=str(mountinfo)))
    assert r.rc == 0, r.err


def test_a_second_sqlite_process_holding_the_db_is_named(runtime: Runtime, writer_factory) -> None:
    make_db(runtime.db)
    w = writer_factory(runtime.db, rate=50)
    for command in ("check", "session-start"):
        r = runtime.cli(command)
        assert r.rc == 5, r.err
        assert f"PID {w.proc.pid}" in r.err and "demo-engine" in r.err


def test_a_plain_open_file_handle_is_found_too(runtime: Runtime) -> None:
    make_db(runtime.db)
    holder = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", f"import time; f = open({str(runtime.db)!r}, 'rb'); print('ok', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        r = runtime.cli("check")
        assert r.rc == 5 and f"PID {holder.pid}" in r.err
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
    time.sleep(0.05)
    assert runtime.cli("check").rc == 0


def test_a_missing_db_fails_closed_unless_allowed(runtime: Runtime) -> None:
    r = runtime.cli("check")
    assert r.rc == 6 and str(runtime.db) in r.err
    assert runtime.cli("check", "--allow-missing").rc == 0
    assert not runtime.db.exists(), "check must not create the DB"


def test_check_after_a_crash_leaves_the_db_and_its_hot_wal_untouched(runtime: Runtime, writer_factory) -> None:
    # A normal (read-write) open would recover, checkpoint and delete the -wal: the hook's
    # read-only connection must not, so the raw files stay exactly as the crash left them.
    make_db(runtime.db)
    w = writer_factory(runtime.db, rate=0)
    w.wait_commits(200)
    w.kill()
    wal = Path(f"{runtime.db}-wal")
    before = {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in (runtime.db, wal)}
    assert wal.stat().st_size > 0
    assert runtime.cli("check").rc == 0
    assert {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in (runtime.db, wal)} == before
