"""`neo-db import`: bring an existing NEO DB onto the box (issue 14, FLAG-023's migration).

* ``--preflight SOURCE``: needs no config (the controller runs it from a checkout). SOURCE
  and its -wal are copied into a temp dir, the WAL is recovered there, and the copy gets the
  gate's checks (structure, integrity_check). Nothing is written beside SOURCE.
* ``--show``: the origin record, the live DB's sha256 and the highest session ID on the box.

FLAG-049: a corrupt DB is never repaired. It is refused (exit 3) and the operator moves
forward from a backup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import glob
import logging
import os
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from .. import catalog, fsutil, sqlitedb
from ..config import Config
from ..core import backups, sessions
from ..core import install as db_install
from ..core.formatting import table
from ..core.origin import finish_pending, imported_entry, load_origin, origin_path, pending_path, set_counter
from ..core.pipeline import BackupFailed, BackupNotIntact
from ..errors import IntegrityError, NeoDbError, UsageError
from ..locking import state_lock

log = logging.getLogger(__name__)

# FLAG-049's backup names on the Windows machine: neo_live_stage1.db.bak.20260421T165223Z (.post. after a session).
LEGACY_SUFFIX_RE = re.compile(r"\.(?P<kind>bak|post)\.(?P<ts>\d{8}T\d{6}Z)\Z")


def _journal_mode(header: bytes) -> str:
    """The DB's journal mode as its header records it: 2 is WAL; 1 is a rollback journal (DELETE and kin)."""
    return "wal" if header[18:20] == b"\x02\x02" else "delete"


def backup_hint(name: str) -> str:
    """FLAG-049's way forward from a corrupt DB, naming the operator's option."""
    db_name = LEGACY_SUFFIX_RE.sub("", name) or name
    return (
        f"FLAG-049: do not repair a corrupt DB, move forward from a backup: pick one such as {db_name}.bak.<UTC> "
        f"(the newest that passes 'neo-db import --preflight') and import that instead"
    )


def source_paths(arg: str) -> tuple[Path, Path | None]:
    """SOURCE and its -wal (None if there is none). Raises UsageError (exit 2) for a path that is not a DB file."""
    src = Path(arg).absolute()
    if os.path.islink(src):
        # SQLite finds -wal and -journal beside the file a symlink names, not beside the symlink
        src = Path(os.path.realpath(src))
    if src.name.endswith("-wal"):
        db = src.with_name(src.name[: -len("-wal")])
        raise UsageError(
            f"{src} is a -wal file: name the DB file ({db}); its -wal beside it comes along",
            hint=f"rerun with {db}",
        )
    wal = Path(f"{src}-wal")
    if not os.path.lexists(src):
        if wal.is_file():
            raise UsageError(
                f"{wal} is a -wal without its DB: {src} does not exist, and the commits in a -wal cannot be read "
                "without the DB file they belong to",
                hint="copy the DB file and its -wal together (never the -wal alone), or import a backup such as "
                f"{LEGACY_SUFFIX_RE.sub('', src.name)}.bak.<UTC>",
            )
        raise UsageError(f"{src} does not exist", hint="give the path of the DB file (e.g. neo_live_stage1.db, or a backup of it)")
    if not src.is_file():
        raise UsageError(f"{src} is not a file (a directory?)", hint="give the path of the DB file itself")
    try:
        with open(src, "rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise UsageError(f"{src} cannot be read: {exc.strerror or exc}", hint="run as a user who may read it") from None
    if len(header) < 100 or not header.startswith(sqlitedb.SQLITE_MAGIC):
        raise UsageError(
            f"{src} is not a SQLite database (no 'SQLite format 3' header; {src.stat().st_size} bytes)",
            hint="give the engine's DB file (neo_live_stage1.db) or one of its backups",
        )
    if os.path.lexists(wal) and not wal.is_file():
        raise UsageError(f"{wal} is not a regular file", hint="look at it and move it away")
    journal = Path(f"{src}-journal")
    if os.path.lexists(journal) and not journal.is_file():
        # a FIFO would block open() forever; a directory or a device is no journal SQLite wrote
        raise UsageError(f"{journal} is not a regular file", hint="look at it and move it away")
    if _is_hot_journal(journal):
        # A rollback-mode writer died mid-transaction: the DB file alone holds half of it. Copying
        # it without the journal would install that half; the journal belongs to the source box.
        raise UsageError(
            f"{journal} is a hot rollback journal: a writer died in the middle of a transaction, and {src} alone holds half of it",
            hint=f"on the source machine, with the engine stopped, open it once ('sqlite3 {src} \"PRAGMA integrity_check\"' "
            "rolls the journal back), then import it; or import a backup such as "
            f"{LEGACY_SUFFIX_RE.sub('', src.name)}.bak.<UTC>",
        )
    return src, (wal if wal.is_file() else None)


JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")


def _is_hot_journal(journal: Path) -> bool:
    """A -journal that SQLite would roll back: a regular file whose header is valid (a zeroed or
    empty one, as journal_mode=PERSIST or TRUNCATE leave, is not)."""
    try:
        fd = os.open(journal, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError as exc:
        # cannot tell it is not hot: refused rather than installing half a transaction
        raise UsageError(f"{journal} cannot be read: {exc.strerror or exc}", hint="run as a user who may read it") from None
    with open(fd, "rb") as fh:
        return fh.read(8) == JOURNAL_MAGIC


@dataclasses.dataclass
class Examined:
    """What the preflight found in a copy of SOURCE (+ its -wal), WAL recovered."""

    source: Path
    sha256: str
    wal_sha256: str | None
    journal_mode: str
    page_count: int
    tables: dict[str, int]
    size_bytes: int
    mtime: str
    copy: Path  # the examined copy in the work dir (WAL recovered, still in the source's journal mode)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "sha256": self.sha256,
            "wal_sha256": self.wal_sha256,
            "journal_mode": self.journal_mode,
            "integrity": "ok",
            "tables": self.tables,
            "size_bytes": self.size_bytes,
            "page_count": self.page_count,
        }


def examine(src: Path, wal: Path | None, workdir: Path, max_errors: int = 20) -> Examined:
    """Copy src (and its -wal) into workdir, recover the WAL there, and check the copy as the gate does.

    Raises IntegrityError (exit 3, FLAG-049) if the copy is corrupt; OSError if the copy cannot be made."""
    st = src.stat()
    copy = workdir / src.name
    fsutil.copy_raw(src, copy)
    digest = fsutil.sha256_file(copy)
    wal_digest = None
    if wal is not None:
        fsutil.copy_raw(wal, Path(f"{copy}-wal"))
        wal_digest = fsutil.sha256_file(Path(f"{copy}-wal"))
    if fsutil.sha256_file(src) != digest or (wal is not None and fsutil.sha256_file(wal) != wal_digest):
        raise NeoDbError(
            f"{src} changed while it was copied: something is still writing it",
            hint="stop the engine (or whatever writes it) and copy it again",
        )
    with open(copy, "rb") as fh:
        mode = _journal_mode(fh.read(100))
    problems = sqlitedb.check_structure(copy).problems
    if problems:
        raise _corrupt(src, [p.replace(str(copy), str(src)) for p in problems], wal)
    try:
        conn = sqlite3.connect(os.fspath(copy), isolation_level=None)  # a read-write open of the copy recovers its WAL
    except sqlite3.Error as exc:
        raise _corrupt(src, [f"{sqlitedb.error_name(exc) or 'error'}: cannot open: {exc}"], wal) from None
    try:
        result = sqlitedb.integrity_check(conn, max_errors)
        if result != ["ok"]:
            raise _corrupt(src, result, wal)
        tables = sqlitedb.row_counts(conn)
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    except sqlite3.Error as exc:
        raise _corrupt(src, [f"{sqlitedb.error_name(exc) or 'error'}: {exc}"], wal) from None
    finally:
        conn.close()
    return Examined(
        source=src,
        sha256=digest,
        wal_sha256=wal_digest,
        journal_mode=mode,
        page_count=pages,
        tables=tables,
        size_bytes=st.st_size,
        mtime=catalog.iso(dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)),
        copy=copy,
    )


def _corrupt(src: Path, errors: list[str], wal: Path | None) -> IntegrityError:
    exc = IntegrityError([f"{src} (checked on a copy{', its -wal recovered' if wal else ''}):", *errors])
    exc.hint = backup_hint(src.name)
    return exc


def preflight(arg: str) -> dict[str, Any]:
    """`neo-db import --preflight SOURCE`: no config, nothing written beside SOURCE."""
    src, wal = source_paths(arg)
    with tempfile.TemporaryDirectory(prefix="neo-db-preflight-") as tmp:
        try:
            found = examine(src, wal, Path(tmp))
        except OSError as exc:
            raise NeoDbError(
                f"the preflight copy of {src} into {tmp} failed: {exc.strerror or exc}",
                hint=f"free space in {Path(tmp).parent} (or set TMPDIR to a roomier directory), then retry",
            ) from None
    return found.as_dict()


def describe(doc: dict[str, Any]) -> str:
    """The preflight for a person: a few lines and a table of row counts."""

    lines = [
        f"source:        {doc['source']} ({doc['size_bytes']} bytes, {doc.get('page_count', '?')} pages)",
        f"sha256:        {doc['sha256']}",
        f"-wal sha256:   {doc['wal_sha256'] or '(no -wal)'}",
        f"journal mode:  {doc['journal_mode']}",
        f"integrity:     {doc['integrity']}",
    ]
    body = [[name, str(rows)] for name, rows in sorted(doc["tables"].items())]
    return "\n".join(lines) + "\n" + (table(["TABLE", "ROWS"], body) if body else "(no tables)")


# ---- the box: origin record, highest session ----


def _summary_sessions(cfg: Config) -> list[int]:
    """Session numbers of the engine's summaries on the box (session_summary_path with {session})."""
    pattern = cfg.session_summary_path
    if not pattern or "{session}" not in pattern:
        return []
    head, tail = pattern.split("{session}", 1)
    found = []
    for path in glob.glob(glob.escape(head) + "*" + glob.escape(tail).replace("{session}", "*")):
        rest = path[len(head) :]
        sid = rest.split("/", 1)[0] if "/" in rest else (rest[: -len(tail)] if tail and rest.endswith(tail) else rest)
        number = sessions.number_of(cfg, sid)
        if number is not None:
            found.append(number)
    return found


def highest_session(cfg: Config) -> tuple[int, str] | None:
    """The highest session number known on the box, and where: the counter, backup names, exports, summaries."""
    found: list[tuple[int, str]] = []
    last, _damage = sessions.read_counter(cfg)
    if last is not None and last > 0:
        found.append((last, "the session counter"))
    used = sessions.highest_used(cfg, sessions.load_current(cfg))
    if used is not None:
        found.append(used)
    found += [(n, "an engine summary") for n in _summary_sessions(cfg)]
    return max(found) if found else None


def _origin_or_damage(cfg: Config) -> tuple[dict[str, Any] | None, str | None]:
    """The origin record, or (None, why) for a damaged one: it proves nothing, and the commands
    that write it (import SOURCE --replace, --adopt) must not be blocked by it."""
    try:
        return load_origin(cfg), None
    except NeoDbError as exc:
        log.warning("%s; it is taken as no record (import --replace or --adopt rewrites it)", exc.message)
        return None, exc.message


def show(cfg: Config) -> dict[str, Any]:
    highest = highest_session(cfg)
    live = cfg.db_path.is_file()
    origin, damage = _origin_or_damage(cfg)
    return {
        "origin": origin,
        "origin_error": damage,
        "live_db_exists": live,
        "live_sha256": fsutil.sha256_file(cfg.db_path) if live else None,
        "highest_session": sessions.format_session(cfg, highest[0]) if highest else None,
    }


# ---- neo-db import SOURCE: install on the box ----

HEX64 = re.compile(r"^[0-9a-fA-F]{64}\Z")
SERVICE_DB_MODE = 0o600


def check_next_session(cfg: Config, wanted: str | None, *, installed: bool = False) -> int | None:
    """The number of --next-session, refused (exit 2, nothing changed) unless above every session ID on the box.

    installed: SOURCE is already the live DB (a rerun of the same command): a --next-session the
    box's sessions have since passed is ignored, not refused."""
    if wanted is None:
        return None
    number = sessions.number_of(cfg, wanted)
    if number is None:
        example = sessions.format_session(cfg, 51)
        raise UsageError(
            f"--next-session {wanted}: not a session ID of this box ({cfg.session_prefix} and a number, e.g. {example}); "
            "nothing was changed"
        )
    lowest = max(1, cfg.session_first_number)
    if number < lowest:
        raise UsageError(
            f"--next-session {wanted} is below {sessions.format_session(cfg, lowest)}, the first session ID of this box "
            f"(session_first_number in {cfg.source}); nothing was changed",
            hint=f"give {sessions.format_session(cfg, lowest)} or higher",
        )
    highest = highest_session(cfg)
    if highest is not None and number <= highest[0]:
        top = sessions.format_session(cfg, highest[0])
        if installed:
            log.info("--next-session %s ignored: the source is already installed and this box has run up to %s", wanted, top)
            return None
        raise UsageError(
            f"--next-session {wanted} is not above {top}, the highest session ID on this box ({highest[1]}): "
            "a reused ID would overwrite that session's backups and db_health; nothing was changed",
            hint=f"give {sessions.format_session(cfg, highest[0] + 1)} or higher",
        )
    return number


def _live_is_installed(cfg: Config, origin: dict[str, Any]) -> bool:
    """The live DB is still the file import installed (and no commit waits in its -wal)."""
    if not cfg.db_path.is_file() or not sqlitedb.wal_is_empty(cfg.db_path):
        return False
    return bool(fsutil.sha256_file(cfg.db_path) == origin.get("installed_sha256"))


def _result(cfg: Config, changed: bool, origin: dict[str, Any] | None, quarantined: str | None, next_number: int | None) -> dict[str, Any]:
    return {
        "changed": changed,
        "installed": str(cfg.db_path),
        "imported_backup": (origin or {}).get("imported_backup"),
        "quarantined": quarantined,
        "next_session": sessions.format_session(cfg, next_number) if next_number is not None else None,
        "origin": origin,
    }


def _build_dir(cfg: Config) -> Path:
    return cfg.db_path.parent / f"{fsutil.TMP_PREFIX}import-{cfg.db_path.name}.{os.getpid()}"


def _clean_stale_builds(cfg: Config) -> None:
    """Build dirs of import runs that were killed (we hold the state lock: none is running). Copies only."""
    prefix = f"{fsutil.TMP_PREFIX}import-{cfg.db_path.name}."
    try:
        with os.scandir(cfg.db_path.parent) as it:
            stale = [e.path for e in it if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for path in stale:
        fsutil.remove_quietly(Path(path))
        log.info("removed %s, left by an interrupted import", path)


def _no_space(where: Path, exc: OSError) -> NeoDbError:
    import errno  # noqa: PLC0415

    what = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"the filesystem holding {where} is full: free space there (df -h {where}), then retry"
    else:
        hint = f"fix {where} (its permissions, its filesystem), then retry"
    return NeoDbError(f"import failed in {where}: {what}; nothing was changed", hint=hint)


def _convert_to_wal(built: Path, max_errors: int) -> str:
    """The built copy in WAL mode, checkpointed, checked again; returns the journal mode it had."""
    with open(built, "rb") as fh:
        before = _journal_mode(fh.read(100))
    conn = sqlite3.connect(os.fspath(built), isolation_level=None)
    try:
        mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        if mode != "wal":
            raise NeoDbError(f"could not switch the copy {built} to journal_mode=WAL (got {mode})")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        result = sqlitedb.integrity_check(conn, max_errors)
        if result != ["ok"]:
            raise IntegrityError([f"the built copy {built} fails integrity_check:", *result])
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        fsutil.remove_quietly(Path(f"{built}{suffix}"))
    return before


def _provenance(found: Examined, *, host: str | None, path: str | None, installed_sha: str, adopted: bool = False) -> dict[str, Any]:
    from .. import __version__  # noqa: PLC0415

    original = path or str(found.source)
    return {
        "source_host": host,
        "source_path": original,
        "source_name": re.split(r"[\\/]", original)[-1],
        "source_sha256": found.sha256,
        "source_wal_sha256": found.wal_sha256,
        "source_mtime": found.mtime,
        "source_journal_mode": found.journal_mode,
        "converted_from": None if found.journal_mode == "wal" else found.journal_mode,
        "installed_sha256": installed_sha,
        "imported_at": catalog.iso(catalog.utcnow()),
        "tables": found.tables,
        "neo_db_version": __version__,
        "adopted": adopted,
    }


def _installed_origin(cfg: Config, actual: str) -> dict[str, Any] | None:
    """The origin record if SOURCE (sha256 `actual`) is the installed live DB and both are in place, else None."""
    origin, _damage = _origin_or_damage(cfg)  # a damaged record proves no rerun: installing rewrites it
    installed = origin and origin.get("source_sha256") == actual and imported_entry(cfg, origin) and _live_is_installed(cfg, origin)
    return origin if installed else None


def _already_installed(
    cfg: Config, src: Path, actual: str, origin: dict[str, Any] | None, next_number: int | None, *, dry_run: bool, locked: bool = False
) -> dict[str, Any] | None:
    """The result of an idempotent rerun (`origin`: SOURCE is already the installed live DB), else None."""
    if origin is None:
        return None
    changed = False
    if not dry_run:
        with contextlib.nullcontext() if locked else state_lock(cfg):
            changed = set_counter(cfg, next_number)
    log.info("%s (sha256 %s…) is already the installed live DB: nothing to import", src, actual[:16])
    return {**_result(cfg, changed, origin, None, next_number), **({"dry_run": True} if dry_run else {})}


def _refuse_live(cfg: Config, replace: bool) -> list[Path]:
    """The live DB's files; refused (exit 2, nothing changed) without --replace."""
    live = [Path(f"{cfg.db_path}{s}") for s in sqlitedb.LIVE_SUFFIXES if os.path.lexists(f"{cfg.db_path}{s}")]
    if live and not replace:
        raise UsageError(
            f"a live DB exists at {cfg.db_path} ({', '.join(p.name for p in live)}): refusing to import over it; nothing was changed",
            hint="rerun with --replace to quarantine it (as 'neo-db restore' does; it stays recoverable) and install SOURCE",
        )
    return live


def _source_sha256(src: Path, expected: str | None) -> str:
    """SOURCE's sha256; with --source-sha256, refused unless it is that one (the end-to-end transfer check)."""
    if expected is not None and not HEX64.match(expected):
        raise UsageError(f"--source-sha256 {expected!r} is not a sha256 (64 hex digits)")
    actual = fsutil.sha256_file(src)
    if expected is not None and actual != expected.lower():
        raise NeoDbError(
            f"{src} has sha256 {actual}, not the expected {expected.lower()}: the transfer is damaged or it is another file; "
            "nothing was changed",
            hint="copy the source again (the playbook checks it end to end), then retry",
        )
    return actual


def _build(cfg: Config, src: Path, wal: Path | None, build: Path) -> tuple[Examined, os.stat_result]:
    """Examine SOURCE into the build dir (on the DB's filesystem) and make the copy ready to go live: WAL mode,
    the service DB mode, the DB directory's owner, fsynced. Returns it and the DB directory's stat."""
    try:
        os.mkdir(build, 0o700)
        found = examine(src, wal, build, cfg.integrity_max_errors)
        _convert_to_wal(found.copy, cfg.integrity_max_errors)
        os.chmod(found.copy, SERVICE_DB_MODE)
        dir_st = os.stat(cfg.db_path.parent)  # the DB dir belongs to the service user
        if os.geteuid() == 0:
            os.chown(found.copy, dir_st.st_uid, dir_st.st_gid)
        fsutil.fsync_file(found.copy)
    except OSError as exc:
        raise _no_space(cfg.db_path.parent, exc) from None
    return found, dir_st


def install(
    cfg: Config,
    arg: str,
    *,
    source_sha256: str | None,
    source_host: str | None,
    source_path: str | None,
    next_session: str | None,
    replace: bool,
    dry_run: bool,
) -> dict[str, Any]:

    src, wal = source_paths(arg)
    actual = _source_sha256(src, source_sha256)
    origin = _installed_origin(cfg, actual)
    next_number = check_next_session(cfg, next_session, installed=origin is not None)
    done = _already_installed(cfg, src, actual, origin, next_number, dry_run=dry_run)
    if done is not None:
        return done
    live = _refuse_live(cfg, replace)
    if not cfg.db_path.parent.is_dir():
        raise UsageError(
            f"the DB's directory {cfg.db_path.parent} does not exist (db_path in {cfg.source})",
            hint="create it, owned by the service user and mode 0700 (the neo_runtime role does), then retry",
        )
    if dry_run:
        return _dry_run(cfg, src, wal, live, next_number)
    with state_lock(cfg):
        # again under the lock: another import may have run while this one waited for it
        origin = _installed_origin(cfg, actual)
        next_number = check_next_session(cfg, next_session, installed=origin is not None)
        done = _already_installed(cfg, src, actual, origin, next_number, dry_run=False, locked=True)
        if done is not None:
            return done
        _refuse_live(cfg, replace)
        db_install.refuse_if_in_use(cfg)
        backups.clean_stale_temps(cfg)
        _clean_stale_builds(cfg)
        build = _build_dir(cfg)
        pending = False
        record: dict[str, Any] | None = None
        try:
            found, dir_st = _build(cfg, src, wal, build)
            built = found.copy
            installed_sha = fsutil.sha256_file(built)
            provenance = _provenance(found, host=source_host, path=source_path, installed_sha=installed_sha)
            # A kill from here on is finished or rolled back by the next run that takes the state lock.
            try:
                fsutil.write_json_atomic(pending_path(cfg), {"origin": provenance, "next_number": next_number})
            except OSError as exc:
                raise _no_space(cfg.state_dir, exc) from None
            pending = True
            try:
                result = backups.take_backup(cfg, "imported", None, "import", require_intact=True, source=built, extra=provenance)
            except BackupFailed as exc:
                exc.message += "; nothing was changed"
                raise
            entry = catalog.find(cfg, result.path.name)
            assert entry is not None
            record = db_install.install(
                cfg,
                entry,
                result.manifest,
                prepared=built,
                owner_and_mode=((dir_st.st_uid, dir_st.st_gid), SERVICE_DB_MODE),
                note={"by_import": str(src)},
            )
        finally:
            if pending and record is None:
                # the install failed: rolled back before its commit (the live DB is as it was, the imported
                # backup goes), or in place but not finished (origin and counter are written all the same).
                # A restore left committed in its staging dir is completed, then this finished, by the next
                # run; if the new DB is already live, origin and counter are written now.
                try:
                    finish_pending(cfg, installed_only=os.path.lexists(db_install.staging_dir(cfg)))
                except (OSError, NeoDbError) as exc:
                    log.error("the failed import could not be cleaned up (%s): the next neo-db run retries", exc)
            fsutil.remove_quietly(build)
        origin = _origin_doc(cfg, provenance, result.path)
        fsutil.write_json_atomic(origin_path(cfg), origin)
        set_counter(cfg, next_number)
        fsutil.remove_quietly(pending_path(cfg))
    return _result(cfg, True, origin, record.get("quarantine"), next_number)


def _origin_doc(cfg: Config, provenance: dict[str, Any], imported: Path) -> dict[str, Any]:
    return {**provenance, "imported_backup": imported.name, "installed_path": str(cfg.db_path)}


def _dry_run(cfg: Config, src: Path, wal: Path | None, live: list[Path], next_number: int | None) -> dict[str, Any]:

    in_use = None
    try:
        db_install.refuse_if_in_use(cfg, scan_holders=True)
    except NeoDbError as exc:
        in_use = exc.message
        log.warning("%s", in_use)
    with tempfile.TemporaryDirectory(prefix="neo-db-import-dry-run-") as tmp:
        try:
            found = examine(src, wal, Path(tmp), cfg.integrity_max_errors)
        except OSError as exc:
            raise NeoDbError(f"the dry run's copy of {src} into {tmp} failed: {exc.strerror or exc}") from None
    log.info(
        "would install %s (%s rows) as %s, WAL mode, owner of %s, mode 0600",
        src,
        sum(found.tables.values()),
        cfg.db_path,
        cfg.db_path.parent,
    )
    if found.journal_mode != "wal":
        log.info("would convert it from journal_mode=%s to WAL", found.journal_mode)
    log.info("would record a verified backup in %s and the origin in %s", catalog.phase_dir(cfg, "imported"), origin_path(cfg))
    if live:
        log.info("would quarantine %s in %s (as restore does)", ", ".join(p.name for p in live), catalog.phase_dir(cfg, "abnormal"))
    if next_number is not None:
        log.info("would set the session counter: the next session is %s", sessions.format_session(cfg, next_number))
    return {
        **_result(cfg, True, None, None, next_number),
        "dry_run": True,
        "preflight": found.as_dict(),
        "moves_aside": [str(p) for p in live],
        "must_stop_first": in_use,
    }


# ---- --adopt: a DB the engine created on this box is its own origin ----


def adopt(cfg: Config, *, dry_run: bool) -> dict[str, Any]:
    """Record the live DB as its own origin: an imported backup of it (taken like a manual backup), and
    origin.json with source_host = this host and "adopted": true. The engine must be stopped. Idempotent."""
    import socket  # noqa: PLC0415

    from ..errors import DbMissingError  # noqa: PLC0415

    origin, _damage = _origin_or_damage(cfg)
    if origin is not None and imported_entry(cfg, origin) is not None:
        log.info("the origin of %s is already recorded (%s)", cfg.db_path, origin.get("imported_backup"))
        return _result(cfg, False, origin, None, None)
    if not cfg.db_path.is_file():
        raise DbMissingError(
            f"there is no live DB at {cfg.db_path} to adopt (db_path in {cfg.source})",
            hint="import one instead: ansible/migrate.yml, or 'neo-db import SOURCE'",
        )
    if dry_run:
        log.info("would record %s as its own origin, with a verified backup in %s", cfg.db_path, catalog.phase_dir(cfg, "imported"))
        return {**_result(cfg, True, None, None, None), "dry_run": True}
    with state_lock(cfg):
        db_install.refuse_if_in_use(cfg)
        backups.clean_stale_temps(cfg)
        st = cfg.db_path.stat()
        wal = Path(f"{cfg.db_path}-wal")
        live_sha = fsutil.sha256_file(cfg.db_path)
        with open(cfg.db_path, "rb") as fh:
            mode = _journal_mode(fh.read(100))
        result = backups.take_backup(cfg, "imported", None, "adopt", require_intact=True)
        found = Examined(
            source=cfg.db_path,
            sha256=live_sha,
            wal_sha256=fsutil.sha256_file(wal) if wal.is_file() and wal.stat().st_size else None,
            journal_mode=mode,
            page_count=int(result.manifest.get("pages") or 0),
            tables=dict(result.manifest.get("row_counts") or {}),
            size_bytes=st.st_size,
            mtime=catalog.iso(dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)),
            copy=result.path,
        )
        provenance = _provenance(found, host=socket.gethostname(), path=str(cfg.db_path), installed_sha=live_sha, adopted=True)
        provenance["converted_from"] = None  # nothing was converted: the engine made it here
        manifest = {**result.manifest, **provenance}
        fsutil.write_json_atomic(result.path.with_suffix(".json"), manifest)
        origin = _origin_doc(cfg, provenance, result.path)
        fsutil.write_json_atomic(origin_path(cfg), origin)
    return _result(cfg, True, origin, None, None)


# ---- --legacy DIR: the Windows-era FLAG-049 backups ----

LEGACY_TS = "%Y%m%dT%H%M%SZ"


def _legacy_done(cfg: Config) -> dict[str, str]:
    """source sha256 -> base name of every legacy backup already imported."""
    done = {}
    for e in catalog.entries(cfg, ["legacy"]):
        digest = (e.manifest or {}).get("source_sha256")
        if isinstance(digest, str) and e.db is not None:
            done[digest] = e.base
    return done


@dataclasses.dataclass
class _LegacyRun:
    """What an import of legacy backups did with each file."""

    dry_run: bool
    imported: list[str] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    corrupt: bool = False

    def skip(self, name: str, reason: str, *, bad: bool = False) -> None:
        self.corrupt = self.corrupt or bad
        self.skipped.append({"name": name, "reason": reason})
        (log.error if bad else log.warning if "impossible" in reason else log.info)("%s: skipped: %s", name, reason)


def _legacy_candidates(top: Path, prefix: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(name, kind, UTC stamp) of each <prefix>.bak.<UTC> / .post.<UTC> file in top, and the names ignored."""
    try:
        names = sorted(os.listdir(top))
    except OSError as exc:
        raise UsageError(f"{top} cannot be read: {exc.strerror or exc}") from None
    candidates: list[tuple[str, str, str]] = []
    ignored: list[str] = []
    for name in names:
        m = LEGACY_SUFFIX_RE.search(name)
        if name.endswith("-wal") and name[: -len("-wal")] in names:
            continue  # a backup's -wal: taken along with it
        if m is None or name[: m.start()] != prefix or not (top / name).is_file():
            ignored.append(name)
            continue
        candidates.append((name, m["kind"], m["ts"]))
    return candidates, ignored


def _legacy_one(cfg: Config, run: _LegacyRun, src: Path, *, kind: str, base: str, ts: dt.datetime) -> str | None:
    """Examine one legacy backup and, unless a dry run, take it into the legacy phase. Its new name, or None (skipped)."""
    name = src.name
    wal = Path(f"{src}-wal") if Path(f"{src}-wal").is_file() else None
    work_parent = Path(tempfile.gettempdir()) if run.dry_run else catalog.phase_dir(cfg, "legacy")
    try:
        with tempfile.TemporaryDirectory(prefix=f"{fsutil.TMP_PREFIX}legacy-", dir=work_parent) as tmp:
            try:
                found = examine(src, wal, Path(tmp), cfg.integrity_max_errors)
            except UsageError as exc:
                run.skip(name, f"corrupt: {exc.message}", bad=True)
                return None
            except IntegrityError as exc:
                run.skip(name, "corrupt: " + "; ".join(exc.errors[1:4]), bad=True)
                return None
            if run.dry_run:
                log.info("would import %s as %s (%s rows)", name, base, sum(found.tables.values()))
                return f"{base}.db"
            extra = {
                "original_name": name,
                "legacy_kind": kind,
                "source_path": str(src),
                "source_sha256": found.sha256,
                "source_wal_sha256": found.wal_sha256,
                "source_mtime": found.mtime,
                "source_journal_mode": found.journal_mode,
                "imported_at": catalog.iso(catalog.utcnow()),
            }
            result = backups.take_backup(
                cfg, "legacy", None, "legacy-import", require_intact=True, base=base, now=ts, source=found.copy, extra=extra
            )
    except BackupNotIntact as exc:
        run.skip(name, f"corrupt: the copy fails integrity_check: {exc.message}", bad=True)
        return None
    except OSError as exc:
        raise _no_space(catalog.phase_dir(cfg, "legacy"), exc) from None
    log.info("imported %s as %s", name, result.path.name)
    return result.path.name


def legacy(cfg: Config, directory: str, *, dry_run: bool) -> tuple[dict[str, Any], bool]:
    """Import DIR's <db_name>.bak.<UTC> / .post.<UTC> files into the legacy phase. Returns (doc, any corrupt)."""
    top = Path(directory).absolute()
    if not top.is_dir():
        raise UsageError(
            f"{top} is not a directory", hint="give the directory holding the Windows-era backups (neo_live_stage1.db.bak.<UTC>)"
        )
    candidates, ignored = _legacy_candidates(top, cfg.db_name)
    run = _LegacyRun(dry_run)
    with state_lock(cfg) if not dry_run else contextlib.nullcontext():
        if not dry_run:
            backups.clean_stale_temps(cfg)
            fsutil.ensure_real_dir(catalog.phase_dir(cfg, "legacy"))
        done = _legacy_done(cfg)
        bases = {e.base: e for e in catalog.entries(cfg, ["legacy"])}
        for name, kind, stamp in candidates:
            try:
                ts = dt.datetime.strptime(stamp, LEGACY_TS).replace(tzinfo=dt.timezone.utc)
            except ValueError:
                run.skip(name, f"impossible date {stamp!r} in the name (expected YYYYMMDDTHHMMSSZ, a real UTC time)")
                continue
            digest = fsutil.sha256_file(top / name)
            base = catalog.base_name(cfg.db_stem, "legacy", None, ts)
            if digest in done:
                run.skip(name, f"already imported as {done[digest]}")
            elif base in bases:
                run.skip(name, f"another legacy backup has the same time ({bases[base].base}); import it by hand if it matters")
            else:
                new_name = _legacy_one(cfg, run, top / name, kind=kind, base=base, ts=ts)
                if new_name is not None:
                    run.imported.append(new_name)
                    if not dry_run:
                        done[digest] = base
    for name in ignored:
        log.info("%s: ignored (not a %s.bak.<UTC> or .post.<UTC> backup)", name, cfg.db_name)
    doc = {"changed": bool(run.imported) and not dry_run, "imported": run.imported, "skipped": run.skipped, "ignored": ignored}
    if dry_run:
        doc["dry_run"] = True
    return doc, run.corrupt
