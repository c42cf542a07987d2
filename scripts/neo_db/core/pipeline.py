"""The one verified-copy pipeline every backup, snapshot and timed copy goes through.

    copy      the sqlite online backup API, in ONE step, from a read-only connection, into an
              empty temp file (``.tmp-<final name>.<pid>``); the copy is switched to journal_mode=DELETE
    verify    integrity_check and row counts of the copy (or, when the live DB's own check is
              already running, a page-by-page comparison with it)
    hash      fsync and sha256 of the copy, on the other core while it is verified
    manifest  written to its own temp file, fsynced
    publish   every temp renamed to its final name, then the directory fsynced

An error or a kill at any point leaves only ``.tmp-`` names, which the next run removes: a file
under a final name is always complete.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import __version__, catalog, fsutil, sqlitedb
from ..config import Config
from ..errors import FAILURE, NeoDbError, PathError

log = logging.getLogger(__name__)

VERIFIED_BY_COPY = "integrity_check of the copy"
VERIFIED_BY_SOURCE = "integrity_check of the live DB, and a page-by-page comparison of the copy with it"


# SQLite's names for a failed write into the copy (ENOSPC half-way through the -shm, EFBIG past `ulimit -f`)
_WRITE_ERRORS = ("SQLITE_IOERR_WRITE", "SQLITE_IOERR_SHMSIZE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_TRUNCATE")

# What SQLite may leave beside a copy it had open when the copy failed
_SIDECARS = ("-wal", "-shm", "-journal")


class BackupFailed(NeoDbError):
    """The backup could not be written (disk full, unwritable dir, unreadable source)."""

    def __init__(self, message: str, *, source_corrupt: bool = False, hint: str | None = None, exit_code: int = FAILURE) -> None:
        super().__init__(message, hint=hint)
        self.source_corrupt = source_corrupt
        self.exit_code = exit_code

    @classmethod
    def writing(cls, cfg: Config, directory: Path, exc: OSError) -> BackupFailed:
        """A backup could not be written into directory (under backup_dir)."""
        err = PathError.from_os_error(exc, key="backup_dir", key_path=cfg.backup_dir, source=cfg.source)
        return cls(f"writing the backup in {directory} failed: {err.message}", hint=err.hint, exit_code=err.exit_code)

    @classmethod
    def copying(cls, cfg: Config, directory: Path, exc: sqlitedb.CopyError) -> BackupFailed:
        """The backup-API copy of the live DB into directory failed."""
        text = str(exc)
        if exc.source_corrupt:
            hint = "run 'neo-db check': the live DB is likely corrupt"
        elif "full" in text:  # SQLITE_FULL: the copy's filesystem
            hint = f"the filesystem holding {directory} is full: free space there (df -h {directory}; 'neo-db prune'), then retry"
        elif "stayed locked" in text:  # a writer held its lock past sqlitedb.COPY_LOCK_WAIT_S
            hint = f"'neo-db holders' names the process holding {cfg.db_path}; retry when its write ends, or stop it"
        elif any(name in text for name in _WRITE_ERRORS):  # ENOSPC or EFBIG on a write SQLite reports as an I/O error
            hint = (
                f"writing the copy into {directory} failed: its filesystem is likely full, or a file-size limit is too low "
                f"(df -h {directory}; ulimit -f; LimitFSIZE= of the unit): free space ('neo-db prune') or raise the limit, then retry"
            )
        elif not cfg.db_path.is_file():
            hint = f"there is no live DB at {cfg.db_path} (db_path in {cfg.source}): restore one ('neo-db list', 'neo-db restore NAME')"
        else:
            hint = f"check that {cfg.db_path} is readable and {directory} writable by the user running neo-db (the service user)"
        return cls(f"copy of {cfg.db_path} into {directory} failed: {text}", source_corrupt=exc.source_corrupt, hint=hint)


class BackupNotIntact(NeoDbError):
    """The copy was made but failed integrity_check, and the caller asked for an intact one."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("the copy failed integrity_check: " + "; ".join(errors[:3]))
        self.errors = errors


@dataclasses.dataclass
class BackupResult:
    path: Path
    manifest: dict[str, Any]

    @property
    def intact(self) -> bool:
        return bool(self.manifest.get("integrity_check") == ["ok"])

    @property
    def name(self) -> str:
        return self.path.name


@dataclasses.dataclass
class Checked:
    """A copy under its temp name, verified and hashed: what its manifest says of it."""

    path: Path
    stats: sqlitedb.CopyStats
    integrity: list[str]
    counts: dict[str, int]
    sha256: str
    verified_by: str
    copy_seconds: float
    verify_seconds: float

    @property
    def intact(self) -> bool:
        return self.integrity == ["ok"]

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def manifest_fields(self) -> dict[str, Any]:
        """What every backup manifest says of its copy (list, prune, drill and restore read these)."""
        return {
            "size": self.size,
            "sha256": self.sha256,
            "pages": self.stats.pages,
            "integrity_check": self.integrity,
            "verified_by": self.verified_by,
            "row_counts": self.counts,
            "sqlite_version": sqlitedb.sqlite_version(),
            "neo_db_version": __version__,
        }

    def timings(self) -> dict[str, float]:
        return {"copy_seconds": round(self.copy_seconds, 3), "verify_seconds": round(self.verify_seconds, 3)}


def free_timestamp(taken: Callable[[dt.datetime], bool], now: dt.datetime | None, what: str) -> dt.datetime:
    """A UTC second for which `taken` is false. Names have one-second resolution, so wait out a clash."""
    for _ in range(5):
        ts = now or catalog.utcnow()
        if not taken(ts):
            return ts
        if now is not None:
            now = now + dt.timedelta(seconds=1)
        else:
            time.sleep(1.0 - (time.time() % 1.0) + 0.01)
    raise BackupFailed(f"no free name for {what}")


def ensure_dir(cfg: Config, directory: Path, mode: int = 0o750) -> None:
    """The directory the copy goes into, a real one; BackupFailed naming it if it cannot be."""
    try:
        fsutil.ensure_real_dir(directory, mode=mode)
    except OSError as exc:
        raise BackupFailed.writing(cfg, directory, exc) from None


# ---- copy ----


def copy(cfg: Config, source: Path, tmp: Path, directory: Path) -> sqlitedb.CopyStats:
    """Create tmp (never over anything) and copy source into it with the online backup API. Raises BackupFailed."""
    fsutil.create_exclusive(tmp)
    try:
        return sqlitedb.backup_copy(source, tmp)
    except sqlitedb.CopyError as exc:
        raise BackupFailed.copying(cfg, directory, exc) from None


# ---- verify, hash ----


def check_copy(path: Path, max_errors: int) -> tuple[list[str], dict[str, int]]:
    """integrity_check of the copy, and its row counts if it passes. A copy SQLite cannot read fails, named."""
    try:
        conn = sqlitedb.open_readonly(path)
        try:
            result = sqlitedb.integrity_check(conn, max_errors)
            counts = sqlitedb.row_counts(conn) if result == ["ok"] else {}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [f"cannot check the copy: {exc}"], {}
    return result, counts


def digest(path: Path) -> str:
    """fsync the copy, then its sha256."""
    fsutil.fsync_file(path)
    return fsutil.sha256_file(path)


def _verify_in_parallel(path: Path, max_errors: int) -> tuple[list[str], dict[str, int], str]:
    """integrity_check and row counts on one core, fsync and sha256 on the other."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        verify = pool.submit(check_copy, path, max_errors)
        hashed = pool.submit(digest, path)
        integrity, counts = verify.result()
        return integrity, counts, hashed.result()


def _verify_against_source(
    path: Path, source: Path, source_check: concurrent.futures.Future[list[str]], max_errors: int
) -> tuple[list[str], dict[str, int], str, str]:
    """The live DB's integrity_check (running on the other core) and a page-by-page comparison stand for
    a check of the copy; where the pages differ, the copy is checked itself."""
    try:
        counts = sqlitedb.file_row_counts(path)
    except sqlite3.Error as exc:  # the copy is not a readable DB: the check below says why
        counts = {f"unreadable: {exc}": 0}
    sha = digest(path)
    identical = sqlitedb.same_pages(path, source)
    integrity = source_check.result()
    if integrity == ["ok"] and identical:
        return integrity, counts, sha, VERIFIED_BY_SOURCE
    if integrity == ["ok"]:
        integrity, counts = check_copy(path, max_errors)
    return integrity, counts, sha, VERIFIED_BY_COPY


def copy_and_verify(
    cfg: Config,
    source: Path,
    tmp: Path,
    directory: Path,
    *,
    source_check: concurrent.futures.Future[list[str]] | None = None,
) -> Checked:
    """Copy source into tmp, then verify and hash the copy. Raises BackupFailed (the copy could not be made)
    or OSError (writing); a copy that fails its check is returned, with the errors as its integrity.

    `source_check`: an integrity_check of source already running (only when nothing writes it and
    its -wal is empty); the copy is then proven by a page-by-page comparison instead of a second check."""
    t0 = time.monotonic()
    stats = copy(cfg, source, tmp, directory)
    t_copy = time.monotonic()
    if source_check is None:
        integrity, counts, sha = _verify_in_parallel(tmp, cfg.integrity_max_errors)
        verified_by = VERIFIED_BY_COPY
    else:
        integrity, counts, sha, verified_by = _verify_against_source(tmp, source, source_check, cfg.integrity_max_errors)
    return Checked(tmp, stats, integrity, counts, sha, verified_by, t_copy - t0, time.monotonic() - t_copy)


# ---- manifest, publish ----


def write_manifest(tmp: Path, final: Path, manifest: dict[str, Any], mode: int = 0o640) -> None:
    """Write manifest to tmp (created new, never followed through a link) and fsync it; errors name final."""
    with fsutil.naming(final):
        fsutil.write_new_file(tmp, (fsutil.to_json(manifest) + "\n").encode(), mode)


def publish(moves: list[tuple[Path, Path]], directory: Path) -> None:
    """Rename each temp to its final name, in order, then fsync the directory that holds them."""
    for tmp, final in moves:
        os.replace(tmp, final)
    fsutil.fsync_dir(directory)


def discard(temps: list[Path]) -> None:
    """Remove temps (files or directory trees), and the -wal/-shm/-journal SQLite left beside a temp copy,
    after a failure; a temp that will not go is left to the next run."""
    for path in [p for t in temps for p in (t, *(t.with_name(t.name + s) for s in _SIDECARS))]:
        try:
            fsutil.remove_quietly(path)
        except OSError as exc:
            log.warning("could not remove %s (%s): the next neo-db run removes it", path, exc.strerror or exc)


@contextlib.contextmanager
def staged(temps: list[Path], writing: Callable[[OSError], NeoDbError] | None = None) -> Iterator[None]:
    """Remove temps if the block fails, whatever the failure; with `writing`, an OSError becomes that error."""
    try:
        yield
    except OSError as exc:
        discard(temps)
        if writing is None:
            raise
        raise writing(exc) from None
    except BaseException:
        discard(temps)
        raise
