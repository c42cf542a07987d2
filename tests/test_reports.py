"""What neo-db reports: row counts and diffs of every user table, output in any locale, and
clear errors (text and JSON) instead of "internal error" for what can be foreseen."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import FLAG049, NEO_DB, SYSTEM_PYTHON, Result, Runtime, Writer, make_db

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


# ---- no "internal error" for what can be foreseen ----

COMMANDS: list[list[str]] = [
    ["list", "--json"],
    ["health", "--json"],
    ["diff", "--session", "S001", "--json"],
    ["check", "--json"],
    ["confirm", "--json"],
    ["drill", "--json"],
    ["prune", "--dry-run", "--json"],
    ["backup", "--json"],
    ["snapshot", "--json"],
    ["session-start"],
    ["session-stop"],
    ["restore", "{pre}", "--dry-run", "--json"],
    ["restore", "{pre}", "--yes", "--json"],
]
NORMAL_RC = {"confirm": 1}  # no unit files here: confirm FAILs its hook items, and says so in its JSON

# condition: (the config key whose directory is broken, how, {command: the exit code it must fail with}).
# Every other command must do its normal job (exit 0), or fail the same clear way.
CONDITIONS: dict[str, tuple[str, str, dict[str, int]]] = {
    "healthy (positive control)": ("", "", {}),
    "backup_dir under a file": (
        "backup_dir",
        "under-a-file",
        {"list": 2, "backup": 2, "drill": 2, "diff": 2, "prune": 2, "restore": 2, "restore --yes": 2},
    ),
    "exports_dir under a file": ("exports_dir", "under-a-file", {"snapshot": 2, "health": 2}),
    "state_dir under a file": (
        "state_dir",
        "under-a-file",
        {"backup": 2, "snapshot": 2, "session-start": 2, "session-stop": 2, "restore --yes": 2},
    ),
    "the DB's directory missing": (
        "db_dir",
        "missing",
        {"check": 6, "session-start": 6, "backup": 1, "snapshot": 1, "restore": 2, "restore --yes": 2},
    ),
    "backup_dir read-only": ("backup_dir", "read-only", {"backup": 1, "restore --yes": 1}),
    "exports_dir read-only": ("exports_dir", "read-only", {"snapshot": 1}),
    "state_dir read-only": (
        "state_dir",
        "read-only",
        {"backup": 1, "snapshot": 1, "session-start": 1, "session-stop": 1, "restore --yes": 1},
    ),
    "backup_dir full": ("backup_dir", "full", {"backup": 1, "restore --yes": 1}),
    "exports_dir full": ("exports_dir", "full", {"snapshot": 1}),
    "state_dir full": ("state_dir", "full", {"session-start": 1}),
    "as a user who cannot write backup_dir, exports_dir or the DB's directory": (
        "backup_dir",
        "not-writable",
        {"backup": 1, "snapshot": 1, "restore --yes": 1},
    ),
}


def mount_tmpfs(path: Path, options: str) -> None:
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")


@pytest.fixture
def world_base() -> Iterator[Path]:
    """A base directory every user can traverse (pytest's own tmp dirs are root-only), unmounted and removed after."""
    base = Path(tempfile.mkdtemp(prefix="neo-db-paths-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines() if line.split()[1].startswith(str(base))]
    for mnt in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", mnt], check=False)
    shutil.rmtree(base, ignore_errors=True)


def populated_runtime(base: Path) -> Runtime:
    root = base / "runtime"
    (root / "db").mkdir(parents=True)
    rt = Runtime(root, base / "db_safeguards.yml")
    rt.write_config(
        db_path=str(root / "db" / "neo_live_stage1.db"),
        backup_dir=str(root / "backups"),
        exports_dir=str(root / "exports"),
        state_dir=str(root / "state"),
    )
    make_db(rt.db)
    assert rt.cli("session-start").rc == 0
    assert rt.stop().rc == 0
    assert rt.cli("drill").rc == 0
    return rt


def break_dir(rt: Runtime, base: Path, key: str, how: str) -> list[Path]:
    """Make the directory of `key` unusable in the way `how` says; returns the paths an error may name."""
    if how == "under-a-file":
        (base / "a-file").write_text("not a directory\n")
        broken = base / "a-file" / "sub"
        rt.write_config(**{key: str(broken)})
        return [broken]
    if how == "missing":
        shutil.rmtree(rt.db.parent)
        return [rt.db.parent]
    if how == "not-writable":
        subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
        for writable in (rt.state, rt.exports / "sessions"):
            subprocess.run(["chown", "-R", "nobody", str(writable)], check=True)
        return [rt.backups, rt.exports, rt.db.parent]
    target = Path(rt.settings[key])
    saved = base / "saved"
    shutil.move(str(target), saved)
    target.mkdir()
    # 64 KiB of room beyond what the directory holds (the backups must stay readable), then filled or frozen.
    held = sum(p.stat().st_size + 4096 for p in saved.rglob("*"))
    mount_tmpfs(target, f"size={held + 64 * 1024},mode=0755")
    subprocess.run(["cp", "-a", f"{saved}/.", str(target)], check=False, capture_output=True)
    if how == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
    elif how == "full":
        subprocess.run(["dd", "if=/dev/zero", f"of={target}/filler", "bs=4k"], check=False, capture_output=True)
    return [target]


def run_as(rt: Runtime, user: str | None, argv: list[str], **extra: str) -> Result:
    cmd = [SYSTEM_PYTHON, str(NEO_DB), *argv]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    proc = subprocess.run(cmd, env=rt.env(**extra), capture_output=True, text=True, check=False, timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def temp_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob(".tmp-*") if "snapshots" not in p.parts or p.name != "latest")


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_an_unusable_directory_or_a_full_disk_gets_a_clear_error_naming_the_path(world_base: Path, condition: str) -> None:
    key, how, must_fail = CONDITIONS[condition]
    rt = populated_runtime(world_base)
    [pre] = rt.files("pre_session")
    broken = break_dir(rt, world_base, key, how) if how else []
    user = "nobody" if how == "not-writable" else None
    if user:
        rt.config_path.chmod(0o644)
    for template in COMMANDS:
        argv = [a.format(pre=pre.stem) for a in template]
        name = argv[0] + (" --yes" if "--yes" in argv else "")
        live_before = rt.db.read_bytes() if rt.db.exists() else None
        r = run_as(
            rt, user, argv, **({"EXIT_CODE": "exited", "EXIT_STATUS": "0", "SERVICE_RESULT": "success"} if name == "session-stop" else {})
        )
        where = f"{condition}: neo-db {' '.join(argv)} -> {r.rc}\n{r.err}"
        assert "internal error" not in r.err and "Traceback" not in r.err, where
        expected = must_fail.get(name, NORMAL_RC.get(name, 0))
        assert r.rc == expected, where
        if r.rc not in (0, NORMAL_RC.get(name, 0)):
            assert any(str(p) in r.err for p in broken), f"the error names {broken}: {where}"
            assert "next: " in r.err, f"the error says what to do: {where}"
        if "--json" in argv:
            doc = json.loads(r.out)  # JSON on stdout, failure or not
            if r.rc not in (0, NORMAL_RC.get(name, 0)):
                assert (doc["result"], doc["rc"]) == ("fail", r.rc), doc
                assert isinstance(doc["error"], str) and any(str(p) in doc["error"] for p in broken), doc
                assert isinstance(doc["hint"], str) and doc["hint"], doc
        if not (name == "restore --yes" and r.rc == 0):
            assert (rt.db.read_bytes() if rt.db.exists() else None) == live_before, f"the live DB was touched: {where}"
    if how not in ("read-only",):
        assert temp_files(rt.root) == [], "nothing half-written is left behind"


def test_a_restore_that_cannot_write_its_quarantine_leaves_every_live_file_in_place(
    runtime: Runtime, writer_factory: Callable[..., Writer]
) -> None:
    """abnormal_stop/ on another filesystem (a real tmpfs) with room for the DB but not its -wal:
    the quarantine is copied, not renamed. A failure half-way must leave the live DB, -wal and -shm
    where they were, byte for byte, and nothing half-written under any name."""
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    assert runtime.stop().rc == 0
    [pre] = runtime.files("pre_session")
    w = writer_factory(runtime.db, rate=0)
    w.wait_commits(400)
    w.kill(signal.SIGKILL)  # a crashed engine: a hot -wal and a -shm stay behind
    live = {p.name: p.read_bytes() for p in runtime.db.parent.iterdir()}
    db_size, wal_size = (len(live[n]) for n in ("neo_live_stage1.db", "neo_live_stage1.db-wal"))
    assert wal_size > 64 * 1024, "the -wal must not fit in the room left"
    quarantine_fs = runtime.backups / "abnormal_stop"
    quarantine_fs.mkdir(exist_ok=True)
    mount_tmpfs(quarantine_fs, f"size={db_size + 32 * 1024},mode=0750")
    try:
        r = runtime.cli("restore", pre.stem, "--yes", "--json")
        assert "internal error" not in r.err and "Traceback" not in r.err, r.err
        # Refused by restore's free-space check before anything moves (the copy that fails half-way
        # is tests/test_restore.py's); either way the path is named and nothing is lost.
        assert r.rc == 1 and f"not enough space in {quarantine_fs}" in r.err and "nothing was changed" in r.err, r.err
        assert r.json["result"] == "fail" and r.json["rc"] == 1
        assert {p.name: p.read_bytes() for p in runtime.db.parent.iterdir()} == live, "the live files are where they were"
        assert list(quarantine_fs.iterdir()) == [], "nothing half-written is left in abnormal_stop/"
    finally:
        subprocess.run(["umount", "-l", str(quarantine_fs)], check=False)
    # Positive control: with room for the quarantine, the same restore goes through.
    ok = runtime.cli("restore", pre.stem, "--yes", "--json")
    assert ok.rc == 0, ok.err
    assert {p.name for p in Path(ok.json["quarantine"]).iterdir()} >= {"neo_live_stage1.db", "neo_live_stage1.db-wal"}
    assert (Path(ok.json["quarantine"]) / "neo_live_stage1.db-wal").read_bytes() == live["neo_live_stage1.db-wal"]


# ---- JSON: strict, one type per field ----

ISO_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"
TIMESTAMPS = {"created", "started", "finished", "at", "taken", "started_at", "stopped_at", "restored_at", "timestamp", "copied"}
DATA_MAPS = {"row_counts", "tables", "tables_added", "tables_removed", "files", "sources", "phases", "db_safeguards"}


def strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def field_types(doc: object, where: str, seen: dict[str, dict[str, set[str]]]) -> None:
    """Record the JSON type of every field, by name, wherever it appears (not inside maps keyed by data)."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            kind = {bool: "bool", int: "int", float: "number", str: "str", list: "list", dict: "object"}.get(type(value), "null")
            seen.setdefault(key, {}).setdefault(kind, set()).add(f"{where}/{key}")
            if key in DATA_MAPS and isinstance(value, dict):
                for inner in value.values():
                    field_types(inner, f"{where}/{key}/*", seen)
            else:
                field_types(value, f"{where}/{key}", seen)
    elif isinstance(doc, list):
        for item in doc:
            field_types(item, f"{where}[]", seen)


def test_every_json_output_is_strict_json_with_one_type_per_field(runtime: Runtime) -> None:
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    assert runtime.stop().rc == 0
    assert runtime.cli("drill").rc == 0
    # NaN read back from damaged state files must not reach the output (it is not JSON).
    drill_doc = json.loads((runtime.state / "last_drill.json").read_text())
    drill_doc["seconds"] = float("nan")
    (runtime.state / "last_drill.json").write_text(json.dumps(drill_doc))
    health_path = runtime.exports / "sessions" / "S001" / "db_health.json"
    block = json.loads(health_path.read_text())
    block["db_health"]["timings"]["pre_backup_seconds"] = float("inf")
    health_path.write_text(json.dumps(block))
    [pre] = runtime.files("pre_session")
    stop_env = {"EXIT_CODE": "exited", "EXIT_STATUS": "0", "SERVICE_RESULT": "success"}
    docs: dict[str, object] = {}
    for argv, env in (
        (["health", "--json"], {}),
        (["session-start", "--json"], {}),
        (["session-stop", "--json"], stop_env),
        (["check", "--json"], {}),
        (["backup", "--json"], {}),
        (["snapshot", "--json"], {}),
        (["list", "--json"], {}),
        (["prune", "--dry-run", "--json"], {}),
        (["prune", "--json"], {}),
        (["drill", "--json"], {}),
        (["diff", "--session", "S001", "--json"], {}),
        (["confirm", "--json"], {}),
        (["config", "show", "--json"], {}),
        (["restore", pre.stem, "--dry-run", "--json"], {}),
        (["restore", pre.stem, "--yes", "--json"], {}),
        (["health", "--session", "S999", "--json"], {}),  # failures are JSON too
    ):
        r = runtime.cli(*argv, env=runtime.env(**env))
        assert r.out.strip(), (argv, r.err)
        docs[" ".join(argv)] = strict_json(r.out)
    flip_page_byte(runtime.db)
    r = runtime.cli("check", "--json")
    assert r.rc == 3
    docs["check --json (corrupt)"] = failed = strict_json(r.out)
    assert isinstance(failed, dict) and (failed["result"], failed["rc"]) == ("fail", 3) and FLAG049 in failed["error"]

    health = docs["health --json"]
    assert isinstance(health, dict)
    assert health["db_health"]["last_drill"]["seconds"] is None and health["db_health"]["timings"]["pre_backup_seconds"] is None

    seen: dict[str, dict[str, set[str]]] = {}
    for name, doc in docs.items():
        field_types(doc, name, seen)
    # FLAG-049 fixes db_health.integrity_check as the string "ok" (or what failed); everywhere else,
    # including db_health.gate, it is the list of lines integrity_check returned.
    flag049 = {w for w in seen["integrity_check"].get("str", set()) if w.endswith("db_health/integrity_check")}
    seen["integrity_check"]["str"] = seen["integrity_check"].get("str", set()) - flag049
    assert flag049, "the db_health block keeps FLAG-049's string"
    mixed = {key: {k: sorted(v)[:3] for k, v in kinds.items() if v} for key, kinds in seen.items()}
    mixed = {key: kinds for key, kinds in mixed.items() if len(set(kinds) - {"null"}) > 1}
    assert mixed == {}, f"fields with more than one type across commands: {mixed}"
    for key in ("session", "size", "age_seconds", "rc", "result", "seconds", "sha256"):
        assert key in seen, key
    assert set(seen["session"]) <= {"str", "null"} and set(seen["size"]) == {"int"} and set(seen["result"]) == {"str"}
    assert set(seen["rc"]) == {"int"} and set(seen["exit_code"]) <= {"str", "null"}, "rc is ours, exit_code systemd's"
    assert set(seen["age_seconds"]) <= {"int", "null"} and set(seen["seconds"]) <= {"number", "null"}

    def timestamps(doc: object) -> Iterator[tuple[str, object]]:
        if isinstance(doc, dict):
            for key, value in doc.items():
                if key in TIMESTAMPS:
                    yield key, value
                yield from timestamps(value)
        elif isinstance(doc, list):
            for item in doc:
                yield from timestamps(item)

    stamps = [(k, v) for doc in docs.values() for k, v in timestamps(doc)]
    assert len({k for k, _ in stamps}) >= 6, stamps
    bad = [(k, v) for k, v in stamps if v is not None and not (isinstance(v, str) and re.match(ISO_UTC, v))]
    assert bad == [], f"timestamps that are not ISO 8601 UTC strings: {bad}"
