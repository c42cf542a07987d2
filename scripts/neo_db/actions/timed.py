"""Timed backups in the ``snapshots`` layout (AtoCore): one directory per run.

    snapshots/<timestamp>/db/<db file name>       the backup-API copy, integrity-checked
    snapshots/<timestamp>/<dest>                  each of extra_files that exists, copied
    snapshots/<timestamp>/backup-metadata.json    timestamp, sources, sha256 of every file,
                                                  the integrity result, notes

The directory is built as ``.tmp-<timestamp>.<pid>`` and renamed into place only when
everything in it is written and fsynced, so a snapshot directory under its final name is
always complete. The metadata carries the same keys as a phase backup's manifest (size,
sha256, integrity_check, row_counts), so list, prune, drill and restore treat it alike.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .. import __version__, catalog, fsutil, sqlitedb
from ..config import Config
from .backup import BackupFailed, BackupResult, _verify, free_timestamp

log = logging.getLogger(__name__)


def _free_dir(directory: Path, now: dt.datetime | None) -> tuple[Path, dt.datetime]:
    ts = free_timestamp(lambda t: (directory / t.strftime(catalog.TS_FORMAT)).exists(), now, f"a snapshot in {directory}")
    return directory / ts.strftime(catalog.TS_FORMAT), ts


def _file_record(path: Path, source: Path) -> dict[str, Any]:
    fsutil.fsync_file(path)
    return {"source": str(source), "size": path.stat().st_size, "sha256": fsutil.sha256_file(path)}


def take_snapshot(cfg: Config, trigger: str, *, now: dt.datetime | None = None) -> BackupResult:
    """Write one complete snapshot directory, or raise BackupFailed leaving nothing under a final name."""
    directory = catalog.phase_dir(cfg, "timed")
    try:
        fsutil.ensure_real_dir(directory)
    except OSError as exc:
        raise BackupFailed.writing(cfg, directory, exc) from None
    final, started_at = _free_dir(directory, now)
    tmp = fsutil.tmp_path_for(final)
    db_rel = f"db/{cfg.db_name}"
    t0 = time.monotonic()
    try:
        os.mkdir(tmp, 0o750)
        os.mkdir(tmp / "db", 0o750)
        copy = tmp / db_rel
        fsutil.create_exclusive(copy)
        try:
            stats = sqlitedb.backup_copy(cfg.db_path, copy)
        except sqlitedb.CopyError as exc:
            raise BackupFailed.copying(cfg, directory, exc) from None
        t_copy = time.monotonic()
        try:
            integrity, counts = _verify(copy, cfg.integrity_max_errors)
        except Exception as exc:  # sqlite3.Error and friends: the copy is not a readable DB
            integrity, counts = [f"cannot check the copy: {exc}"], {}
        files = {db_rel: _file_record(copy, cfg.db_path)}
        missing = []
        for source, dest in cfg.extra_files:
            target = tmp / dest
            if not source.is_file() or source.is_symlink():
                missing.append({"path": dest, "source": str(source), "why": "not a regular file" if source.exists() else "does not exist"})
                log.info("extra file %s not captured: %s", source, missing[-1]["why"])
                continue
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            fsutil.copy_raw(source, target)
            files[dest] = _file_record(target, source)
        t_verify = time.monotonic()
        metadata: dict[str, Any] = {
            "timestamp": catalog.iso(started_at),
            "layout": "snapshots",
            "phase": "timed",
            "session": None,
            "trigger": trigger,
            "file": db_rel,
            "db_path": str(cfg.db_path),
            "size": files[db_rel]["size"],
            "sha256": files[db_rel]["sha256"],
            "pages": stats.pages,
            "integrity_check": integrity,
            "verified_by": "integrity_check of the copy",
            "row_counts": counts,
            "sources": {rel: rec["source"] for rel, rec in files.items()},
            "files": {rel: {"size": rec["size"], "sha256": rec["sha256"]} for rel, rec in files.items()},
            "missing": missing,
            "notes": list(cfg.snapshot_notes),
            "sqlite_version": sqlitedb.sqlite_version(),
            "neo_db_version": __version__,
            "timings": {"copy_seconds": round(t_copy - t0, 3), "verify_seconds": round(t_verify - t_copy, 3)},
        }
        fsutil.write_json_atomic(tmp / catalog.METADATA, metadata)
        for sub in {tmp, *(p.parent for p in tmp.rglob("*") if p.is_file())}:
            fsutil.fsync_dir(sub)
        os.rename(tmp, final)
        fsutil.fsync_dir(directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BackupFailed.writing(cfg, directory, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = BackupResult(final, metadata)
    log.log(
        logging.INFO if result.intact else logging.ERROR,
        "snapshot %s: %d files, %s bytes, integrity %s, %.1fs",
        final,
        len(files),
        sum(r["size"] for r in files.values()),
        "ok" if result.intact else "FAILED: " + "; ".join(integrity[:3]),
        time.monotonic() - t0,
    )
    return result


def check_files(entry: catalog.Entry) -> list[str]:
    """Problems with the files of a snapshot directory against its metadata's sha256 (empty: all match)."""
    if entry.snapshot_dir is None:
        return []
    m = entry.manifest or {}
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        return [f"{entry.base}: {catalog.METADATA} lists no files"]
    problems = []
    for rel, rec in sorted(files.items()):
        path = entry.snapshot_dir / rel
        if ".." in Path(rel).parts or path.is_symlink() or not path.is_file():
            problems.append(f"{rel}: missing or not a regular file")
            continue
        if not isinstance(rec, dict) or fsutil.sha256_file(path) != rec.get("sha256"):
            problems.append(f"{rel}: sha256 differs from {catalog.METADATA}")
    return problems
