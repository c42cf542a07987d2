"""`neo-db restore NAME`: pick a backup, verify it (sha256 against its manifest, integrity_check), and put it
in place of the live DB through core/install.py's journaled install (the engine stopped, under the state lock)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .. import catalog, fsutil, sqlitedb
from ..config import Config
from ..core.install import install, make_plan, other_db, refuse_if_in_use
from ..errors import DbInUseError, IntegrityError, UsageError
from ..locking import state_lock

log = logging.getLogger(__name__)


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


def restore(cfg: Config, name: str, *, dry_run: bool, yes: bool, allow_other_db: bool = False) -> dict[str, Any]:
    entry = resolve(cfg, name)
    if not cfg.db_path.parent.is_dir():
        raise UsageError(
            f"the DB's directory {cfg.db_path.parent} does not exist (db_path is {cfg.db_path}, from {cfg.source}): "
            "nothing to restore into",
            hint="create it, owned by the service user and mode 0700 (the neo_runtime role does), or fix db_path; then restore",
        )
    foreign = other_db(cfg, entry) if entry.manifest else None  # no manifest: verify_entry refuses it
    if foreign and not allow_other_db:
        raise UsageError(
            f"{entry.base} is a backup of another database: {foreign}",
            hint="pick a backup of this DB from 'neo-db list', or rerun with --allow-other-db to put that database in its place on purpose",
        )
    # A dry run is the plan made before the engine is stopped (ansible/restore.yml checks the
    # backup first, so a bad backup never costs a stop): an engine in use is reported, not fatal.
    # The holder scan of a real restore runs under the state lock only: outside it, it would see
    # the brief probe of a concurrent neo-db run (another restore's own scan) as a holder.
    in_use = None
    try:
        refuse_if_in_use(cfg, scan_holders=dry_run)
    except DbInUseError as exc:
        if not dry_run:
            raise
        in_use = exc.message
    manifest = verify_entry(cfg, entry)
    assert entry.db is not None
    if dry_run:
        plan = make_plan(cfg, entry, manifest, in_use, dry_run=True)
        if in_use:
            log.warning("%s", in_use)
            log.warning("stop it before the restore itself (ansible/restore.yml does)")
        if foreign:
            log.warning("%s is a backup of another database (--allow-other-db): %s", entry.db.name, foreign)
        names = ", ".join(Path(p).name for p in plan["moves_aside"]) or "nothing"
        log.info("would move %s aside into %s", names, plan["quarantine"])
        log.info("would put %s in place as %s (WAL mode)", entry.db.name, cfg.db_path)
        return plan
    if not yes:
        raise UsageError(
            f"restore replaces the live DB {cfg.db_path} with {entry.db.name}",
            hint="rerun with --yes to do it, or with --dry-run to see the plan",
        )
    with state_lock(cfg):  # completes or rolls back an interrupted restore first
        refuse_if_in_use(cfg)
        if foreign:
            log.warning("restoring a backup of another database (--allow-other-db): %s", foreign)
        return install(cfg, entry, manifest)
