"""Everything that opens a SQLite file.

SOLE-WRITER RULE (FLAG-049): the engine process is the only writer of the live DB.
This module opens the live DB only with ``mode=ro`` connections (a read-only
connection never checkpoints, never truncates or deletes the ``-wal``) and writes
only to copies that it created itself.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import struct
import time
import urllib.parse
from pathlib import Path

SQLITE_MAGIC = b"SQLite format 3\x00"
WAL_MAGICS = (0x377F0682, 0x377F0683)
WAL_VERSION = 3007000
MMAP_MAX = 1 << 40  # the integrity check maps the whole file; SQLite caps it at its compile-time limit


class CopyError(Exception):
    """A backup copy failed. ``source_corrupt`` tells a bad source from a bad destination."""

    def __init__(self, message: str, *, source_corrupt: bool) -> None:
        super().__init__(message)
        self.source_corrupt = source_corrupt


def ro_uri(path: Path) -> str:
    return "file:" + urllib.parse.quote(os.fspath(path)) + "?mode=ro"


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to the live DB (or any DB we must not change)."""
    return sqlite3.connect(ro_uri(path), uri=True, isolation_level=None, check_same_thread=False)


def sqlite_version() -> str:
    return sqlite3.sqlite_version


def _wal_checksum(data: bytes, big_endian: bool) -> tuple[int, int]:
    fmt = (">" if big_endian else "<") + f"{len(data) // 4}I"
    words = struct.unpack(fmt, data)
    s0 = s1 = 0
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def page_size(header: bytes) -> int:
    raw = struct.unpack(">H", header[16:18])[0]
    return 65536 if raw == 1 else raw


def structural_problems(db_path: Path) -> list[str]:
    """Cheap checks SQLite's own integrity_check does not make, done before anything opens the DB.

    * a zero-length or non-SQLite file (SQLite would treat an empty file as a new, empty DB);
    * a file truncated below the page count its header records, or not a whole number of pages;
    * a ``-wal`` whose header is invalid: SQLite would silently discard it, and with it
      every commit it holds that was not checkpointed yet.
    """
    problems: list[str] = []
    size = db_path.stat().st_size
    if size == 0:
        return [f"{db_path} is empty (0 bytes): not a database the engine wrote"]
    with open(db_path, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        return [f"{db_path} is not a SQLite database (no 'SQLite format 3' header)"]
    psize = page_size(header)
    if psize < 512 or psize & (psize - 1):
        return [f"{db_path}: invalid page size {psize} in the header"]
    if size % psize:
        problems.append(f"{db_path}: size {size} is not a whole number of {psize}-byte pages (truncated?)")
    change_counter, header_pages = struct.unpack(">II", header[24:32])
    valid_for = struct.unpack(">I", header[92:96])[0]
    if header_pages and change_counter == valid_for and size // psize < header_pages:
        problems.append(f"{db_path}: the header records {header_pages} pages but the file holds {size // psize} (truncated)")
    problems.extend(wal_problems(Path(f"{db_path}-wal"), psize))
    return problems


def wal_problems(wal_path: Path, db_page_size: int) -> list[str]:
    try:
        size = wal_path.stat().st_size
    except FileNotFoundError:
        return []
    if size == 0:
        return []
    with open(wal_path, "rb") as fh:
        head = fh.read(32)
    if len(head) < 32:
        return [f"{wal_path}: {size} bytes, shorter than a WAL header (32): the WAL is damaged"]
    magic, version, wal_psize, _seq, _salt1, _salt2, ck1, ck2 = struct.unpack(">8I", head)
    if magic not in WAL_MAGICS:
        return [f"{wal_path}: bad WAL magic 0x{magic:08X}: the WAL is garbage; SQLite would discard it"]
    if version != WAL_VERSION:
        return [f"{wal_path}: unknown WAL format version {version}"]
    if (_wal_checksum(head[:24], big_endian=bool(magic & 1))) != (ck1, ck2):
        return [f"{wal_path}: the WAL header checksum does not match: the WAL is damaged"]
    if wal_psize != db_page_size and not (wal_psize == 1 and db_page_size == 65536):
        return [f"{wal_path}: WAL page size {wal_psize} differs from the DB's {db_page_size}"]
    return []


def integrity_check(conn: sqlite3.Connection, max_errors: int = 20) -> list[str]:
    """Run PRAGMA integrity_check with the file memory-mapped. Returns ['ok'] or the errors."""
    conn.execute(f"PRAGMA mmap_size={MMAP_MAX}")
    rows = conn.execute(f"PRAGMA integrity_check({int(max_errors)})").fetchall()
    return [str(r[0]) for r in rows] or ["(no result)"]


def check_file(path: Path, max_errors: int = 20) -> list[str]:
    """integrity_check of a file through a read-only connection; SQLite errors become the result."""
    try:
        conn = open_readonly(path)
    except sqlite3.Error as exc:
        return [f"cannot open: {exc}"]
    try:
        return integrity_check(conn, max_errors)
    except sqlite3.Error as exc:
        return [f"{getattr(exc, 'sqlite_errorname', 'error')}: {exc}"]
    finally:
        conn.close()


# SQLite reserves the names beginning with "sqlite_", in any case, for its own objects
# (sqlite_sequence, sqlite_stat1...). '_' is a LIKE wildcard, so it is escaped: a user's
# table named SqliteMigrations or sqlitex is data like any other. LIKE ignores case here,
# as SQLite's reservation does.
USER_OBJECT = r"name NOT LIKE 'sqlite\_%' ESCAPE '\'"


def row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [r[0] for r in conn.execute(f"SELECT name FROM sqlite_schema WHERE type='table' AND {USER_OBJECT} ORDER BY name")]
    counts: dict[str, int] = {}
    for name in names:
        quoted = '"' + name.replace('"', '""') + '"'
        counts[name] = int(conn.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0])
    return counts


def same_pages(copy: Path, source: Path, chunk: int = 4 << 20) -> bool:
    """True if a backup-API copy holds exactly the source file's pages.

    Only header fields a backup rewrites may differ (bytes 18-19 journal mode, 24-27
    change counter, 40-43 schema cookie, 92-99 version-valid-for and library version). Meaningful only for a
    source whose -wal holds no frames and that nobody writes while it is read.
    """
    try:
        if copy.stat().st_size != source.stat().st_size:
            return False
        with open(copy, "rb") as a, open(source, "rb") as b:
            ha, hb = a.read(100), b.read(100)
            if (ha[0:18], ha[20:24], ha[28:40], ha[44:92]) != (hb[0:18], hb[20:24], hb[28:40], hb[44:92]):
                return False
            while True:
                ca, cb = a.read(chunk), b.read(chunk)
                if ca != cb:
                    return False
                if not ca:
                    return True
    except OSError:
        return False


def wal_is_empty(db_path: Path) -> bool:
    try:
        return Path(f"{db_path}-wal").stat().st_size == 0
    except FileNotFoundError:
        return True


def file_row_counts(path: Path) -> dict[str, int]:
    """row_counts of a file (a copy) through its own read-only connection."""
    conn = open_readonly(path)
    try:
        return row_counts(conn)
    finally:
        conn.close()


_SOURCE_ERRORS = {"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CORRUPT_INDEX", "SQLITE_CORRUPT_SEQUENCE"}


@dataclasses.dataclass(frozen=True)
class CopyStats:
    seconds: float
    pages: int


def backup_copy(source: Path, dest: Path) -> CopyStats:
    """Copy source into the (empty, already created) file dest with the online backup API.

    One step (``pages=-1``): a stepped copy restarts whenever the engine writes between
    steps and may never finish. The copy is switched to ``journal_mode=DELETE`` so it is
    a self-contained file that readers can open ``mode=ro``.
    """
    started = time.monotonic()
    try:
        src = open_readonly(source)
    except sqlite3.Error as exc:
        raise CopyError(f"cannot open {source} read-only: {exc}", source_corrupt=False) from None
    try:
        dst = sqlite3.connect(os.fspath(dest), isolation_level=None)
        try:
            try:
                src.backup(dst, pages=-1)
            except sqlite3.Error as exc:
                name = getattr(exc, "sqlite_errorname", "")
                corrupt = name in _SOURCE_ERRORS or "malformed" in str(exc) or "not a database" in str(exc)
                raise CopyError(f"{name or 'error'}: {exc}", source_corrupt=corrupt) from None
            try:
                mode = dst.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
                pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
            except sqlite3.Error as exc:
                name = getattr(exc, "sqlite_errorname", "")
                raise CopyError(f"{name or 'error'} finishing the copy: {exc}", source_corrupt=name in _SOURCE_ERRORS) from None
            if str(mode).lower() != "delete":
                raise CopyError(f"could not switch the copy to journal_mode=DELETE (got {mode})", source_corrupt=False)
        finally:
            dst.close()
    finally:
        src.close()
    return CopyStats(time.monotonic() - started, pages)
