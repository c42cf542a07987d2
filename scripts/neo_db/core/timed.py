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
import time
from pathlib import Path
from typing import Any

from .. import catalog, fsutil
from ..config import Config
from . import pipeline
from .pipeline import BackupFailed, BackupResult, free_timestamp

log = logging.getLogger(__name__)


def _free_dir(directory: Path, now: dt.datetime | None) -> tuple[Path, dt.datetime]:
    ts = free_timestamp(lambda t: (directory / t.strftime(catalog.TS_FORMAT)).exists(), now, f"a snapshot in {directory}")
    return directory / ts.strftime(catalog.TS_FORMAT), ts


def _file_record(path: Path, source: Path) -> dict[str, Any]:
    return {"source": str(source), "size": path.stat().st_size, "sha256": pipeline.digest(path)}


def _copy_extra_files(cfg: Config, tmp: Path, files: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Copy each of extra_files that is a regular file into tmp, recording it in files; the others, named."""
    missing = []
    for source, dest in cfg.extra_files:
        if not source.is_file() or source.is_symlink():
            missing.append({"path": dest, "source": str(source), "why": "not a regular file" if source.exists() else "does not exist"})
            log.info("extra file %s not captured: %s", source, missing[-1]["why"])
            continue
        target = tmp / dest
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fsutil.copy_raw(source, target)
        files[dest] = _file_record(target, source)
    return missing


def _metadata(cfg: Config, trigger: str, started_at: dt.datetime, db_rel: str, checked: pipeline.Checked) -> dict[str, Any]:
    return {
        "timestamp": catalog.iso(started_at),
        "layout": "snapshots",
        "phase": "timed",
        "session": None,
        "trigger": trigger,
        "file": db_rel,
        "db_path": str(cfg.db_path),
        **checked.manifest_fields(),
        "notes": list(cfg.snapshot_notes),
    }


def take_snapshot(cfg: Config, trigger: str, *, now: dt.datetime | None = None) -> BackupResult:
    """Write one complete snapshot directory, or raise BackupFailed leaving nothing under a final name."""
    directory = catalog.phase_dir(cfg, "timed")
    pipeline.ensure_dir(cfg, directory)
    final, started_at = _free_dir(directory, now)
    tmp = fsutil.tmp_path_for(final)
    db_rel = f"db/{cfg.db_name}"
    t0 = time.monotonic()
    with pipeline.staged([tmp], lambda exc: BackupFailed.writing(cfg, directory, exc)):
        os.mkdir(tmp, 0o750)
        os.mkdir(tmp / "db", 0o750)
        checked = pipeline.copy_and_verify(cfg, cfg.db_path, tmp / db_rel, directory)
        files: dict[str, dict[str, Any]] = {db_rel: {"source": str(cfg.db_path), "size": checked.size, "sha256": checked.sha256}}
        missing = _copy_extra_files(cfg, tmp, files)
        metadata = _metadata(cfg, trigger, started_at, db_rel, checked)
        metadata["sources"] = {rel: rec["source"] for rel, rec in files.items()}
        metadata["files"] = {rel: {"size": rec["size"], "sha256": rec["sha256"]} for rel, rec in files.items()}
        metadata["missing"] = missing
        verify_seconds = time.monotonic() - t0 - checked.copy_seconds  # the copy's check and the extra files
        metadata["timings"] = {"copy_seconds": round(checked.copy_seconds, 3), "verify_seconds": round(verify_seconds, 3)}
        fsutil.write_json_atomic(tmp / catalog.METADATA, metadata)
        for sub in {tmp, *(p.parent for p in tmp.rglob("*") if p.is_file())}:
            fsutil.fsync_dir(sub)
        pipeline.publish([(tmp, final)], directory)
    result = BackupResult(final, metadata)
    log.log(
        logging.INFO if result.intact else logging.ERROR,
        "snapshot %s: %d files, %s bytes, integrity %s, %.1fs",
        final,
        len(files),
        sum(r["size"] for r in files.values()),
        "ok" if result.intact else "FAILED: " + "; ".join(checked.integrity[:3]),
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
