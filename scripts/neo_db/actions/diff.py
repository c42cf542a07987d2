"""`neo-db diff A B`: what changed between two copies (for example a session's pre and post backups).

Both files are opened read-only and immutable: they are copies, never the live DB.
Rows are matched by primary key (or rowid): inserted, deleted, and updated (same key,
different values in the columns both sides have). A row whose key value changed is one
delete and one insert. A table whose primary key was redefined is matched by rowid, or,
for a WITHOUT ROWID table (no rowid to fall back on), on all the columns both sides have:
then a changed row is also one delete and one insert, and nothing counts as updated.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from .. import catalog, sqlitedb
from ..config import Config
from ..errors import UsageError


def _uri(path: Path) -> str:
    return "file:" + urllib.parse.quote(os.fspath(path)) + "?mode=ro&immutable=1"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def resolve(cfg: Config, arg: str) -> Path:
    entry = catalog.find(cfg, Path(arg).name) if "/" not in arg else None
    path = entry.db if entry is not None and entry.db is not None else Path(arg)
    if not path.is_file():
        raise UsageError(f"{arg!r} is neither a backup name from 'neo-db list' nor a readable file")
    if os.path.realpath(path) == os.path.realpath(cfg.db_path):
        raise UsageError(
            f"{arg!r} is the live DB; diff reads copies only (sole-writer rule)",
            hint="take one with 'neo-db snapshot' or 'neo-db backup' and diff that",
        )
    return path


def session_pair(cfg: Config, session: str) -> tuple[Path, Path]:
    catalog.check_session_id(session)
    found = {}
    for e in catalog.entries(cfg, ["pre", "post"]):
        if e.session == session and e.db is not None:
            found[e.phase] = e.db  # oldest first, so the newest of each phase wins
    missing = [p for p in ("pre", "post") if p not in found]
    if missing:
        raise UsageError(f"session {session} has no {' and no '.join(missing)}-session backup", hint="'neo-db list' shows what exists")
    return found["pre"], found["post"]


def _schema(conn: sqlite3.Connection, db: str) -> dict[str, tuple[str, str | None]]:
    rows = conn.execute(f"SELECT name, type, sql FROM {db}.sqlite_schema WHERE {sqlitedb.USER_OBJECT}")
    return {name: (typ, sql) for name, typ, sql in rows}


def _columns(conn: sqlite3.Connection, db: str, table: str) -> tuple[list[str], list[str]]:
    info = conn.execute(f"PRAGMA {db}.table_info({_q(table)})").fetchall()
    cols = [r[1] for r in info]
    pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
    return cols, pk


def _has_rowid(conn: sqlite3.Connection, db: str, table: str) -> bool:
    """False for a WITHOUT ROWID table."""
    try:
        conn.execute(f"SELECT rowid FROM {db}.{_q(table)} LIMIT 0")
    except sqlite3.OperationalError:
        return False
    return True


def _count(conn: sqlite3.Connection, sql: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0])


def diff(a: Path, b: Path) -> dict[str, Any]:
    conn = sqlite3.connect(":memory:", uri=True)
    try:
        conn.execute("ATTACH DATABASE ? AS a", (_uri(a),))
        conn.execute("ATTACH DATABASE ? AS b", (_uri(b),))
        sa, sb = _schema(conn, "a"), _schema(conn, "b")
        tables_a = {n for n, (t, _) in sa.items() if t == "table"}
        tables_b = {n for n, (t, _) in sb.items() if t == "table"}
        schema_changes = [
            {"name": n, "type": sb[n][0], "before": sa[n][1], "after": sb[n][1]} for n in sorted(set(sa) & set(sb)) if sa[n] != sb[n]
        ]
        other_added = sorted(n for n in set(sb) - set(sa) if sb[n][0] != "table")
        other_removed = sorted(n for n in set(sa) - set(sb) if sa[n][0] != "table")
        tables: dict[str, Any] = {}
        for t in sorted(tables_a & tables_b):
            cols_a, pk_a = _columns(conn, "a", t)
            cols_b, pk_b = _columns(conn, "b", t)
            common = [c for c in cols_b if c in cols_a]
            values = ", ".join(_q(c) for c in common) or "NULL"
            pk = pk_b if pk_b and pk_b == pk_a else []
            if pk:
                key, matched_by = ", ".join(_q(c) for c in pk), "primary key (" + ", ".join(pk) + ")"
            elif _has_rowid(conn, "a", t) and _has_rowid(conn, "b", t):
                key, matched_by = "rowid", "rowid"
            else:
                key, matched_by = values, "all columns (the primary key changed and there is no rowid): a changed row is deleted + inserted"
            ta, tb = f"a.{_q(t)}", f"b.{_q(t)}"
            rows_a = _count(conn, f"SELECT 1 FROM {ta}")
            rows_b = _count(conn, f"SELECT 1 FROM {tb}")
            inserted = _count(conn, f"SELECT {key} FROM {tb} EXCEPT SELECT {key} FROM {ta}")
            deleted = _count(conn, f"SELECT {key} FROM {ta} EXCEPT SELECT {key} FROM {tb}")
            changed = _count(conn, f"SELECT {key}, {values} FROM {tb} EXCEPT SELECT {key}, {values} FROM {ta}")
            tables[t] = {
                "rows_before": rows_a,
                "rows_after": rows_b,
                "inserted": inserted,
                "deleted": deleted,
                "updated": changed - inserted,
                "matched_by": matched_by,
                "columns_added": [c for c in cols_b if c not in cols_a],
                "columns_removed": [c for c in cols_a if c not in cols_b],
            }
        return {
            "a": str(a),
            "b": str(b),
            "tables_added": {t: _count(conn, f"SELECT 1 FROM b.{_q(t)}") for t in sorted(tables_b - tables_a)},
            "tables_removed": {t: _count(conn, f"SELECT 1 FROM a.{_q(t)}") for t in sorted(tables_a - tables_b)},
            "schema_changes": schema_changes,
            "objects_added": other_added,
            "objects_removed": other_removed,
            "tables": tables,
        }
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"cannot compare {a} and {b}: {exc}") from None
    finally:
        conn.close()


def summary(doc: dict[str, Any]) -> str:
    lines = [f"A: {doc['a']}", f"B: {doc['b']}"]
    for t, n in doc["tables_added"].items():
        lines.append(f"+ table {t} ({n} rows)")
    for t, n in doc["tables_removed"].items():
        lines.append(f"- table {t} ({n} rows)")
    for c in doc["schema_changes"]:
        lines.append(f"~ {c['type']} {c['name']}: schema changed")
    for o in doc["objects_added"]:
        lines.append(f"+ {o}")
    for o in doc["objects_removed"]:
        lines.append(f"- {o}")
    header = f"{'TABLE':<24} {'BEFORE':>9} {'AFTER':>9} {'INSERTED':>9} {'DELETED':>9} {'UPDATED':>9}"
    lines += ["", header, "-" * len(header)]
    for t, d in doc["tables"].items():
        lines.append(f"{t:<24} {d['rows_before']:>9} {d['rows_after']:>9} {d['inserted']:>9} {d['deleted']:>9} {d['updated']:>9}")
    return "\n".join(lines)
