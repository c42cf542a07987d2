"""Everything that opens a SQLite file.

SOLE-WRITER RULE (FLAG-049): the engine process is the only writer of the live DB.
This module opens the live DB only with ``mode=ro`` connections (a read-only
connection never checkpoints, never truncates or deletes the ``-wal``) and writes
only to copies that it created itself.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import sqlite3
import stat
import struct
import time
import urllib.parse
from pathlib import Path

from . import fsutil

SQLITE_MAGIC = b"SQLite format 3\x00"
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # a rollback journal's header (zeroed once it is done)
WAL_MAGICS = (0x377F0682, 0x377F0683)
WAL_VERSION = 3007000
# How long a copy waits for a writer's lock on the live DB before it fails, named. Python's
# Connection.backup() retries SQLITE_BUSY forever: a writer holding the DB in EXCLUSIVE locking
# mode (or one long write transaction) would hang the backup, and the state lock, with it.
COPY_LOCK_WAIT_S = 10.0
MMAP_MAX = 1 << 40  # the integrity check maps the whole file; SQLite caps it at its compile-time limit
# The live file set: the DB, its -wal and -shm, and a (hot) rollback -journal, which the
# next read-write open plays back into whatever DB file then has the name.
LIVE_SUFFIXES = ("", "-wal", "-shm", "-journal")


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


def _wal_checksum(data: bytes, big_endian: bool, s0: int = 0, s1: int = 0) -> tuple[int, int]:
    """SQLite's WAL checksum of data (a multiple of 8 bytes), continuing from (s0, s1)."""
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    pairs = iter(words)
    for a, b in zip(pairs, pairs, strict=True):
        s0 = (s0 + a + s1) & mask
        s1 = (s1 + b + s0) & mask
    return s0, s1


def page_size(header: bytes) -> int:
    raw = struct.unpack(">H", header[16:18])[0]
    return 65536 if raw == 1 else raw


def pending_byte_page(psize: int) -> int:
    """The page holding SQLite's lock bytes: never written, so it may be a hole in the file."""
    return 0x40000000 // psize + 1


WAL_HEADER_SIZE = 32
WAL_FRAME_HEADER_SIZE = 24


@dataclasses.dataclass(frozen=True)
class WalScan:
    """What SQLite's recovery makes of a -wal, and what lies beyond the point where it stops.

    SQLite replays frames while each carries the header's salts and a checksum that chains
    from the previous frame, and keeps them up to the last commit frame among them
    (``kept_frames``). Frames after the first bad one are ignored without a word. Each frame
    stores its cumulative checksum, so a later frame can still be verified on its own, from
    its predecessor's stored checksum: a crash tears only the tail, so intact frames with the
    current salts *and a commit* after a bad frame mean damage in the middle, and SQLite would
    silently drop those commits.
    """

    path: Path
    frames: int  # whole frames in the file, of any generation
    kept_frames: int  # SQLite replays frames 1..kept_frames (its mxFrame)
    kept_commits: int
    db_pages: int  # the DB's size in pages after the last kept commit (0: no kept commit)
    pages: frozenset[int]  # the pages the kept frames hold
    first_bad: int  # the first frame SQLite rejects (0: none up to the end of the file)
    intact_after: int  # frames after first_bad with the current salts and a valid checksum
    commits_after: int  # commit frames among them
    last_intact: int  # the last of them (0: none)
    dropped_commits: int  # commits in frames kept_frames+1..last_intact (a lower bound if not exact)
    dropped_commits_exact: bool

    @property
    def damaged_in_the_middle(self) -> bool:
        return self.commits_after > 0

    @property
    def dropped_frames(self) -> int:
        return self.last_intact - self.kept_frames if self.last_intact else 0

    def covers(self, first_page: int, pending: int) -> list[int]:
        """Pages from first_page to the DB's size that neither the file nor the kept frames hold."""
        return [p for p in range(first_page, self.db_pages + 1) if p not in self.pages and p != pending]


def scan_wal(wal_path: Path, chunk: int = 1 << 20) -> WalScan | None:
    """Walk every frame of a -wal whose header is valid (see wal_problems). None if it has no frames.

    One pass, linear in the file's size, read in chunks; a checksum is computed only for
    frames that carry the current salts (older generations beyond the current frames are
    skipped as SQLite skips them).
    """
    try:
        fh = open(wal_path, "rb", buffering=chunk)  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return None
    with fh:
        head = fh.read(WAL_HEADER_SIZE)
        if len(head) < WAL_HEADER_SIZE:
            return None
        magic, _version, psize, _seq, _salt1, _salt2, ck1, ck2 = struct.unpack(">8I", head)
        psize = 65536 if psize == 1 else psize
        big_endian = bool(magic & 1)
        salts = head[16:24]
        chain = (ck1, ck2)  # the running checksum while every frame so far is valid
        prev_stored = (ck1, ck2)  # the previous frame's stored checksum
        frame = 0
        kept_frames = kept_commits = db_pages = 0
        pages: set[int] = set()
        pending: set[int] = set()  # pages of valid frames after the last kept commit
        first_bad = intact_after = commits_after = last_intact = 0
        commits_since_kept = 0
        dropped_commits = 0
        exact = True
        exact_at_last = True
        while True:
            hdr = fh.read(WAL_FRAME_HEADER_SIZE)
            data = fh.read(psize)
            if len(hdr) < WAL_FRAME_HEADER_SIZE or len(data) < psize:
                break  # a partial frame at the end: a torn append
            frame += 1
            pgno, commit_size = struct.unpack(">II", hdr[:8])
            stored = struct.unpack(">II", hdr[16:24])
            current = hdr[8:16] == salts
            if not first_bad:
                ok = False
                if current and pgno:
                    ok = _wal_checksum(data, big_endian, *_wal_checksum(hdr[:8], big_endian, *chain)) == stored
                if ok:
                    chain = stored
                    pending.add(pgno)
                    if commit_size:
                        kept_frames, db_pages = frame, commit_size
                        kept_commits += 1
                        pages |= pending
                        pending.clear()
                else:
                    first_bad = frame
            if first_bad:
                intact = (
                    frame > first_bad
                    and current
                    and pgno != 0
                    and _wal_checksum(data, big_endian, *_wal_checksum(hdr[:8], big_endian, *prev_stored)) == stored
                )
                if current:
                    commits_since_kept += 1 if commit_size else 0
                elif frame >= first_bad:
                    exact = False  # a frame whose salts are damaged may have been a commit
                if intact:
                    intact_after += 1
                    last_intact = frame
                    commits_after += 1 if commit_size else 0
                    dropped_commits, exact_at_last = commits_since_kept, exact
            prev_stored = stored
    if frame == 0:
        return None
    return WalScan(
        path=wal_path,
        frames=frame,
        kept_frames=kept_frames,
        kept_commits=kept_commits,
        db_pages=db_pages,
        pages=frozenset(pages),
        first_bad=first_bad,
        intact_after=intact_after,
        commits_after=commits_after,
        last_intact=last_intact,
        dropped_commits=dropped_commits,
        dropped_commits_exact=exact_at_last,
    )


@dataclasses.dataclass
class Structure:
    """The cheap structural checks' verdict. ``problems`` empty: nothing for SQLite to trip on."""

    problems: list[str]
    notes: list[str]
    wal: WalScan | None = None

    @property
    def wal_damaged(self) -> bool:
        return self.wal is not None and self.wal.damaged_in_the_middle


def structural_problems(db_path: Path) -> list[str]:
    return check_structure(db_path).problems


def check_structure(db_path: Path) -> Structure:
    """Cheap checks SQLite's own integrity_check does not make, done before anything opens the DB.

    * a zero-length or non-SQLite file (SQLite would treat an empty file as a new, empty DB);
    * a file truncated below the page count its header records, or not a whole number of
      pages, unless a valid hot ``-wal`` holds every page beyond the file's end (a kill
      during a checkpoint that grows the DB: page 1 is written first; SQLite recovers it);
    * a ``-wal`` whose header is invalid: SQLite would silently discard it, and with it
      every commit it holds that was not checkpointed yet;
    * a ``-wal`` damaged in the middle: SQLite would stop at the bad frame and silently
      drop the commits after it (a torn tail, the normal crash case, passes).
    """
    size = db_path.stat().st_size
    if size == 0:
        return Structure([f"{db_path} is empty (0 bytes): not a database the engine wrote"], [])
    with open(db_path, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        return Structure([f"{db_path} is not a SQLite database (no 'SQLite format 3' header)"], [])
    psize = page_size(header)
    if psize < 512 or psize & (psize - 1):
        return Structure([f"{db_path}: invalid page size {psize} in the header"], [])
    wal_path = Path(f"{db_path}-wal")
    problems = wal_problems(wal_path, psize)
    wal = None if problems else scan_wal(wal_path)
    notes: list[str] = []
    file_pages = size // psize
    change_counter, header_pages = struct.unpack(">II", header[24:32])
    valid_for = struct.unpack(">I", header[92:96])[0]
    short = bool(header_pages and change_counter == valid_for and file_pages < header_pages)
    if size % psize or short:
        missing = wal.covers(file_pages + 1, pending_byte_page(psize)) if wal is not None and wal.kept_commits else None
        if missing == []:
            notes.append(
                f"{db_path}: the file holds {file_pages} whole pages and its header records {header_pages}, but the -wal's "
                f"{wal.kept_commits if wal else 0} intact commits hold every page beyond the file's end (the DB has "
                f"{wal.db_pages if wal else 0} pages after them): a checkpoint was cut short, and SQLite recovers from the -wal"
            )
        else:
            gap = f"; its -wal does not hold pages {_ranges(missing)} either" if missing else "; no valid -wal holds the missing pages"
            if size % psize:
                problems.append(f"{db_path}: size {size} is not a whole number of {psize}-byte pages (truncated?){gap}")
            if short:
                problems.append(f"{db_path}: the header records {header_pages} pages but the file holds {file_pages} (truncated){gap}")
    if wal is not None and wal.damaged_in_the_middle:
        problems.append(wal_damage_message(wal))
    return Structure(problems, notes, wal)


def _ranges(pages: list[int], limit: int = 5) -> str:
    spans: list[str] = []
    start = prev = pages[0]
    for p in [*pages[1:], 0]:
        if p == prev + 1:
            prev = p
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = p
    return ", ".join(spans[:limit]) + (f" and {len(spans) - limit} more ranges" if len(spans) > limit else "")


def wal_damage_message(wal: WalScan) -> str:
    commits = f"{wal.dropped_commits} commits" if wal.dropped_commits_exact else f"at least {wal.dropped_commits} commits"
    return (
        f"{wal.path}: damaged in the middle: frame {wal.first_bad} of {wal.frames} fails its checksum, "
        f"but {wal.intact_after} later frames with the current salts are intact ({wal.commits_after} of them commits). "
        f"SQLite would stop at frame {wal.kept_frames} and silently drop {wal.dropped_frames} frames holding {commits}. "
        "Keep the raw files: opening the DB read-write (the engine, the sqlite3 shell) would checkpoint and delete the -wal, "
        "and those commits with it"
    )


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


# Python 3.10 (Ubuntu 22.04) has no sqlite3.Error.sqlite_errorname: the name comes from SQLite's
# own message there (sqlite3ErrStr), so a permission problem is never taken for corruption.
_ERROR_NAMES_BY_MESSAGE = (
    ("unable to open database file", "SQLITE_CANTOPEN"),
    ("attempt to write a readonly database", "SQLITE_READONLY"),
    ("access permission denied", "SQLITE_PERM"),
    ("authorization denied", "SQLITE_AUTH"),
    ("not authorized", "SQLITE_AUTH"),
    ("database disk image is malformed", "SQLITE_CORRUPT"),
    ("file is not a database", "SQLITE_NOTADB"),
    ("database is locked", "SQLITE_BUSY"),
    ("disk i/o error", "SQLITE_IOERR"),
    ("database or disk is full", "SQLITE_FULL"),
)


def error_name(exc: BaseException) -> str:
    """SQLite's error name for an exception (SQLITE_CORRUPT, ...), on every Python from 3.10; '' if unknown."""
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(name, str) and name:
        return name
    text = str(exc).lower()
    return next((n for message, n in _ERROR_NAMES_BY_MESSAGE if message in text), "")


# SQLite errors that say "this user may not", never "this file is damaged".
ACCESS_ERRORS = ("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH", "SQLITE_READONLY")


def access_error(result: list[str]) -> str | None:
    """The line of an integrity result (see check_file) that is an access error, if it is one."""
    if len(result) == 1 and result[0].split(":", 1)[0].startswith(ACCESS_ERRORS):
        return result[0]
    return None


def user_name(uid: int | None = None) -> str:
    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _owner_and_mode(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "owner and mode unknown"
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"owner {user_name(st.st_uid)}:{group}, mode {stat.S_IMODE(st.st_mode):04o}"


def unsearchable_dir(path: Path) -> Path | None:
    """The first directory on the way to path that this user may not enter (no x permission)."""
    for directory in reversed(path.parents):
        if not os.access(directory, os.X_OK):
            return directory
    return None


def access_problems(db_path: Path) -> list[str]:
    """What this user lacks for SQLite to open the DB read-only, each naming the path and the permission.

    Checked before SQLite runs, because SQLite's own answers (SQLITE_READONLY_DIRECTORY,
    "unable to open database file") say nothing of which file or which permission:
    * every directory on the way must be searchable;
    * the DB, and its -wal and -shm where they exist, must be readable;
    * for a WAL-mode DB without a -wal or -shm, SQLite creates them: the directory must be
      writable (a read-only connection never writes the DB itself).
    """
    user = user_name()
    blocked = unsearchable_dir(db_path)
    if blocked is not None:
        return [f"{blocked}: no search permission (x) on the directory for {user} ({_owner_and_mode(blocked)})"]
    problems: list[str] = []
    header = b""
    sides = (Path(f"{db_path}-wal"), Path(f"{db_path}-shm"))
    for path in (db_path, *sides):
        try:
            with open(path, "rb") as fh:
                if path == db_path:
                    header = fh.read(100)
        except FileNotFoundError:
            continue
        except PermissionError:
            problems.append(f"{path}: no read permission for {user} ({_owner_and_mode(path)})")
        except OSError:
            continue  # not a permission matter: the checks after this one say what it is
    if problems:
        return problems
    missing = [p.name for p in sides if not p.exists()]
    wal_mode = len(header) >= 20 and header.startswith(SQLITE_MAGIC) and 2 in (header[18], header[19])
    directory = db_path.parent
    if wal_mode and missing and not os.access(directory, os.W_OK):
        try:
            read_only_fs = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
        except OSError:
            read_only_fs = False
        why = (
            "on a read-only filesystem"
            if read_only_fs
            else f"no write permission on the directory for {user} ({_owner_and_mode(directory)})"
        )
        problems.append(f"{directory}: {why}: SQLite must create {' and '.join(missing)} there to read this WAL-mode DB")
    return problems


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
        return [f"{error_name(exc) or 'error'}: cannot open: {exc}"]
    try:
        return integrity_check(conn, max_errors)
    except sqlite3.Error as exc:
        return [f"{error_name(exc) or 'error'}: {exc}"]
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
        try:  # a read transaction first, within a bounded busy wait: the one-step copy below then never waits
            src.execute(f"PRAGMA busy_timeout={int(COPY_LOCK_WAIT_S * 1000)}")
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except sqlite3.Error as exc:
            name = error_name(exc)
            if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED"):
                raise CopyError(
                    f"{name}: {source} stayed locked by another process for {COPY_LOCK_WAIT_S:.0f}s ({exc}); "
                    "a writer in EXCLUSIVE locking mode or a long write transaction: 'neo-db holders' names it",
                    source_corrupt=False,
                ) from None
            corrupt = name in _SOURCE_ERRORS or "malformed" in str(exc) or "not a database" in str(exc)
            raise CopyError(f"{name or 'error'}: {exc}", source_corrupt=corrupt) from None
        if not int(src.execute("PRAGMA page_count").fetchone()[0]):
            # SQLite reads a zero-length file (with no -wal) as a new, empty database, which would copy
            # as an "intact" backup; kept by retention, such copies would push the real ones out.
            raise CopyError(f"{source} is empty (0 bytes, no pages): not a database the engine wrote", source_corrupt=True)
        dst = sqlite3.connect(os.fspath(dest), isolation_level=None)
        try:
            try:
                src.backup(dst, pages=-1)
            except sqlite3.Error as exc:
                name = error_name(exc)
                corrupt = name in _SOURCE_ERRORS or "malformed" in str(exc) or "not a database" in str(exc)
                raise CopyError(f"{name or 'error'}: {exc}", source_corrupt=corrupt) from None
            try:
                mode = dst.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
                pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
            except sqlite3.Error as exc:
                name = error_name(exc)
                raise CopyError(f"{name or 'error'} finishing the copy: {exc}", source_corrupt=name in _SOURCE_ERRORS) from None
            if str(mode).lower() != "delete":
                raise CopyError(f"could not switch the copy to journal_mode=DELETE (got {mode})", source_corrupt=False)
        finally:
            dst.close()
    finally:
        src.close()
    return CopyStats(time.monotonic() - started, pages)


def hot_journal_size(db_path: Path) -> int | None:
    """The size of a -journal that SQLite would roll back (non-empty, header not zeroed), else None."""
    journal = Path(f"{db_path}-journal")
    try:
        with open(journal, "rb") as fh:
            head = fh.read(len(JOURNAL_MAGIC))
        size = journal.stat().st_size
    except FileNotFoundError:
        return None
    return size if size > 0 and head == JOURNAL_MAGIC else None


def rolled_back_check(db_path: Path, workdir: Path, max_errors: int = 20) -> tuple[list[str], dict[str, int]]:
    """Copy the DB and its hot -journal into workdir, let SQLite roll the copy back (a read-write
    open of the copy, never of the live DB), and return (integrity_check, row counts) of the copy."""
    copy = workdir / db_path.name
    for suffix in ("", "-journal"):
        fsutil.copy_raw(Path(f"{db_path}{suffix}"), Path(f"{copy}{suffix}"))
    conn = sqlite3.connect(os.fspath(copy), isolation_level=None)
    try:
        result = integrity_check(conn, max_errors)
        return result, (row_counts(conn) if result == ["ok"] else {})
    except sqlite3.Error as exc:
        return [f"{error_name(exc) or 'error'}: {exc}"], {}
    finally:
        conn.close()
