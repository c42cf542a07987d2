"""What neo-db reports: row counts and diffs of every user table, output in any locale, and
clear errors (text and JSON) instead of "internal error" for what can be foreseen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import Runtime, make_db

# ---- tables named sqlite... (only SQLite's own sqlite_* tables are internal) ----


def add_sqlite_named_tables(db: Path) -> None:
    """User tables whose names start with "sqlite" but are not SQLite's, and two real internal ones."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE SqliteMigrations (version INTEGER PRIMARY KEY, applied TEXT)")
    conn.executemany("INSERT INTO SqliteMigrations VALUES (?, ?)", [(i, f"m{i}") for i in range(3)])
    conn.execute("CREATE TABLE sqlitex (k TEXT)")
    conn.execute("INSERT INTO sqlitex VALUES ('x')")
    conn.execute("CREATE TABLE seqd (id INTEGER PRIMARY KEY AUTOINCREMENT, v)")  # makes sqlite_sequence
    conn.execute("INSERT INTO seqd(v) VALUES (1)")
    conn.execute("ANALYZE")  # makes sqlite_stat1
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def test_tables_named_sqlite_something_are_counted_and_diffed_but_internal_tables_are_not(runtime: Runtime) -> None:
    make_db(runtime.db, rows=10)
    add_sqlite_named_tables(runtime.db)
    r = runtime.cli("backup", "--json")
    assert r.rc == 0, r.err
    counts = r.json["manifest"]["row_counts"]
    # Positive: every user table, whatever its name; negative: SQLite's own tables.
    assert counts == {"SqliteMigrations": 3, "seqd": 1, "sqlitex": 1, "trades": 10}, counts
    before = r.json["path"]
    conn = sqlite3.connect(runtime.db, isolation_level=None)
    conn.execute("INSERT INTO SqliteMigrations VALUES (3, 'm3'), (4, 'm4')")
    conn.execute("DELETE FROM sqlitex")
    conn.execute("INSERT INTO seqd(v) VALUES (2)")
    conn.execute("ANALYZE")
    conn.close()
    after = runtime.cli("backup", "--json").json["path"]
    d = runtime.cli("diff", before, after, "--json")
    assert d.rc == 0, d.err
    tables = d.json["tables"]
    assert set(tables) == {"SqliteMigrations", "seqd", "sqlitex", "trades"}, tables
    assert (tables["SqliteMigrations"]["inserted"], tables["sqlitex"]["deleted"], tables["seqd"]["inserted"]) == (2, 1, 1)
    assert d.json["schema_changes"] == [] and d.json["objects_added"] == [], "sqlite_stat1/sqlite_sequence are not user objects"


def without_rowid_pair(tmp_path: Path, after_schema: str, after_rows: list[tuple[str, int]]) -> tuple[Path, Path]:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    for path, schema, rows in (
        (a, "CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID", [("a", 1), ("c", 3), ("d", 4)]),
        (b, after_schema, after_rows),
    ):
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(schema)
        conn.executemany("INSERT INTO kv VALUES (?, ?)", rows)
        conn.close()
    return a, b


def test_diff_of_a_without_rowid_table_whose_key_value_changes(runtime: Runtime, tmp_path: Path) -> None:
    # The row with key 'a' becomes 'b' (UPDATE kv SET k='b' WHERE k='a'): a row is matched by its
    # key, so that is one delete ('a') and one insert ('b'); 'c' changes its value: one update.
    a, b = without_rowid_pair(tmp_path, "CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID", [("b", 1), ("c", 30), ("d", 4)])
    r = runtime.cli("diff", str(a), str(b), "--json")
    assert r.rc == 0, r.err
    t = r.json["tables"]["kv"]
    assert (t["inserted"], t["deleted"], t["updated"], t["matched_by"]) == (1, 1, 1, "primary key (k)"), t


def test_diff_of_a_without_rowid_table_whose_primary_key_changes(runtime: Runtime, tmp_path: Path) -> None:
    # The key itself is redefined (k -> k, v): there is no rowid to fall back on, so rows are
    # matched on all their columns: a changed row is one delete and one insert.
    a, b = without_rowid_pair(
        tmp_path, "CREATE TABLE kv (k TEXT, v INTEGER, PRIMARY KEY (k, v)) WITHOUT ROWID", [("b", 1), ("c", 30), ("d", 4)]
    )
    r = runtime.cli("diff", str(a), str(b), "--json")
    assert r.rc == 0, r.err
    assert "Traceback" not in r.err
    t = r.json["tables"]["kv"]
    assert (t["rows_before"], t["rows_after"], t["inserted"], t["deleted"], t["updated"]) == (3, 3, 2, 2, 0), t
    assert t["matched_by"].startswith("all columns"), t
    assert [c["name"] for c in r.json["schema_changes"]] == ["kv"]
    text = runtime.cli("diff", str(a), str(b))
    assert text.rc == 0 and "kv" in text.out
