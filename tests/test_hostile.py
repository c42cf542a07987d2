"""Found by attacking the issue 12 work as a hostile user and an unlucky machine would.

Each test is a regression test for one finding, on real files and real processes, with
its positive control in the same test.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import NEO_DB, ROOT, Runtime, make_db

# ---- the supported interpreters: Python 3.10 to 3.13 (Ubuntu 22.04 ships 3.10) ----


def _interpreter(minor: int) -> str | None:
    """A working python3.<minor> on this machine (PATH or pyenv), or None."""
    candidates = [shutil.which(f"python3.{minor}") or ""]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3")))
    for exe in filter(None, candidates):
        try:
            probe = [exe, "-c", "import sys; print(sys.version_info[1])"]
            out = subprocess.run(probe, check=False, capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == str(minor):
            return exe
    return None


def _yaml_path(exe: str, tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH giving exe PyYAML (the pure-Python part of this one) when it has none of its own."""
    if subprocess.run([exe, "-c", "import yaml"], check=False, capture_output=True).returncode == 0:
        return {}
    dest = tmp_path / "pyyaml"
    shutil.copytree(Path(yaml.__file__).parent, dest / "yaml", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return {"PYTHONPATH": str(dest)}


def test_no_datetime_utc_alias_in_the_code() -> None:
    """datetime.UTC is Python 3.11+: on 3.10 every command that dates something dies with 'internal error'."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "scripts" / "neo_db").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\b(dt|datetime)\.UTC\b", line)
    ]
    assert not offenders, "datetime.UTC does not exist on Python 3.10; use dt.timezone.utc:\n" + "\n".join(offenders)
    # Positive control: the pattern does find the alias where it is.
    assert re.search(r"\b(dt|datetime)\.UTC\b", "x = dt.datetime.now(dt.UTC)")


@pytest.mark.parametrize("minor", [10, 11, 12, 13])
def test_a_session_lifecycle_runs_on_each_supported_python(runtime: Runtime, tmp_path: Path, minor: int) -> None:
    exe = _interpreter(minor)
    if exe is None:
        pytest.skip(f"no python3.{minor} on this machine")
    make_db(runtime.db)
    env = {**runtime.env(), **_yaml_path(exe, tmp_path)}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, str(NEO_DB), *args], check=False, capture_output=True, text=True, env={**env, **extra}, timeout=120)

    steps = [
        ("check",),
        ("session-start",),
        ("session-stop",),
        ("backup", "--phase", "manual"),
        ("list", "--json"),
        ("prune", "--dry-run"),
        ("health",),
        ("drill",),
        ("snapshot",),
        ("diff", "--session", "S001"),
    ]
    for args in steps:
        extra = {"SERVICE_RESULT": "success", "EXIT_CODE": "exited", "EXIT_STATUS": "0"} if args[0] == "session-stop" else {}
        proc = run(*args, **extra)
        assert proc.returncode == 0, f"python3.{minor} ({exe}): neo-db {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
        assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    names = [b["name"] for b in yaml.safe_load(run("list", "--json").stdout)["backups"] if b["phase"] == "pre"]
    proc = run("restore", names[0], "--yes")
    assert proc.returncode == 0, proc.stderr


# ---- a trailing newline slipped through every '^...$' check: '$' also matches before a final '\n' ----


def test_a_session_id_with_a_trailing_newline_is_refused_and_makes_no_invisible_backup(runtime: Runtime) -> None:
    make_db(runtime.db)
    bad = runtime.cli("backup", "--phase", "manual", "--session", "M1\n")
    assert bad.rc == 2, bad.err
    assert "invalid session ID" in bad.err and "Traceback" not in bad.err
    assert runtime.files("manual") == [], "a backup was written under a name with a newline, which list/prune/restore never see"
    # Positive control: the same ID without the newline is taken, and list shows its backup.
    good = runtime.cli("backup", "--phase", "manual", "--session", "M1")
    assert good.rc == 0, good.err
    assert [b["session"] for b in runtime.cli("list", "--json").json["backups"]] == ["M1"]


def test_a_session_prefix_with_a_trailing_newline_is_a_config_error(runtime: Runtime) -> None:
    runtime.write_config(session_prefix="S\n")
    bad = runtime.cli("config", "validate", str(runtime.config_path))
    assert bad.rc == 2, bad.out + bad.err
    assert "session_prefix" in bad.err
    runtime.write_config(session_prefix="S")
    good = runtime.cli("config", "validate", str(runtime.config_path))
    assert good.rc == 0, good.err


# ---- a symlinked db_path that leads into exports_dir: readers could read the live DB ----


def test_a_symlinked_db_path_leading_into_exports_dir_is_refused(runtime: Runtime) -> None:
    published = runtime.exports / "pub"
    published.mkdir(parents=True)
    make_db(published / "real.db")
    runtime.db.symlink_to(published / "real.db")
    bad = runtime.cli("config", "validate", str(runtime.config_path))
    assert bad.rc == 2, bad.out + bad.err
    assert "db_path" in bad.err and "exports_dir" in bad.err and str(published) in bad.err, bad.err
    assert runtime.cli("check").rc == 2  # every command refuses the config, nothing opens the DB
    # Positive control: the same symlink leading to a DB outside exports_dir is fine.
    elsewhere = runtime.root / "realdb"
    elsewhere.mkdir()
    (published / "real.db").rename(elsewhere / "real.db")
    runtime.db.unlink()
    runtime.db.symlink_to(elsewhere / "real.db")
    good = runtime.cli("config", "validate", str(runtime.config_path))
    assert good.rc == 0, good.err
    assert runtime.cli("check").rc == 0
