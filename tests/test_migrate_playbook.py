"""ansible/migrate.yml on the controller: the preflight and the -e checks, before anything is sent.

The "box" is this machine through a local connection: a runtime tree with a config, and the
real neo-db behind a wrapper that logs every call the playbook makes on the box side. The
source is checked on the controller first, so a refused source never reaches the box (the log
stays empty); the positive controls run the same play with --check, which reads the box
(`neo-db import --show`) and prints the plan. Installing (stopping the engine unit, the gate as
the service user) needs systemd and a service user: molecule's verify does that on the stand-in
(molecule/default/tasks/migrate.yml).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import FLAG049, NEO_DB, ROOT, SYSTEM_PYTHON, Runtime, make_db

pytestmark = pytest.mark.ansible
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def tree_sums(root: Path) -> dict[str, str]:
    """sha256 of every file under root (the box's runtime tree), by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def corrupt(path: Path) -> None:
    """Page 2 gets an invalid b-tree page type (as the molecule checklist does to the live DB)."""
    with path.open("r+b") as f:
        f.seek(16)
        psize = int.from_bytes(f.read(2), "big")
        f.seek(psize)
        f.write(b"\x07")


@dataclass
class Box:
    runtime: Runtime
    inventory: Path
    calls: Path

    def box_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def play(self, *args: str) -> tuple[int, str]:
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
        proc = subprocess.run(
            [ANSIBLE_PLAYBOOK, "-i", str(self.inventory), str(ROOT / "ansible" / "migrate.yml"), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
            check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def box(tmp_path: Path, runtime: Runtime) -> Box:
    calls = tmp_path / "box-calls.log"
    wrapper = tmp_path / "box-neo-db"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nNEO_DB_CONFIG={runtime.config_path} exec {SYSTEM_PYTHON} {NEO_DB} "$@"\n')
    wrapper.chmod(0o755)
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_become": False,
        "neo_safeguards_bin": str(wrapper),
        "neo_safeguards_db_path": str(runtime.db),
        "neo_runtime_root": str(runtime.root),
    }
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"neo_vps": {"hosts": {"neo-live-1": host}}}))
    return Box(runtime, inventory, calls)


def test_a_corrupt_source_is_refused_on_the_controller_and_a_good_one_is_planned(box: Box, tmp_path: Path) -> None:
    src = tmp_path / "controller"
    src.mkdir()
    good, bad = src / "neo_live_stage1.db", src / "bad" / "neo_live_stage1.db"
    bad.parent.mkdir()
    make_db(good, rows=120)
    make_db(bad, rows=120)
    corrupt(bad)
    before = tree_sums(box.runtime.root)
    sources_before = tree_sums(src)

    rc, out = box.play("-e", f"source={bad}")
    assert rc != 0, out
    assert FLAG049 in out, out[-3000:]
    assert "Move forward from a backup" in out and "neo_live_stage1.db.bak.YYYYMMDDTHHMMSSZ" in out, out[-3000:]
    assert "nothing was sent to any box" in out, out[-3000:]
    assert box.box_calls() == [], "a refused source must never reach the box"
    assert tree_sums(box.runtime.root) == before

    # Positive control: the same play with a sound source reaches the box (read-only) and plans.
    rc, out = box.play("--check", "-e", f"source={good}", "-e", "next_session=S051")
    assert rc == 0, out[-3000:]
    assert box.box_calls() == ["import --show --json"], box.box_calls()
    assert "trades=120" in out and f"would install {good}" in out and "next session S051" in out, out[-3000:]
    assert tree_sums(box.runtime.root) == before, "--check changes nothing on the box"
    assert tree_sums(src) == sources_before, "the preflight never writes next to the source"


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ({"next_session": "51"}, "next_session=51"),
        ({"next_session": "S5x"}, "next_session=S5x"),
        ({"replace": "maybe"}, "replace=maybe"),
        ({"source": ""}, "-e source=PATH"),
    ],
)
def test_bad_e_values_are_refused_before_the_box_is_asked(box: Box, tmp_path: Path, extra: dict[str, str], expect: str) -> None:
    good = tmp_path / "neo_live_stage1.db"
    make_db(good, rows=10)
    args = {"source": str(good), **extra}
    rc, out = box.play("--check", *[a for k, v in args.items() for a in ("-e", f"{k}={v}")])
    assert rc != 0, out[-3000:]
    assert expect in out and "Bad -e values" in out, out[-3000:]
    assert box.box_calls() == []
    # Positive control: the well-formed values pass the same checks and reach the box.
    rc, out = box.play("--check", "-e", f"source={good}", "-e", "next_session=S051", "-e", "replace=true")
    assert rc == 0, out[-3000:]
    assert box.box_calls() == ["import --show --json"]


def test_a_missing_source_and_a_non_sqlite_file_are_refused_naming_the_path(box: Box, tmp_path: Path) -> None:
    missing, junk = tmp_path / "nope.db", tmp_path / "notes.db"
    junk.write_text("not a database\n" * 100)
    for path in (missing, junk):
        rc, out = box.play("-e", f"source={path}")
        assert rc != 0, out[-3000:]
        # The CLI's own message (after the playbook's prefix) names the path.
        assert re.search(rf"preflight exit 2\): .*{re.escape(str(path))}", out), out[-3000:]
        assert "Traceback" not in out and "invalid choice" not in out
    assert box.box_calls() == []


def test_an_existing_live_db_is_refused_without_replace_and_planned_with_it(box: Box, tmp_path: Path) -> None:
    make_db(box.runtime.db, rows=30)
    good = tmp_path / "neo_live_stage1.db"
    make_db(good, rows=40)
    before = tree_sums(box.runtime.root)
    rc, out = box.play("--check", "-e", f"source={good}")
    assert rc != 0, out[-3000:]
    assert "already has a live DB" in out and "-e replace=true" in out, out[-3000:]
    rc, out = box.play("--check", "-e", f"source={good}", "-e", "replace=true")
    assert rc == 0, out[-3000:]
    assert "quarantining the current live DB" in out, out[-3000:]
    assert tree_sums(box.runtime.root) == before
    assert json.loads(box.runtime.cli("import", "--show", "--json").out)["live_db_exists"] is True


def test_a_next_session_not_above_the_box_is_refused_and_a_higher_one_planned(box: Box, tmp_path: Path) -> None:
    make_db(box.runtime.db, rows=30)
    started = box.runtime.cli("session-start", "--session", "S050")
    assert started.rc == 0, started.err
    assert box.runtime.stop().rc == 0
    assert json.loads(box.runtime.cli("import", "--show", "--json").out)["highest_session"] == "S050"
    good = tmp_path / "neo_live_stage1.db"
    make_db(good, rows=40)
    before = tree_sums(box.runtime.root)
    for lower in ("S050", "S007"):
        rc, out = box.play("--check", "-e", f"source={good}", "-e", "replace=true", "-e", f"next_session={lower}")
        assert rc != 0, out[-3000:]
        assert f"next_session={lower} is not above the highest session" in out and "(S050)" in out and "e.g. S051" in out, out[-3000:]
    # Positive control: the next one up is planned.
    rc, out = box.play("--check", "-e", f"source={good}", "-e", "replace=true", "-e", "next_session=S051")
    assert rc == 0, out[-3000:]
    assert "next session S051" in out, out[-3000:]
    assert tree_sums(box.runtime.root) == before


def test_more_than_one_target_host_is_refused(box: Box, tmp_path: Path) -> None:
    good = tmp_path / "neo_live_stage1.db"
    make_db(good, rows=10)
    inv = yaml.safe_load(box.inventory.read_text())
    inv["neo_vps"]["hosts"]["neo-live-2"] = dict(inv["neo_vps"]["hosts"]["neo-live-1"])
    box.inventory.write_text(yaml.safe_dump(inv))
    rc, out = box.play("--check", "-e", f"source={good}")
    assert rc != 0, out[-3000:]
    assert "same DB on 2 hosts" in out and "--limit HOST" in out, out[-3000:]
    assert box.box_calls() == []
    # Positive control: limited to one host, the same inventory plans.
    rc, out = box.play("--check", "-e", f"source={good}", "--limit", "neo-live-1")
    assert rc == 0, out[-3000:]
    assert box.box_calls() == ["import --show --json"]


def test_a_rerun_removes_only_the_staged_copies_a_killed_run_left_and_check_mode_removes_nothing(box: Box, tmp_path: Path) -> None:
    # Hostile review: the cleanup's glob (.migrate-*.staging) also took a file an operator named
    # .migrate-notes.staging in the DB directory; only the play's own names (.migrate-<16 hex>.staging,
    # -wal, -shm) are its copies.
    good = tmp_path / "neo_live_stage1.db"
    make_db(good, rows=40)
    done = box.runtime.cli("import", str(good), "--next-session", "S051")  # as the earlier (killed) run got to
    assert done.rc == 0, done.err
    db_dir = box.runtime.db.parent
    stale = [db_dir / f".migrate-0123456789abcdef.staging{s}" for s in ("", "-wal", "-shm")]
    keep = [db_dir / ".migrate-notes.staging", db_dir / ".migrate-notes.staging.txt", db_dir / ".migrate-0123456789ABCDEF.staging.bak"]
    for p in stale + keep:
        p.write_text("x")
    link = db_dir / ".migrate-fedcba9876543210.staging"
    link.symlink_to(box.runtime.db)
    live_sha = hashlib.sha256(box.runtime.db.read_bytes()).hexdigest()
    before = tree_sums(box.runtime.root)
    rc, out = box.play("--check", "-e", f"source={good}", "-e", "next_session=S051")
    assert rc == 0, out[-3000:]
    assert tree_sums(box.runtime.root) == before, "--check removes nothing"
    assert all(p.exists() for p in stale)
    rc, out = box.play("-e", f"source={good}", "-e", "next_session=S051")
    assert rc == 0, out[-3000:]
    flat = " ".join(out.split())  # the YAML callback folds long messages
    assert "nothing to do" in flat and "next_session=S051 is not applied on a rerun" in flat, out[-3000:]
    assert not any(p.exists() for p in stale), out[-3000:]
    assert all(p.exists() for p in keep), [p.name for p in keep if not p.exists()]
    assert link.is_symlink() and hashlib.sha256(box.runtime.db.read_bytes()).hexdigest() == live_sha


def test_a_killed_runs_staged_legacy_backups_are_not_imported_by_the_next_run(box: Box, tmp_path: Path) -> None:
    # Hostile review: a run killed while staging legacy_dir=A (say, the wrong directory, noticed and
    # interrupted) left A's copies in <runtime>/.migrate-legacy; the next run with legacy_dir=B
    # staged B beside them and imported A's backups as well.
    good = tmp_path / "neo_live_stage1.db"
    make_db(good, rows=40)
    assert box.runtime.cli("import", str(good)).rc == 0  # the rerun path: no engine to stop here
    left = box.runtime.root / ".migrate-legacy"
    left.mkdir(mode=0o700)
    make_db(left / "neo_live_stage1.db.bak.20250101T000000Z", rows=7)  # from the killed run's directory A
    legacy = tmp_path / "windows-backups"
    legacy.mkdir()
    make_db(legacy / "neo_live_stage1.db.bak.20260421T165223Z", rows=60)
    rc, out = box.play("-e", f"source={good}", "-e", f"legacy_dir={legacy}")
    assert rc == 0, out[-3000:]
    listed = json.loads(box.runtime.cli("list", "--json").out)["backups"]
    legacy_names = sorted(b["name"] for b in listed if b["phase"] == "legacy")
    assert legacy_names == ["neo_live_stage1_legacy_2026-04-21T16-52-23Z"], legacy_names
    assert not left.exists()
