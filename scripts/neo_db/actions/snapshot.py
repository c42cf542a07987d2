"""`neo-db snapshot`: publish a fresh read-only copy of the live DB for analysts.

Through the verified-copy pipeline (core/pipeline.py: the backup API in one step from a
read-only connection, so the engine's commits go on; integrity_check; sha256); written to exports_dir/snapshots/
mode 0440 in the readers' group, renamed into place, with a `latest` symlink and a
manifest. An analyst opens it with plain `sqlite3 'file:.../latest?mode=ro'`.
"""

from __future__ import annotations

import grp
import logging
import os
import re
from pathlib import Path
from typing import Any

from .. import catalog, fsutil, sqlitedb
from ..config import Config
from ..core import pipeline
from ..errors import IntegrityError, NeoDbError
from ..locking import state_lock

log = logging.getLogger(__name__)
LATEST = "latest"


def snapshots_dir(cfg: Config) -> Path:
    return cfg.exports_dir / "snapshots"


def _readers_gid(cfg: Config) -> int | None:
    if not cfg.readers_group:
        return None
    try:
        return grp.getgrnam(cfg.readers_group).gr_gid
    except KeyError:
        return None


def _share(cfg: Config, path: Path) -> None:
    gid = _readers_gid(cfg)
    if gid is not None and os.stat(path).st_gid != gid:
        try:
            os.chown(path, -1, gid)
        except PermissionError:
            log.warning("%s is not in group %s (make exports_dir setgid %s)", path, cfg.readers_group, cfg.readers_group)
    os.chmod(path, 0o440)


def take(cfg: Config) -> dict[str, Any]:
    if not cfg.db_path.is_file():
        raise NeoDbError(
            f"no live DB at {cfg.db_path} to snapshot (db_path in {cfg.source})",
            hint="check db_path; 'neo-db list' and 'neo-db restore NAME' bring back a backup",
        )
    directory = snapshots_dir(cfg)
    with state_lock(cfg):
        fsutil.ensure_real_dir(directory, mode=0o2750)
        for item in fsutil.iter_entries(directory, frozenset({LATEST})):
            if item.name.startswith(fsutil.TMP_PREFIX):
                fsutil.remove_quietly(Path(item.path))
        now = catalog.utcnow()
        stamp = now.strftime(catalog.TS_FORMAT)
        taken = [_order(Path(e.path))[1] for e in fsutil.iter_entries(directory, frozenset({LATEST})) if _order(Path(e.path))[0] == stamp]
        n = max(taken, default=0) + 1  # names only ever increase, even after a prune
        base = f"{cfg.db_stem}_snapshot_{stamp}" + (f"-{n}" if n > 1 else "")
        final, manifest_final = directory / f"{base}.db", directory / f"{base}.json"
        tmp, manifest_tmp = fsutil.tmp_path_for(final), fsutil.tmp_path_for(manifest_final)
        link_tmp = directory / f"{fsutil.TMP_PREFIX}{LATEST}.{os.getpid()}"
        with pipeline.staged([tmp, manifest_tmp, link_tmp]):
            try:
                checked = pipeline.copy_and_verify(cfg, cfg.db_path, tmp, directory)
            except pipeline.BackupFailed as failed:
                raise NeoDbError(f"snapshot {failed.message}", hint=failed.hint) from None
            if not checked.intact:
                raise IntegrityError(checked.integrity)
            manifest = {
                "file": final.name,
                "db_path": str(cfg.db_path),
                "taken": catalog.iso(now),
                "size": checked.size,
                "sha256": checked.sha256,
                "pages": checked.stats.pages,
                "copy_seconds": round(checked.stats.seconds, 3),
                "integrity_check": checked.integrity,
                "row_counts": checked.counts,
                "sqlite_version": sqlitedb.sqlite_version(),
            }
            pipeline.write_manifest(manifest_tmp, manifest_final, manifest)
            _share(cfg, tmp)
            _share(cfg, manifest_tmp)
            os.symlink(final.name, link_tmp)
            pipeline.publish([(tmp, final), (manifest_tmp, manifest_final), (link_tmp, directory / LATEST)], directory)
        removed = _prune(cfg, directory)
    log.info(
        "snapshot %s published (%d bytes, %.1fs copy); %s now points at it",
        final,
        manifest["size"],
        checked.stats.seconds,
        directory / LATEST,
    )
    return {"path": str(final), "latest": str(directory / LATEST), "manifest": manifest, "pruned": removed}


_SNAP_RE = re.compile(r"_snapshot_(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ)(?:-(\d+))?\.db\Z")


def _order(path: Path) -> tuple[str, int]:
    m = _SNAP_RE.search(path.name)
    return (m[1], int(m[2] or 1)) if m else ("", 0)


def _prune(cfg: Config, directory: Path) -> list[str]:
    snaps = sorted(
        (Path(e.path) for e in fsutil.iter_entries(directory, frozenset({LATEST})) if _SNAP_RE.search(e.name)),
        key=_order,
        reverse=True,
    )
    keep = set(snaps[: cfg.snapshot_retention_count])
    latest = directory / LATEST
    if latest.is_symlink():
        keep.add(directory / os.readlink(latest))
    removed = []
    for p in snaps:
        if p not in keep:
            fsutil.remove_quietly(p)
            fsutil.remove_quietly(p.with_suffix(".json"))
            removed.append(p.name)
    return removed
