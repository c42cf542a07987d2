"""Phase backups of the live DB (pre, post, manual, abnormal, imported), crash-safely.

Each is a copy through the verified-copy pipeline (core/pipeline.py: copy, verify, hash,
manifest, publish) named ``<stem>_<phase>[_<session>]_<time>.db`` with its ``.json`` manifest.
An error or a kill at any point leaves only ``.tmp-`` files, which the next run removes.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import errno
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .. import catalog, fsutil, sqlitedb
from ..config import Config
from ..errors import NeoDbError
from . import pipeline
from .pipeline import BackupFailed, BackupNotIntact, BackupResult, free_timestamp

log = logging.getLogger(__name__)

# An older neo-db's restore quarantine, interrupted: .tmp-<stem>_abnormal_quarantine_<time>.raw.<pid>
QUARANTINE_MARK = "_abnormal_quarantine_"


def clean_stale_temps(cfg: Config) -> list[Path]:
    """Remove what interrupted runs left behind. Call only while holding the state lock.

    A temp dir that holds the live DB itself (the live DB is missing and the dir has a
    file of its name: an older neo-db's quarantine, interrupted) is never removed: its
    live files are put back first.
    """
    removed: list[Path] = []
    for phase in catalog.PHASE_DIRS:
        try:
            for item in fsutil.iter_entries(catalog.phase_dir(cfg, phase)):
                if item.name.startswith(fsutil.TMP_PREFIX):
                    path = Path(item.path)
                    holds_live_name = item.is_dir(follow_symlinks=False) and (path / cfg.db_path.name).is_file()
                    if holds_live_name and not os.path.lexists(cfg.db_path) and not _keep_or_put_back(cfg, path):
                        continue
                    fsutil.remove_quietly(path)
                    removed.append(path)
                    log.info("removed %s, left by an interrupted run", path)
        except OSError as exc:  # the backup that follows says what is wrong with the directory
            log.warning("could not clean up %s: %s", catalog.phase_dir(cfg, phase), exc.strerror or exc)
    return removed


def _keep_or_put_back(cfg: Config, tmp_dir: Path) -> bool:
    """The live DB is missing and tmp_dir holds a file of its name. True: tmp_dir may go now.

    Only a restore quarantine (an older neo-db moved the live files into it) holds originals:
    they are put back. Any other temp dir (a raw preservation, killed half-way) holds copies
    that may be partial: it is kept for a person to look at, never put in place, never removed.
    """
    if QUARANTINE_MARK not in tmp_dir.name:
        log.error(
            "the live DB %s is missing, and %s holds a copy of it that an interrupted run left (it may be partial): "
            "kept, not put in place; look at it before you restore",
            cfg.db_path,
            tmp_dir,
        )
        return False
    try:
        _put_back(cfg, tmp_dir)
    except (OSError, NeoDbError) as exc:
        log.error("%s holds the live DB, which is missing; putting it back failed (%s): kept, put it back by hand", tmp_dir, exc)
        return False
    left = [f"{cfg.db_path.name}{sfx}" for sfx in sqlitedb.LIVE_SUFFIXES if (tmp_dir / f"{cfg.db_path.name}{sfx}").is_file()]
    if left:  # their places were taken meanwhile: never delete an original
        log.error("%s still holds %s (their places beside the DB are taken): kept, look at them by hand", tmp_dir, ", ".join(left))
        return False
    return True


def _put_back(cfg: Config, tmp_dir: Path) -> None:
    """Move the live files an interrupted run moved into tmp_dir back beside the DB (never over one there)."""
    for suffix in sqlitedb.LIVE_SUFFIXES:
        src, dst = tmp_dir / f"{cfg.db_path.name}{suffix}", Path(f"{cfg.db_path}{suffix}")
        if not src.is_file() or src.is_symlink() or os.path.lexists(dst):
            continue  # a copy (the original is still in place), or nothing
        try:
            os.rename(src, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            staged = fsutil.tmp_path_for(dst)
            fsutil.copy_raw(src, staged)
            os.rename(staged, dst)
            src.unlink()
        fsutil.fsync_dir(dst.parent)
        log.warning("put %s back as %s: an interrupted run had moved it into %s", src.name, dst, tmp_dir)


def free_name(directory: Path, stem: str, phase: str, session: str | None, now: dt.datetime | None) -> tuple[str, dt.datetime]:
    """A base name not yet taken in `directory`."""

    def taken(ts: dt.datetime) -> bool:
        base = catalog.base_name(stem, phase, session, ts)
        return any((directory / f"{base}{s}").exists() for s in (".db", ".json", ".raw"))

    ts = free_timestamp(taken, now, f"a {phase} {session or ''} backup in {directory}")
    return catalog.base_name(stem, phase, session, ts), ts


def take_backup(
    cfg: Config,
    phase: str,
    session: str | None,
    trigger: str,
    *,
    require_intact: bool = False,
    base: str | None = None,
    now: dt.datetime | None = None,
    extra: dict[str, Any] | None = None,
    source_check: concurrent.futures.Future[list[str]] | None = None,
    source: Path | None = None,
) -> BackupResult:
    """Copy the live DB into the phase's directory through the pipeline. Raises BackupFailed, or
    BackupNotIntact if required.

    With `source_check` (an integrity_check of the live DB already running on the other
    core; only when nothing writes the DB and its -wal is empty), the copy is proven
    intact by a page-by-page comparison with the checked source instead of a second
    integrity_check. If the pages differ, the copy is checked itself.

    `source` (neo-db import) copies that DB instead of the live one; the manifest still names db_path.
    """
    directory = catalog.phase_dir(cfg, phase)
    pipeline.ensure_dir(cfg, directory)
    if base is None:
        base, started_at = free_name(directory, cfg.db_stem, phase, session, now)
    else:
        started_at = now or catalog.utcnow()
    final, manifest_final = directory / f"{base}.db", directory / f"{base}.json"
    tmp, manifest_tmp = fsutil.tmp_path_for(final), fsutil.tmp_path_for(manifest_final)
    t0 = time.monotonic()
    with pipeline.staged([tmp, manifest_tmp], lambda exc: BackupFailed.writing(cfg, directory, exc)):
        checked = pipeline.copy_and_verify(cfg, cfg.db_path if source is None else source, tmp, directory, source_check=source_check)
        if require_intact and not checked.intact:
            raise BackupNotIntact(checked.integrity)
        manifest: dict[str, Any] = {
            "file": final.name,
            "db_path": str(cfg.db_path),
            "phase": phase,
            "session": session,
            "trigger": trigger,
            "started": catalog.iso(started_at),
            "finished": catalog.iso(catalog.utcnow()),
            **checked.manifest_fields(),
            "timings": checked.timings(),
            **(extra or {}),
        }
        pipeline.write_manifest(manifest_tmp, manifest_final, manifest)
        for path in (tmp, manifest_tmp):  # run as root (import, an operator): the service user's, as its neighbours
            fsutil.chown_like_parent(path)
        pipeline.publish([(tmp, final), (manifest_tmp, manifest_final)], directory)
    result = BackupResult(final, manifest)
    log.log(
        logging.INFO if result.intact else logging.ERROR,
        "%s backup %s: %s bytes, integrity %s, %.1fs",
        phase,
        final,
        manifest["size"],
        "ok" if result.intact else "FAILED: " + "; ".join(checked.integrity[:3]),
        time.monotonic() - t0,
    )
    return result


def preserve_abnormal(cfg: Config, session: str | None, trigger: str, stop: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Best-effort preservation after an abnormal stop. Returns (what was kept, warnings).

    The raw DB, -wal, -shm and a hot -journal are copied byte for byte BEFORE anything
    opens the DB (a normal open would recover and checkpoint the WAL, or roll the journal
    back). Then a consistent backup-API copy is taken if the DB opens. Nothing here
    deletes or moves a -wal or a -journal.
    """
    kept: dict[str, Any] = {}
    warnings: list[str] = []
    directory = catalog.phase_dir(cfg, "abnormal")
    try:
        fsutil.ensure_real_dir(directory)
        base, _ = free_name(directory, cfg.db_stem, "abnormal", session, None)
    except (OSError, NeoDbError) as exc:
        return kept, [f"abnormal-stop preservation impossible: {exc}"]

    raw_final = directory / f"{base}.raw"
    raw_tmp = fsutil.tmp_path_for(raw_final)
    sources = [Path(f"{cfg.db_path}{suffix}") for suffix in sqlitedb.LIVE_SUFFIXES]
    present = [p for p in sources if p.is_file()]
    if present:
        try:
            os.mkdir(raw_tmp, 0o750)
            files: dict[str, Any] = {}
            for src in present:
                st = src.stat()
                size = fsutil.copy_raw(src, raw_tmp / src.name)
                files[src.name] = {
                    "size": size,
                    "mtime": catalog.iso(dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)),
                    "sha256": fsutil.sha256_file(raw_tmp / src.name),
                }
            doc = {"session": session, "trigger": trigger, "stop": stop, "files": files, "copied": catalog.iso(catalog.utcnow())}
            fsutil.write_json_atomic(raw_tmp / "stop.json", doc)
            os.replace(raw_tmp, raw_final)
            fsutil.fsync_dir(directory)
            kept["raw_copy"] = str(raw_final)
            log.info("raw files preserved in %s (%s)", raw_final, trigger)
        except OSError as exc:
            shutil.rmtree(raw_tmp, ignore_errors=True)
            warnings.append(f"raw copy into {directory} failed: {exc.strerror or exc}; nothing partial was kept")
    else:
        warnings.append(f"no DB files at {cfg.db_path} to preserve")

    if cfg.db_path.is_file():
        try:
            result = take_backup(cfg, "abnormal", session, trigger, base=base, extra={"stop": stop})
            kept["backup"] = str(result.path)
            kept["backup_integrity"] = result.manifest["integrity_check"]
        except NeoDbError as exc:
            warnings.append(f"consistent copy failed (the raw copy is what remains): {exc.message}")
    for w in warnings:
        log.warning("%s", w)
    return kept, warnings
