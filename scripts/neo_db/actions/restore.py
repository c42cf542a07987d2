"""`neo-db restore BACKUP`: put a verified backup back as the live DB, losing nothing.

Refuses while the engine is active or anything holds the DB open; accepts only a
backup listed in backup_dir; checks its sha256 against the manifest and runs
integrity_check. The restored file is prepared beside the live DB first (copied,
verified, switched back to WAL mode, given the live DB's owner and mode); only then
are the current DB, -wal and -shm moved aside into abnormal_stop/ as a quarantine
with a manifest, and the prepared file renamed into place. Nothing is ever deleted.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import pwd
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from .. import catalog, fsutil, holders, logs, sqlitedb, systemd
from ..config import Config
from ..errors import DbInUseError, IntegrityError, NeoDbError, UsageError
from ..locking import state_lock

log = logging.getLogger(__name__)
QUARANTINE = "quarantine"


def resolve(cfg: Config, arg: str) -> catalog.Entry:
    """The backup entry named by `arg` (a name from `neo-db list`, or a path inside backup_dir)."""
    if not arg:
        raise UsageError("no backup named; pick one from 'neo-db list'")
    if "/" in arg:
        path = Path(arg)
        root = os.path.realpath(cfg.backup_dir)
        real = os.path.realpath(path)
        if not real.startswith(root + os.sep) or path.is_symlink():
            raise UsageError(
                f"{arg!r} is not a backup inside backup_dir {cfg.backup_dir}",
                hint="restore only takes backups listed by 'neo-db list' (by name or path)",
            )
        rel = Path(os.path.relpath(real, root)).parts
        # A snapshot directory, or any file inside one, names the snapshot.
        arg = rel[1] if len(rel) >= 2 and rel[0] == catalog.PHASE_DIRS["timed"] else Path(real).name
    entry = catalog.find(cfg, arg)
    if entry is None or entry.db is None:
        raise UsageError(f"no backup named {arg!r} in {cfg.backup_dir}", hint="'neo-db list' shows the backups and their names")
    if entry.db.is_symlink() or not entry.db.is_file():
        raise UsageError(f"{entry.db} is not a regular file; refusing it")
    return entry


def verify_entry(cfg: Config, entry: catalog.Entry) -> dict[str, Any]:
    """sha256 against the manifest, then integrity_check. Raises IntegrityError naming the reason."""
    assert entry.db is not None
    manifest = entry.manifest
    if not manifest or "sha256" not in manifest:
        raise IntegrityError([f"{entry.db.name} has no manifest with a sha256: it cannot be verified"])
    actual = fsutil.sha256_file(entry.db)
    if actual != manifest["sha256"]:
        raise IntegrityError([f"{entry.db.name}: sha256 {actual} does not match the manifest's {manifest['sha256']} (tampered or damaged)"])
    result = sqlitedb.check_file(entry.db, cfg.integrity_max_errors)
    if result != ["ok"]:
        raise IntegrityError([f"{entry.db.name} fails integrity_check:", *result])
    return manifest


def _refuse_if_in_use(cfg: Config) -> None:
    active = systemd.is_active(cfg.engine_unit)
    if active:
        raise DbInUseError(
            f"{cfg.engine_unit}.service is active: refusing to replace the live DB under the engine",
            hint=f"systemctl stop {cfg.engine_unit}, then restore (ansible/restore.yml does both)",
        )
    found = holders.find_holders(cfg.db_path)
    if found:
        lines = "\n".join(f"  {h.describe()}" for h in found)
        raise DbInUseError(f"the live DB is open; refusing to restore under it:\n{lines}", hint="stop those processes first")


def restore(cfg: Config, name: str, *, dry_run: bool, yes: bool) -> dict[str, Any]:
    entry = resolve(cfg, name)
    if not cfg.db_path.parent.is_dir():
        raise UsageError(
            f"the DB's directory {cfg.db_path.parent} does not exist (db_path is {cfg.db_path}, from {cfg.source}): "
            "nothing to restore into",
            hint="create it, owned by the service user and mode 0700 (the neo_runtime role does), or fix db_path; then restore",
        )
    # A dry run is the plan made before the engine is stopped (ansible/restore.yml checks the
    # backup first, so a bad backup never costs a stop): an engine in use is reported, not fatal.
    in_use = None
    try:
        _refuse_if_in_use(cfg)
    except DbInUseError as exc:
        if not dry_run:
            raise
        in_use = exc.message
    manifest = verify_entry(cfg, entry)
    assert entry.db is not None
    now = catalog.utcnow()
    live = [p for p in (cfg.db_path, Path(f"{cfg.db_path}-wal"), Path(f"{cfg.db_path}-shm")) if p.exists()]
    quarantine = catalog.phase_dir(cfg, "abnormal") / f"{catalog.base_name(cfg.db_stem, 'abnormal', QUARANTINE, now)}.raw"
    plan: dict[str, Any] = {
        "backup": str(entry.db),
        "sha256": manifest["sha256"],
        "integrity_check": ["ok"],  # what integrity_check returned, a list as in every manifest
        "quarantine": str(quarantine) if live else None,
        "moves_aside": [str(p) for p in live],
        "target": str(cfg.db_path),
        "dry_run": dry_run,
        "must_stop_first": in_use,
    }
    if dry_run:
        if in_use:
            log.warning("%s", in_use)
            log.warning("stop it before the restore itself (ansible/restore.yml does)")
        log.info("would move %s aside into %s", ", ".join(p.name for p in live) or "nothing", quarantine)
        log.info("would put %s in place as %s (WAL mode)", entry.db.name, cfg.db_path)
        return plan
    if not yes:
        raise UsageError(
            f"restore replaces the live DB {cfg.db_path} with {entry.db.name}",
            hint="rerun with --yes to do it, or with --dry-run to see the plan",
        )
    with state_lock(cfg):
        _refuse_if_in_use(cfg)
        owner, mode = _live_owner_and_mode(cfg)
        prepared = _prepare(cfg, entry.db, manifest["sha256"], owner, mode)
        try:
            if live:
                _quarantine(cfg, live, quarantine, entry, now)
            os.replace(prepared, cfg.db_path)
            fsutil.fsync_dir(cfg.db_path.parent)
        except BaseException:
            fsutil.remove_quietly(prepared)
            raise
        record = {**plan, "restored_at": catalog.iso(catalog.utcnow()), "by": _whoami()}
        restores = cfg.exports_dir / "restores"
        try:
            fsutil.ensure_real_dir(restores)
            fsutil.write_json_atomic(restores / f"restore_{now.strftime(catalog.TS_FORMAT)}.json", record)
        except OSError as exc:
            log.warning("could not write the restore record in %s: %s", restores, exc)
    logs.audit(f"restored {cfg.db_path} from {entry.db} (sha256 {manifest['sha256'][:16]}…); previous files quarantined in {quarantine}")
    return record


def _whoami() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _live_owner_and_mode(cfg: Config) -> tuple[tuple[int, int], int]:
    try:
        st = os.stat(cfg.db_path)
        return (st.st_uid, st.st_gid), st.st_mode & 0o777
    except FileNotFoundError:
        st = os.stat(cfg.db_path.parent)  # the DB dir belongs to the service user
        return (st.st_uid, st.st_gid), 0o640


def _prepare(cfg: Config, backup: Path, sha256: str, owner: tuple[int, int], mode: int) -> Path:
    """A verified WAL-mode copy of the backup beside the live DB, under a temp name."""
    prepared = cfg.db_path.with_name(f"{fsutil.TMP_PREFIX}restore-{cfg.db_path.name}.{os.getpid()}")
    try:
        fsutil.copy_raw(backup, prepared)
        if fsutil.sha256_file(prepared) != sha256:
            raise NeoDbError(f"the copy of {backup.name} in {cfg.db_path.parent} does not match its sha256; nothing was changed")
        conn = sqlite3.connect(prepared, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        for side in ("-wal", "-shm"):
            fsutil.remove_quietly(Path(f"{prepared}{side}"))
        os.chmod(prepared, mode)
        if os.geteuid() == 0:
            os.chown(prepared, *owner)
        fsutil.fsync_file(prepared)
    except BaseException:
        fsutil.remove_quietly(prepared)
        raise
    return prepared


def _quarantine(cfg: Config, live: list[Path], quarantine: Path, entry: catalog.Entry, now: dt.datetime) -> None:
    """Move the live files aside into the quarantine directory, all or nothing: if anything fails
    (a full or read-only backup disk), the files already moved go back to their place."""
    fsutil.ensure_real_dir(quarantine.parent)
    tmp = fsutil.tmp_path_for(quarantine)
    os.mkdir(tmp, 0o750)
    moved: list[Path] = []  # renamed into tmp: put back on failure
    copied: list[Path] = []  # another filesystem: copied into tmp, removed only once the quarantine is in place
    try:
        if os.geteuid() == 0:  # like its neighbours: owned by the service user who owns abnormal_stop/
            parent = os.stat(quarantine.parent)
            os.chown(tmp, parent.st_uid, parent.st_gid)
        files = {src.name: {"size": src.stat().st_size, "sha256": fsutil.sha256_file(src)} for src in live}
        fsutil.write_json_atomic(
            tmp / "stop.json",
            {
                "trigger": "restore-quarantine",
                "reason": f"moved aside by 'neo-db restore {entry.base}'",
                "restored_backup": str(entry.db),
                "at": catalog.iso(now),
                "files": files,
            },
        )
        for src in live:
            try:
                os.rename(src, tmp / src.name)
                moved.append(src)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                fsutil.copy_raw(src, tmp / src.name)
                copied.append(src)
        os.rename(tmp, quarantine)
        fsutil.fsync_dir(quarantine.parent)
    except BaseException:
        for src in moved:
            try:
                os.rename(tmp / src.name, src)
            except OSError as exc:
                log.error("could not put %s back from %s: %s; it is there, move it back by hand", src, tmp, exc.strerror)
                raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for src in copied:
        src.unlink()
    fsutil.fsync_dir(cfg.db_path.parent)
    log.info("quarantined %s in %s", ", ".join(files), quarantine)
