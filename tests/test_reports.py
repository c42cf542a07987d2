"""What neo-db reports: row counts and diffs of every user table, output in any locale, and
clear errors (text and JSON) instead of "internal error" for what can be foreseen."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import FLAG049, NEO_DB, SYSTEM_PYTHON, Result, Runtime, make_db

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


# ---- any locale, no traceback ----


@pytest.fixture(scope="module")
def latin1_locpath(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A real en_US.ISO-8859-1 locale, compiled into a temp dir (read through $LOCPATH)."""
    locpath = tmp_path_factory.mktemp("locales")
    if shutil.which("localedef") is None:
        return None
    target = locpath / "en_US.ISO-8859-1"
    proc = subprocess.run(["localedef", "-i", "en_US", "-f", "ISO-8859-1", str(target)], capture_output=True, check=False)
    return locpath if proc.returncode == 0 and target.is_dir() else None


LOCALES = {
    # What the system python3 may meet under systemd or over ssh. UTF-8 mode (PEP 540) is on by
    # itself in the C locale, so PYTHONUTF8=0 forces the real ASCII stdout of older setups.
    "C, ascii": {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"},
    "POSIX, ascii": {"LC_ALL": "POSIX", "PYTHONUTF8": "0"},
    "C, utf-8 mode": {"LC_ALL": "C", "LANG": "C"},
    "PYTHONIOENCODING=latin-1": {"LANG": "C.UTF-8", "PYTHONIOENCODING": "latin-1"},
    "PYTHONIOENCODING=ascii": {"LANG": "C.UTF-8", "PYTHONIOENCODING": "ascii"},
    "en_US.ISO-8859-1": {"LC_ALL": "en_US.ISO-8859-1", "LANG": "en_US.ISO-8859-1"},
}


def run_in(env: dict[str, str], *argv: str) -> Result:
    """The CLI as Runtime.cli runs it, its output decoded in the encoding its locale implies."""
    proc = subprocess.run([SYSTEM_PYTHON, str(NEO_DB), *argv], env=env, capture_output=True, check=False, timeout=120)
    latin1 = "latin-1" in (env.get("PYTHONIOENCODING", "") + env.get("LC_ALL", "").replace("ISO-8859-1", "latin-1"))
    # strict: output that is not valid in its encoding fails the test
    encoding = "latin-1" if latin1 else "utf-8"
    return Result(proc.returncode, proc.stdout.decode(encoding), proc.stderr.decode(encoding))


def locale_env(runtime: Runtime, settings: dict[str, str], locpath: Path | None) -> dict[str, str]:
    env = {k: v for k, v in runtime.env().items() if not k.startswith(("LC_", "PYTHONUTF8", "PYTHONIOENCODING", "LANG"))}
    env.update(settings)
    if settings.get("LC_ALL") == "en_US.ISO-8859-1":
        if locpath is None:
            pytest.skip("localedef cannot build en_US.ISO-8859-1 here (the PYTHONIOENCODING=latin-1 case covers latin-1)")
        env["LOCPATH"] = str(locpath)
    return env


def damage(path: Path) -> None:
    os.chmod(path, 0o640)
    with open(path, "r+b") as fh:
        fh.seek(-50, 2)
        fh.write(b"\xff" * 10)


def flip_page_byte(db: Path) -> None:
    """Corrupt a b-tree page's type byte: integrity_check (and the gate) must fail."""
    with open(db, "r+b") as fh:
        fh.seek(4096 * 2)
        fh.write(b"\x00")


def no_crash(r: object, where: str) -> None:
    err = getattr(r, "err", "")
    assert "Traceback" not in err and "UnicodeEncodeError" not in err and "internal error" not in err, f"{where}: {err}"


@pytest.mark.parametrize("name", list(LOCALES))
def test_every_command_prints_in_any_locale_without_a_traceback(runtime: Runtime, latin1_locpath: Path | None, name: str) -> None:
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    assert runtime.stop().rc == 0
    [post] = runtime.files("post_session")
    damage(post)
    env = locale_env(runtime, LOCALES[name], latin1_locpath)
    print(f"locale case {name}: {sorted((k, v) for k, v in env.items() if k.startswith(('LC_', 'LANG', 'PYTHON', 'LOCPATH')))}")

    drill = run_in(env, "drill")  # its detail holds '…' (sha256 abcd… differs)
    no_crash(drill, "drill")
    assert drill.rc == 1 and "drill: FAIL" in drill.out and "sha256" in drill.out, drill
    for argv in (["drill", "--json"], ["list"], ["health"], ["prune", "--dry-run"], ["confirm", "--markdown"], ["confirm"]):
        r = run_in(env, *argv)
        no_crash(r, " ".join(argv))
        assert r.out.strip(), argv
    assert "# Pre-first-VPS-run confirmation (FLAG-023" in run_in(env, "confirm", "--markdown").out

    flip_page_byte(runtime.db)
    for argv in (["check"], ["session-start"], ["check", "--json"]):
        r = run_in(env, *argv)
        no_crash(r, " ".join(argv))
        assert r.rc == 3, (argv, r)
        # The message is there: as is, or with the em dash spelled \u2014 where the terminal cannot show it.
        assert FLAG049 in r.err or FLAG049.replace("\u2014", "\\u2014") in r.err, r.err


@pytest.mark.parametrize("name", [n for n in LOCALES if "utf-8" not in n])
def test_the_journal_gets_the_flag049_message_in_utf8_whatever_the_locale(
    runtime: Runtime, latin1_locpath: Path | None, tmp_path: Path, name: str
) -> None:
    """Under systemd, stdout and stderr are the journal's stream ($JOURNAL_STREAM names it):
    the journal stores UTF-8, so the em dash must reach it as one, in any locale."""
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    assert runtime.stop().rc == 0
    [post] = runtime.files("post_session")
    damage(post)
    flip_page_byte(runtime.db)
    env = locale_env(runtime, LOCALES[name], latin1_locpath)
    for argv, rc in ((["session-start"], 3), (["drill"], 1)):
        journal = tmp_path / f"journal-{argv[0]}"
        with open(journal, "wb") as stream:
            st = os.fstat(stream.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
            proc = subprocess.run([SYSTEM_PYTHON, str(NEO_DB), *argv], env=env, stdout=stream, stderr=stream, check=False)
        text = journal.read_bytes().decode("utf-8")  # strict: the journal gets valid UTF-8
        assert proc.returncode == rc, text
        assert "Traceback" not in text and "internal error" not in text, text
        if argv == ["session-start"]:
            assert f"<3>{FLAG049}" in text, text
        else:
            assert "\u2026 differs from the manifest" in text, text
