"""The journaled install of a DB in place of the live one, losing nothing (`neo-db restore`,
`neo-db import`), and the recovery of an install that did not finish (every state-lock holder runs it).

Refuses while the engine is active or anything holds the DB open; accepts only a
backup listed in backup_dir, of this DB (its manifest names this db_path and stem,
unless --allow-other-db); checks its sha256 against the manifest and runs
integrity_check; checks free space before anything moves.

The restore is a small journaled state machine in a staging directory beside the live
DB (``.<db name>.restore/``, on the DB's own filesystem, so every move is a rename):

1. ``journal``: the staging dir and its ``journal.json`` (state ``prepare``): the
   backup, the live files with their sha256, the quarantine's name;
2. ``prepared``: the backup copied in, verified, switched to WAL mode, given the live
   DB's owner and mode;
3. ``moved-db``, ``moved-wal``, ``moved-shm``, ``moved-journal``: each live file
   renamed into the staging dir's ``old/``;
4. ``committed``: the journal says ``commit``;
5. ``installed``: the prepared copy renamed into place;
6. ``quarantine-copied`` (backup_dir on another filesystem only): ``old/`` copied into
   abnormal_stop/ under a temp name and verified; ``quarantined``: the quarantine under
   its final name, with a stop.json manifest (renamed there when it is the same
   filesystem);
7. ``recorded``: the restore record in exports_dir/restores; then the staging dir goes.

An error before the commit rolls back (the old files are renamed back); an error after
it completes. A run killed at any point is completed or rolled back by the next neo-db
command, which does so first, under the state lock (locking.state_lock calls recover).
Nothing here ever deletes a live file, and nothing is left behind in the DB's directory.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

from .. import catalog, fsutil, holders, logs, sqlitedb, systemd
from ..config import Config
from ..errors import DbInUseError, LockedError, NeoDbError, UsageError
from ..locking import state_lock
from .formatting import human_size
from .pipeline import free_timestamp

log = logging.getLogger(__name__)
QUARANTINE = "quarantine"

# Every step of a restore, in order: a run killed right after any of them is completed or
# rolled back by the next neo-db command. NEO_DB_FAULT_STEP=<step> makes a run SIGKILL
# itself right after that step (the seam of the kill tests, tests/test_restore_steps.py).
STEPS = (
    "journal",
    "prepared",
    "moved-db",
    "moved-wal",
    "moved-shm",
    "moved-journal",
    "committed",
    "installed",
    "quarantine-copied",
    "quarantined",
    "recorded",
)
ENV_FAULT_STEP = "NEO_DB_FAULT_STEP"
PREPARE, COMMIT = "prepare", "commit"
JOURNAL, PREPARED, OLD = "journal.json", "restored.db", "old"
SPACE_MARGIN = 256 * 1024  # the WAL switch of the prepared copy, stop.json, directory entries
_unfinished: set[Path] = set()  # installed restores this process already failed to finish: tried once per run


def _step(name: str) -> None:
    assert name in STEPS, name
    if os.environ.get(ENV_FAULT_STEP) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def staging_dir(cfg: Config) -> Path:
    return cfg.db_path.parent / f".{cfg.db_path.name}.restore"


def other_db(cfg: Config, entry: catalog.Entry) -> str | None:
    """What says this backup is of another database than cfg's (None: it is of this one)."""
    manifest = entry.manifest or {}
    named = manifest.get("db_path")
    file = manifest.get("file")
    stem = None
    if isinstance(file, str) and file:
        name = Path(file).name
        parsed = catalog.parse(name[: -len(".db")] if name.endswith(".db") else name)
        stem = parsed[0] if parsed else Path(name).stem
    # A symlinked db_path is this DB under either name: backups taken before it became a link name the link.
    ours = {str(cfg.db_path), *([str(cfg.db_link)] if cfg.db_link else [])}
    if named in ours and stem in (None, cfg.db_stem):
        return None
    return f"its manifest names db_path {named!r} (stem {stem!r}); this config's DB is {cfg.db_label} (stem {cfg.db_stem!r})"


def refuse_if_in_use(cfg: Config, *, scan_holders: bool = True) -> None:
    try:
        active = systemd.is_active(cfg.engine_unit)
    except systemd.SystemdError as exc:
        raise DbInUseError(
            f"whether {cfg.engine_unit}.service is active cannot be read ({exc}): refusing to replace the live DB",
            hint=f"check 'systemctl status {cfg.engine_unit}'; stop it, then restore (ansible/restore.yml does both)",
        ) from None
    if active:
        raise DbInUseError(
            f"{cfg.engine_unit}.service is active: refusing to replace the live DB under the engine",
            hint=f"systemctl stop {cfg.engine_unit}, then restore (ansible/restore.yml does both)",
        )
    found = holders.find_holders(cfg.db_path) if scan_holders else []
    if found:
        lines = "\n".join(f"  {h.describe()}" for h in found)
        raise DbInUseError(f"the live DB is open; refusing to restore under it:\n{lines}", hint="stop those processes first")


def _live(cfg: Config) -> list[Path]:
    """The live DB's files that exist: the DB, -wal, -shm and a (hot) -journal."""
    found = []
    for suffix in sqlitedb.LIVE_SUFFIXES:
        path = Path(f"{cfg.db_path}{suffix}")
        if os.path.lexists(path):
            if path.is_symlink() or not path.is_file():
                raise UsageError(f"{path} is not a regular file; refusing to restore over it", hint="look at it and move it away by hand")
            found.append(path)
    return found


def make_plan(cfg: Config, entry: catalog.Entry, manifest: dict[str, Any], in_use: str | None, *, dry_run: bool) -> dict[str, Any]:
    assert entry.db is not None
    live = _live(cfg)
    abnormal = catalog.phase_dir(cfg, "abnormal")
    restores = cfg.exports_dir / "restores"

    def quarantine(ts: dt.datetime) -> Path:
        return abnormal / f"{catalog.base_name(cfg.db_stem, 'abnormal', QUARANTINE, ts)}.raw"

    def taken(ts: dt.datetime) -> bool:
        return os.path.lexists(quarantine(ts)) or os.path.lexists(restores / f"restore_{ts.strftime(catalog.TS_FORMAT)}.json")

    now = free_timestamp(taken, None, "a restore quarantine")
    return {
        "backup": str(entry.db),
        "sha256": manifest["sha256"],
        "integrity_check": ["ok"],  # what integrity_check returned, a list as in every manifest
        "quarantine": str(quarantine(now)) if live else None,
        "moves_aside": [str(p) for p in live],
        "target": str(cfg.db_path),
        "dry_run": dry_run,
        "must_stop_first": in_use,
        "other_db": other_db(cfg, entry),
        "at": catalog.iso(now),
        "record": str(restores / f"restore_{now.strftime(catalog.TS_FORMAT)}.json"),
    }


def install(
    cfg: Config,
    entry: catalog.Entry,
    manifest: dict[str, Any],
    *,
    prepared: Path | None = None,
    owner_and_mode: tuple[tuple[int, int], int] | None = None,
    note: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The journaled replacement of the live DB by entry (see the module's docstring). Call under the
    state lock, with the engine stopped. Returns the restore record.

    With `prepared` (neo-db import), that file, already built and verified in WAL mode on the DB's
    filesystem, is what goes in place instead of a copy of entry; `owner_and_mode` then overrides the
    live DB's owner and mode; `note` is added to the plan (and so to the restore record)."""
    assert entry.db is not None
    staging = staging_dir(cfg)
    if os.path.lexists(staging):
        raise NeoDbError(
            f"an earlier restore is not finished: {staging} still holds the files it moved aside",
            hint="see the error above about it; once it is solved, any neo-db command completes that restore",
        )
    plan = {**make_plan(cfg, entry, manifest, None, dry_run=False), **(note or {})}
    live = [Path(p) for p in plan["moves_aside"]]
    try:
        _check_space(cfg, entry.db if prepared is None else None, live)
        owner, mode = owner_and_mode or _live_owner_and_mode(cfg)
        journal = _new_journal(plan, live)
        os.mkdir(staging, 0o750)  # ours from here: a failure below rolls back what is in it
    except OSError as exc:
        raise NeoDbError(
            f"restore refused: {_describe(exc)}; nothing was changed",
            hint="fix the path named above (its permissions, its filesystem, free space), then retry",
        ) from None
    try:
        _begin(cfg, staging, journal)
        if prepared is None:
            _prepare(staging, entry.db, manifest["sha256"], owner, mode)
        else:
            _take_prepared(staging, prepared, owner, mode)
        _move_aside(cfg, staging, journal)
        journal["state"] = COMMIT
        _write_journal(cfg, staging, journal)
        _step("committed")
    except BaseException as exc:
        _fail_before_commit(cfg, staging, journal, exc)
        raise
    try:
        return _complete(cfg, staging, journal)
    except (OSError, NeoDbError) as exc:
        where = "the restored DB is in place, but" if _installed(cfg, staging) else "the restore is committed, but"
        kept = f"the old files are kept in {staging / OLD}" if os.path.isdir(staging / OLD) else f"see {staging}"
        raise NeoDbError(
            f"{where} it could not be completed: {_describe(exc)}; {kept}",
            hint="fix that (free space in backup_dir?), then run any neo-db command: it completes the restore first",
        ) from None


def recover(cfg: Config) -> None:
    """Complete or roll back a restore that did not finish (killed, power loss). Call only under the state lock.

    Before its commit a restore is rolled back: the old files are renamed back into place.
    After it, it is completed: the restored DB put in place, the quarantine finished.
    """
    _remove_legacy_prepared(cfg)
    staging = staging_dir(cfg)
    if not os.path.lexists(staging) or staging in _unfinished:
        return
    if staging.is_symlink() or not staging.is_dir():
        raise NeoDbError(f"{staging} is not a directory; refusing to touch it", hint="look at it and move it away by hand")
    journal = _read_journal(staging)
    if journal is None:
        _remove_staging(cfg, staging)
        return
    if journal["state"] == PREPARE:
        _roll_back(cfg, staging, journal)
        logs.audit(f"an interrupted restore of {journal['target']} from {journal['backup']} was rolled back: the old DB is back in place")
        return
    log.warning("completing the interrupted restore of %s from %s", journal["target"], journal["backup"])
    try:
        _complete(cfg, staging, journal, recovered=True)
    except (OSError, NeoDbError) as exc:
        if not _installed(cfg, staging):
            raise NeoDbError(
                f"an interrupted restore of {journal['target']} could not be completed: {_describe(exc)}; "
                f"the restored copy and the old files are kept in {staging}",
                hint="fix that, then run any neo-db command again",
            ) from None
        # The restored DB is in place: what is missing is the quarantine. Sessions go on; the
        # old files stay in the staging dir (never deleted) and every neo-db run retries.
        _unfinished.add(staging)
        if isinstance(exc, PermissionError):
            fix = "run any neo-db command as root once (the restore ran as root), or give those files to the service user"
        elif isinstance(exc, OSError):
            fix = f"free space in {catalog.phase_dir(cfg, 'abnormal')}?"
        else:
            fix = f"look at {staging} and the quarantine it names; the live DB is the restored one"
        log.error(
            "the restored DB is in place, but the interrupted restore could not be finished: %s. What it moved aside "
            "stays in %s (never deleted); every neo-db run retries (%s)",
            _describe(exc),
            staging,
            fix,
        )


def recover_if_pending(cfg: Config) -> None:
    """For commands that do not take the state lock: finish an interrupted restore if no other run is busy."""
    if not os.path.lexists(staging_dir(cfg)) and not os.path.lexists(cfg.state_dir / "import-pending.json"):
        return
    try:
        with state_lock(cfg, timeout=0):  # state_lock recovers
            pass
    except LockedError:
        log.info("a restore is under way or pending in %s (another neo-db run holds the lock)", staging_dir(cfg))


# ---- the steps ----


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NeoDbError):
        return exc.message
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.filename and exc.filename2:
            return f"{text}: {exc.filename} -> {exc.filename2}"
        return f"{text}: {exc.filename}" if exc.filename else text
    return f"{type(exc).__name__}: {exc}"


def _check_space(cfg: Config, backup: Path | None, live: list[Path]) -> None:
    """Refuse before anything moves if the restored copy (None: already built there) or the quarantine cannot fit."""
    db_dir = cfg.db_path.parent
    need = (backup.stat().st_size if backup is not None else 0) + SPACE_MARGIN
    free = fsutil.free_bytes(db_dir)
    if backup is not None and free < need:
        raise NeoDbError(
            f"not enough space in {db_dir} for the restored copy of {backup.name}: "
            f"{need} bytes ({human_size(need)}) needed, {free} bytes ({human_size(free)}) free; nothing was changed",
            hint=f"free space on the filesystem of {db_dir}, then retry",
        )
    if not live:
        return
    abnormal = catalog.phase_dir(cfg, "abnormal")
    try:
        fsutil.ensure_real_dir(abnormal)
        other_fs = os.stat(abnormal).st_dev != os.stat(db_dir).st_dev
        if not os.access(abnormal, os.W_OK | os.X_OK):  # EROFS counts too: checked before anything moves
            raise PermissionError(errno.EACCES, "not writable (or on a read-only filesystem)", str(abnormal))
    except OSError as exc:
        raise NeoDbError(
            f"the quarantine dir {abnormal}: {_describe(exc)}; nothing was changed",
            hint=f"make {abnormal} a writable directory of the service user (the neo_runtime role creates it), then retry",
        ) from None
    if not other_fs:
        return  # the quarantine is a rename
    need = sum(p.stat().st_size for p in live) + SPACE_MARGIN
    free = fsutil.free_bytes(abnormal)
    if free < need:
        raise NeoDbError(
            f"not enough space in {abnormal} for the quarantine of the live DB ({', '.join(p.name for p in live)}): "
            f"{need} bytes ({human_size(need)}) needed, {free} bytes ({human_size(free)}) free; nothing was changed",
            hint="free space in backup_dir ('neo-db prune', or move old backups elsewhere), then retry",
        )


_chown_like_parent = fsutil.chown_like_parent


def _write_journal(cfg: Config, staging: Path, journal: dict[str, Any]) -> None:
    fsutil.write_json_atomic(staging / JOURNAL, journal)
    _chown_like_parent(staging / JOURNAL)


def _read_journal(staging: Path) -> dict[str, Any] | None:
    path = staging / JOURNAL
    try:
        doc = fsutil.read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise NeoDbError(f"the restore journal {path} is unreadable ({exc}); nothing was touched", hint="look at it by hand") from None
    keys = ("state", "id", "backup", "target", "files", "quarantine", "plan")
    if not isinstance(doc, dict) or doc.get("state") not in (PREPARE, COMMIT) or any(k not in doc for k in keys):
        raise NeoDbError(f"the restore journal {path} is not one neo-db wrote; nothing was touched", hint="look at it by hand")
    return doc


def _new_journal(plan: dict[str, Any], live: list[Path]) -> dict[str, Any]:
    """What the restore will do. The live files' sha256s become the quarantine's manifest.

    Each is fsynced first: what is hashed must be what is on the disk. A stopped engine's -shm
    (and a synchronous=NORMAL -wal) can still be dirty in the page cache; after a power cut the
    quarantine then failed its own sha256 check and the restore could never be finished (seen
    in the VM: tests/test_vm_faults.py::test_a_power_cut_right_after_a_restore_step)."""
    for path in live:
        fsutil.fsync_file(path)
    files = {p.name: {"size": p.stat().st_size, "sha256": fsutil.sha256_file(p)} for p in live}
    return {
        "state": PREPARE,
        "id": f"{plan['at']}-{os.getpid()}",
        "backup": plan["backup"],
        "sha256": plan["sha256"],
        "target": plan["target"],
        "files": files,
        "quarantine": plan["quarantine"],
        "plan": plan,
        "by": sqlitedb.user_name(),
    }


def _begin(cfg: Config, staging: Path, journal: dict[str, Any]) -> None:
    """The (new, empty) staging dir and the journal, before anything moves."""
    _chown_like_parent(staging)
    fsutil.fsync_dir(staging.parent)
    _write_journal(cfg, staging, journal)
    _step("journal")


def _fail_before_commit(cfg: Config, staging: Path, journal: dict[str, Any], exc: BaseException) -> None:
    """Roll back after an error before the commit, then let the caller raise a clear error."""
    try:
        _roll_back(cfg, staging, journal)
        outcome = "rolled back: the old DB is back in place, nothing was changed"
    except (OSError, NeoDbError) as again:
        outcome = (
            f"the rollback failed too ({_describe(again)}): the old files are kept in {staging / OLD}; the next neo-db run puts them back"
        )
    if isinstance(exc, NeoDbError):
        exc.message = f"{exc.message}; {outcome}"
    elif isinstance(exc, (OSError, sqlite3.Error)):
        raise NeoDbError(f"restore failed: {_describe(exc)}; {outcome}") from None
    else:
        log.error("restore interrupted: %s", outcome)


def _prepare(staging: Path, backup: Path, sha256: str, owner: tuple[int, int], mode: int) -> None:
    """A verified WAL-mode copy of the backup in the staging dir."""
    prepared = staging / PREPARED
    fsutil.copy_raw(backup, prepared)
    if fsutil.sha256_file(prepared) != sha256:
        raise NeoDbError(f"the copy of {backup.name} in {staging} does not match its sha256")
    conn = sqlite3.connect(prepared, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    for suffix in sqlitedb.LIVE_SUFFIXES[1:]:
        fsutil.remove_quietly(Path(f"{prepared}{suffix}"))
    os.chmod(prepared, mode)
    if os.geteuid() == 0:
        os.chown(prepared, *owner)
    fsutil.fsync_file(prepared)
    fsutil.fsync_dir(staging)
    _step("prepared")


def _take_prepared(staging: Path, built: Path, owner: tuple[int, int], mode: int) -> None:
    """neo-db import: the DB it built (WAL mode, verified) beside the live one becomes the prepared copy (a rename)."""
    prepared = staging / PREPARED
    os.rename(built, prepared)
    os.chmod(prepared, mode)
    if os.geteuid() == 0:
        os.chown(prepared, *owner)
    fsutil.fsync_file(prepared)
    fsutil.fsync_dir(staging)
    fsutil.fsync_dir(built.parent)
    _step("prepared")


def _move_aside(cfg: Config, staging: Path, journal: dict[str, Any]) -> None:
    """Rename each live file into the staging dir: the same filesystem, so nothing is copied."""
    old = staging / OLD
    os.mkdir(old, 0o750)
    _chown_like_parent(old)
    for name in journal["files"]:
        os.rename(cfg.db_path.parent / name, old / name)
        _step("moved-" + (name[len(cfg.db_path.name) + 1 :] or "db"))
    fsutil.fsync_dir(old)
    fsutil.fsync_dir(cfg.db_path.parent)


def _move_noreplace(src: Path, dst: Path) -> None:
    """Rename src to dst, never over an existing dst (a link, then an unlink; rerunnable after a kill)."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        if not os.path.samefile(src, dst):
            raise NeoDbError(f"cannot move {src} to {dst}: {dst} exists (something made it since); both are kept") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(dst):  # no hard links on this filesystem
            raise NeoDbError(f"cannot move {src} to {dst}: {dst} exists (something made it since); both are kept") from None
        os.rename(src, dst)
        return
    os.unlink(src)


def _roll_back(cfg: Config, staging: Path, journal: dict[str, Any]) -> None:
    """Before the commit: every live file back in place, then the staging dir goes."""
    old = staging / OLD
    for name in reversed(list(journal["files"])):
        if os.path.lexists(old / name):
            _move_noreplace(old / name, cfg.db_path.parent / name)
    fsutil.fsync_dir(cfg.db_path.parent)
    _remove_staging(cfg, staging)


def _installed(cfg: Config, staging: Path) -> bool:
    return not os.path.lexists(staging / PREPARED) and cfg.db_path.is_file()


def _complete(cfg: Config, staging: Path, journal: dict[str, Any], *, recovered: bool = False) -> dict[str, Any]:
    """After the commit: install, quarantine, record, clean up. Each part is rerunnable."""
    prepared = staging / PREPARED
    if os.path.lexists(prepared):
        _move_noreplace(prepared, cfg.db_path)
        fsutil.fsync_dir(cfg.db_path.parent)
    elif not cfg.db_path.is_file():
        raise NeoDbError(f"neither the restored copy {prepared} nor the live DB {cfg.db_path} exists")
    _step("installed")
    if journal["files"]:
        _quarantine(cfg, staging, journal)
    record = {**journal["plan"], "restored_at": catalog.iso(catalog.utcnow()), "by": journal.get("by", sqlitedb.user_name())}
    if recovered:
        record["completed_by"] = f"the next neo-db run (PID {os.getpid()}), after the restore was interrupted"
    _write_record(Path(journal["plan"]["record"]), record)
    _step("recorded")
    _remove_staging(cfg, staging)
    quarantine = journal["quarantine"]
    logs.audit(
        f"restored {cfg.db_path} from {journal['backup']} (sha256 {journal['sha256'][:16]}…); "
        + (f"previous files quarantined in {quarantine}" if quarantine else "there was no live DB to quarantine")
    )
    return record


def _stop_doc(journal: dict[str, Any]) -> dict[str, Any]:
    return {
        "trigger": "restore-quarantine",
        "reason": f"moved aside by 'neo-db restore {Path(journal['backup']).name}'",
        "restored_backup": journal["backup"],
        "at": journal["plan"]["at"],
        "restore_id": journal["id"],
        "files": journal["files"],
    }


def _quarantine(cfg: Config, staging: Path, journal: dict[str, Any]) -> None:
    """staging/old/ becomes the quarantine in abnormal_stop/: a rename, or a verified copy on another filesystem."""
    old = staging / OLD
    quarantine = Path(journal["quarantine"])
    files: dict[str, dict[str, Any]] = journal["files"]
    if os.path.lexists(quarantine):
        # A run killed after the quarantine got its name: check it is this restore's, and complete.
        try:
            doc = fsutil.read_json(quarantine / "stop.json")
        except PermissionError:
            raise  # written by another user (a root restore): not someone else's quarantine, an unreadable one
        except (OSError, ValueError):
            doc = None
        if not isinstance(doc, dict) or doc.get("restore_id") != journal["id"]:
            raise NeoDbError(f"{quarantine} exists and is not this restore's quarantine")
        for name, rec in files.items():
            if fsutil.sha256_file(quarantine / name) != rec["sha256"]:
                raise NeoDbError(f"{quarantine / name} does not match its sha256 in {quarantine / 'stop.json'}")
        if os.path.lexists(old):
            _remove_copies(staging, files)
        _step("quarantined")
        return
    if not os.path.isdir(old):
        raise NeoDbError(f"neither the quarantine {quarantine} nor the old files in {old} exist")
    fsutil.ensure_real_dir(quarantine.parent)
    _remove_temps(old)  # a stop.json an interrupted run was writing
    fsutil.write_json_atomic(old / "stop.json", _stop_doc(journal))
    try:
        os.rename(old, quarantine)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_quarantine(staging, journal, quarantine)
    else:
        _chown_like_parent(quarantine)
        fsutil.fsync_dir(quarantine.parent)
        fsutil.fsync_dir(staging)
    log.info("quarantined %s in %s", ", ".join(files), quarantine)
    _step("quarantined")


def _copy_quarantine(staging: Path, journal: dict[str, Any], quarantine: Path) -> None:
    """backup_dir is on another filesystem: copy, verify each sha256, rename; only then remove the originals."""
    old = staging / OLD
    files: dict[str, dict[str, Any]] = journal["files"]
    tmp = quarantine.with_name(f"{fsutil.TMP_PREFIX}{quarantine.name}")
    fsutil.remove_quietly(tmp)  # a copy an interrupted run did not finish: the originals are in old/
    os.mkdir(tmp, 0o750)
    try:
        _chown_like_parent(tmp)
        for name, rec in files.items():
            fsutil.copy_raw(old / name, tmp / name)
            _chown_like_parent(tmp / name)  # a root restore: the service user verifies and reads the quarantine later
            if fsutil.sha256_file(tmp / name) != rec["sha256"]:
                raise NeoDbError(f"the copy of {name} in {tmp} does not match its sha256; the original stays in {old}")
        fsutil.write_json_atomic(tmp / "stop.json", _stop_doc(journal))
        fsutil.fsync_dir(tmp)
        _step("quarantine-copied")
        os.rename(tmp, quarantine)
    except BaseException:
        fsutil.remove_quietly(tmp)
        raise
    fsutil.fsync_dir(quarantine.parent)
    _remove_copies(staging, files)


def _remove_copies(staging: Path, files: dict[str, Any]) -> None:
    """The quarantine holds verified copies: the originals in staging/old/ can go."""
    old = staging / OLD
    for name in [*files, "stop.json"]:
        fsutil.remove_quietly(old / name)
    _remove_temps(old)
    os.rmdir(old)
    fsutil.fsync_dir(staging)


def _remove_temps(directory: Path) -> None:
    """Temp files an interrupted run left (we hold the state lock: no run is writing them)."""
    for name in os.listdir(directory):
        if name.startswith(fsutil.TMP_PREFIX):
            fsutil.remove_quietly(directory / name)


def _write_record(path: Path, record: dict[str, Any]) -> None:
    try:
        if path.parent.is_dir():
            for name in os.listdir(path.parent):
                if name.startswith(f"{fsutil.TMP_PREFIX}{path.name}."):  # this record, half-written by the run that was killed
                    fsutil.remove_quietly(path.parent / name)
    except OSError as exc:
        log.warning("could not look into %s: %s", path.parent, _describe(exc))
    if os.path.lexists(path):
        return  # written by the run that was interrupted after it
    try:
        fsutil.ensure_real_dir(path.parent)
        fsutil.write_json_atomic(path, record)
    except OSError as exc:
        log.warning("could not write the restore record %s: %s", path, _describe(exc))


def _remove_staging(cfg: Config, staging: Path) -> None:
    """Remove the staging dir once it holds nothing live: only what a restore makes and can remake.

    Anything else (old/ with files in it, something put there by hand) keeps the dir, and its journal.
    """
    for name in os.listdir(staging):
        if name.startswith(fsutil.TMP_PREFIX) or name == PREPARED or name.startswith(f"{PREPARED}-"):
            fsutil.remove_quietly(staging / name)
    old = staging / OLD
    if os.path.isdir(old) and not os.path.islink(old) and not [n for n in os.listdir(old) if not n.startswith(fsutil.TMP_PREFIX)]:
        _remove_temps(old)
        os.rmdir(old)
    left = sorted(set(os.listdir(staging)) - {JOURNAL})
    if left:
        whose = "its journal says nothing of them" if os.path.lexists(staging / JOURNAL) else "no journal says what they are"
        raise NeoDbError(
            f"{staging} still holds {left} ({whose}); they are kept",
            hint="look at them: old/ holds the live files an interrupted restore moved aside; put them back beside the DB by hand",
        )
    fsutil.remove_quietly(staging / JOURNAL)
    os.rmdir(staging)
    fsutil.fsync_dir(cfg.db_path.parent)


def _remove_legacy_prepared(cfg: Config) -> None:
    """Older neo-db prepared the restored copy as db/.tmp-restore-<name>.<pid>: only ever a copy of a backup."""
    prefix = f"{fsutil.TMP_PREFIX}restore-{cfg.db_path.name}."
    try:
        with os.scandir(cfg.db_path.parent) as it:
            stale = [
                e.path for e in it if e.name.startswith(prefix) and e.name[len(prefix) :].isdigit() and e.is_file(follow_symlinks=False)
            ]
    except OSError:
        return  # no DB dir (yet), or not ours to read: the gates say so
    for path in stale:
        fsutil.remove_quietly(Path(path))
        log.info("removed %s, left by an interrupted restore", path)


def _live_owner_and_mode(cfg: Config) -> tuple[tuple[int, int], int]:
    try:
        st = os.stat(cfg.db_path)
        return (st.st_uid, st.st_gid), st.st_mode & 0o777
    except FileNotFoundError:
        st = os.stat(cfg.db_path.parent)  # the DB dir belongs to the service user
        return (st.st_uid, st.st_gid), 0o640
