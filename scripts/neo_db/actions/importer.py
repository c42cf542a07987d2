"""`neo-db import`: bring an existing NEO DB onto the box (issue 14, FLAG-023's migration).

* ``--preflight SOURCE``: needs no config (the controller runs it from a checkout). SOURCE
  and its -wal are copied into a temp dir, the WAL is recovered there, and the copy gets the
  gate's checks (structure, integrity_check). Nothing is written beside SOURCE.
* ``--show``: the origin record, the live DB's sha256 and the highest session ID on the box.

FLAG-049: a corrupt DB is never repaired. It is refused (exit 3) and the operator moves
forward from a backup.
"""

from __future__ import annotations

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
from ..errors import IntegrityError, NeoDbError, UsageError
from . import session

log = logging.getLogger(__name__)

ORIGIN = "origin.json"
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
    return src, (wal if wal.is_file() else None)


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
    from .listing import table  # noqa: PLC0415

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


def origin_path(cfg: Config) -> Path:
    return cfg.state_dir / ORIGIN


def load_origin(cfg: Config) -> dict[str, Any] | None:
    path = origin_path(cfg)
    try:
        doc = fsutil.read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise NeoDbError(f"the origin record {path} is unreadable ({exc})", hint="look at it; 'neo-db import' rewrites it") from None
    if not isinstance(doc, dict):
        raise NeoDbError(f"the origin record {path} is not a JSON object", hint="look at it; 'neo-db import' rewrites it")
    return doc


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
        number = session._number_of(cfg, sid)
        if number is not None:
            found.append(number)
    return found


def highest_session(cfg: Config) -> tuple[int, str] | None:
    """The highest session number known on the box, and where: the counter, backup names, exports, summaries."""
    found: list[tuple[int, str]] = []
    last, _damage = session.read_counter(cfg)
    if last is not None and last > 0:
        found.append((last, "the session counter"))
    used = session.highest_used(cfg, session.load_current(cfg))
    if used is not None:
        found.append(used)
    found += [(n, "an engine summary") for n in _summary_sessions(cfg)]
    return max(found) if found else None


def show(cfg: Config) -> dict[str, Any]:
    highest = highest_session(cfg)
    live = cfg.db_path.is_file()
    return {
        "origin": load_origin(cfg),
        "live_db_exists": live,
        "live_sha256": fsutil.sha256_file(cfg.db_path) if live else None,
        "highest_session": session.format_session(cfg, highest[0]) if highest else None,
    }
