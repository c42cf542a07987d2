"""The snapshots layout (AtoCore): timed snapshots/<timestamp>/ directories with extra files,
and the same list, prune, drill, restore and confirm as NEO's phase backups (issue 8)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pwd
import sqlite3
from pathlib import Path

import pytest

from conftest import Runtime, count_rows, install_neo_db, make_db

NOTES = ["Chroma is not hot-copied: rebuild it, or take a cold snapshot with ansible/atocore-chroma-snapshot.yml"]


@pytest.fixture
def atocore(tmp_path: Path) -> Runtime:
    """AtoCore's Dalidou paths, rooted in tmp_path: data/db/atocore.db, config/project-registry.json, backups/."""
    root = tmp_path / "srv" / "storage" / "atocore"
    (root / "data" / "db").mkdir(parents=True)
    (root / "config").mkdir()
    rt = Runtime(root, tmp_path / "db_safeguards.yml")
    rt.write_config(
        db_path=str(root / "data" / "db" / "atocore.db"),
        backup_dir=str(root / "backups"),
        exports_dir=str(root / "exports"),
        state_dir=str(root / "state"),
        engine_unit="atocore",
        layout="snapshots",
        extra_files=[{"path": str(root / "config" / "project-registry.json"), "dest": "config/project-registry.json"}],
        snapshot_notes=NOTES,
        hetzner_fact_path=None,
        backup_timer="neo-db-archive.timer",
        unit_dir=str(tmp_path / "units"),
        metrics_textfile_dir=str(tmp_path),  # issue 13: confirm wants fresh metrics and a notifier choice
        notify_explicitly_off=True,
    )
    make_db(rt.db)
    (root / "config" / "project-registry.json").write_text(json.dumps({"projects": [{"id": "p1", "name": "demo"}]}))
    return rt


def snapshots(rt: Runtime) -> list[Path]:
    d = rt.backups / "snapshots"
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else []


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_timed_backup_writes_one_complete_snapshot_directory(atocore: Runtime) -> None:
    r = atocore.cli("backup", "--trigger", "timer", "--json")
    assert r.rc == 0, r.err
    [snap] = snapshots(atocore)
    assert Path(r.json["path"]) == snap
    dt.datetime.strptime(snap.name, "%Y-%m-%dT%H-%M-%SZ")  # the directory is the timestamp
    assert sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file()) == [
        "backup-metadata.json",
        "config/project-registry.json",
        "db/atocore.db",
    ]
    meta = json.loads((snap / "backup-metadata.json").read_text())
    assert meta["integrity_check"] == ["ok"] and meta["trigger"] == "timer" and meta["notes"] == NOTES
    assert meta["sources"] == {
        "db/atocore.db": str(atocore.db),
        "config/project-registry.json": str(atocore.root / "config" / "project-registry.json"),
    }
    for rel, rec in meta["files"].items():
        assert sha(snap / rel) == rec["sha256"] and (snap / rel).stat().st_size == rec["size"], rel
    assert meta["row_counts"] == {"trades": 200} and count_rows(snap / "db" / "atocore.db") == 200
    assert (snap / "config" / "project-registry.json").read_bytes() == (atocore.root / "config" / "project-registry.json").read_bytes()
    assert meta["timestamp"] == dt.datetime.strptime(snap.name, "%Y-%m-%dT%H-%M-%SZ").strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_missing_registry_is_recorded_and_the_db_is_still_snapshotted(atocore: Runtime) -> None:
    (atocore.root / "config" / "project-registry.json").unlink()
    r = atocore.cli("backup", "--json")
    assert r.rc == 0, r.err
    meta = r.json["manifest"]
    assert list(meta["files"]) == ["db/atocore.db"]
    assert meta["missing"] == [
        {"path": "config/project-registry.json", "source": str(atocore.root / "config" / "project-registry.json"), "why": "does not exist"}
    ]


def test_list_drill_and_confirm_see_snapshots_like_backups(atocore: Runtime, tmp_path: Path) -> None:
    assert atocore.cli("backup").rc == 0
    listed = atocore.cli("list", "--json").json["backups"]
    assert [(b["phase"], b["status"]) for b in listed] == [("timed", "verified")]
    assert listed[0]["snapshot_dir"] == str(snapshots(atocore)[0])
    drill = atocore.cli("drill", "--json")
    assert drill.rc == 0, drill.err
    assert drill.json["phases"]["timed"]["result"] == "pass"
    assert "the sha256 of all 2 files in backup-metadata.json match" in drill.json["phases"]["timed"]["detail"]
    items = {i["item"]: i for i in atocore.cli("confirm", "--json").json["items"]}
    assert "pre/post-session backups are wired" not in items and "Hetzner backups are on" not in items
    assert items["the last restore drill passed"]["result"] == "PASS"
    # No timer installed in this temp unit_dir and no prune run yet: the timed snapshot and retention items fail and say why.
    assert items["retention is defined"]["result"] == "FAIL"
    assert any("neo-db-prune.timer: NOT enabled" in e for e in items["retention is defined"]["evidence"])
    assert items["timed snapshots are wired"]["result"] == "FAIL"
    assert any("not enabled" in e for e in items["timed snapshots are wired"]["evidence"])
    # Installed, enabled and Persistent (the files the role writes; the role makes backups/ 0750): every item passes.
    os.chmod(atocore.backups, 0o750)  # noqa: S103  (what the role sets: owner rwx, group rx)
    units = Path(atocore.settings["unit_dir"])
    neo_db = install_neo_db(tmp_path)
    atocore.write_config(neo_db_bin=str(neo_db))
    (units / "timers.target.wants").mkdir(parents=True)
    (units / "neo-db-archive.service").write_text(
        f"[Service]\nType=oneshot\nUser={pwd.getpwuid(os.getuid()).pw_name}\nExecStart={neo_db} backup --trigger timer\n"
    )
    (units / "neo-db-archive.timer").write_text("[Timer]\nOnCalendar=*-*-* 03:15:00\nPersistent=true\n")
    (units / "timers.target.wants" / "neo-db-archive.timer").symlink_to(units / "neo-db-archive.timer")
    (units / "neo-db-prune.timer").write_text("[Timer]\nOnCalendar=daily\nPersistent=true\n")
    (units / "timers.target.wants" / "neo-db-prune.timer").symlink_to(units / "neo-db-prune.timer")
    assert atocore.cli("prune").rc == 0  # what neo-db-prune.timer runs: its outcome is recorded
    # AtoCore never migrates: until its DB is recorded as its own origin, that item fails and says how.
    origin = {i["item"]: i for i in atocore.cli("confirm", "--json").json["items"]}["the live DB's origin is recorded"]
    assert origin["result"] == "FAIL" and any("neo-db import --adopt" in e for e in origin["evidence"]), origin
    adopt = atocore.cli("import", "--adopt", "--json")
    assert adopt.rc == 0 and adopt.json["changed"] is True, adopt.err
    confirm = atocore.cli("confirm", "--json")
    assert confirm.rc == 0, confirm.out
    wired = {i["item"]: i for i in confirm.json["items"]}["timed snapshots are wired"]
    assert "OnCalendar=['*-*-* 03:15:00'] Persistent=['true']" in wired["evidence"][0]


def test_the_drill_catches_a_changed_registry_in_a_snapshot(atocore: Runtime) -> None:
    assert atocore.cli("backup").rc == 0
    [snap] = snapshots(atocore)
    reg = snap / "config" / "project-registry.json"
    os.chmod(reg, 0o640)
    reg.write_text('{"projects": []}')
    drill = atocore.cli("drill", "--json")
    assert drill.rc == 1
    assert "config/project-registry.json: sha256 differs" in drill.json["phases"]["timed"]["detail"]


def test_restore_takes_a_snapshot_by_name_or_by_any_path_inside_it(atocore: Runtime) -> None:
    assert atocore.cli("backup").rc == 0
    [snap] = snapshots(atocore)
    conn = sqlite3.connect(atocore.db)
    conn.execute("DELETE FROM trades WHERE id > 50")
    conn.commit()
    conn.close()
    assert count_rows(atocore.db) == 50
    dry = atocore.cli("restore", str(snap / "db" / "atocore.db"), "--dry-run")
    assert dry.rc == 0 and snap.name in dry.out + dry.err, dry.err
    r = atocore.cli("restore", snap.name, "--yes", "--json")
    assert r.rc == 0, r.err
    assert count_rows(atocore.db) == 200


def test_retention_removes_whole_old_snapshot_directories(atocore: Runtime) -> None:
    atocore.write_config(backup_retention_count=2, backup_retention_days=14)
    assert atocore.cli("backup").rc == 0
    [fresh] = snapshots(atocore)
    now = dt.datetime.now(dt.UTC)
    for days in (40, 30, 20, 1):
        old = fresh.parent / (now - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H-%M-%SZ")
        os.system(f"cp -a {fresh} {old}")  # noqa: S605  (a test fixture: copies keep their metadata)
    dry = atocore.cli("prune", "--dry-run", "--json")
    doomed = sorted(d["name"] for d in dry.json["decisions"] if not d["keep"])
    assert len(doomed) == 3 and len(snapshots(atocore)) == 5, "dry run removes nothing"
    r = atocore.cli("prune", "--json")
    assert r.rc == 0, r.err
    left = snapshots(atocore)
    assert len(left) == 2 and not any(p.name in doomed for p in left), "the 40, 30 and 20 day old directories are gone, whole"


def test_an_interrupted_snapshot_leaves_no_final_directory_and_is_cleaned_up(atocore: Runtime) -> None:
    partial = atocore.backups / "snapshots" / ".tmp-2026-01-01T00-00-00Z.123"
    (partial / "db").mkdir(parents=True)
    (partial / "db" / "atocore.db").write_bytes(b"half")
    assert [b["name"] for b in atocore.cli("list", "--json").json["backups"]] == []
    assert atocore.cli("backup").rc == 0
    assert not partial.exists()
    assert len(snapshots(atocore)) == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"layout": "phases"}, "extra files are captured in snapshot directories only"),
        ({"layout": "flat"}, "key 'layout': value 'flat' is not allowed"),
        ({"extra_files": [{"path": "/srv/x.json", "dest": "../x.json"}]}, "without empty, '.' or '..' components"),
        ({"extra_files": [{"path": "/srv/x.json", "dest": "db/atocore.db"}]}, "outside db and backup-metadata.json"),
        ({"extra_files": ["relative/x.json"]}, "is not an absolute path"),
        ({"extra_files": ["/a/x.json", "/b/x.json"]}, "dest 'config/x.json' appears twice"),
        ({"snapshot_notes": "one string"}, "a list of strings"),
        ({"backup_timer": "atocore-backup"}, "a systemd timer unit name"),
    ],
)
def test_bad_snapshot_settings_are_refused_naming_the_key(atocore: Runtime, settings: dict, message: str) -> None:
    atocore.write_config(**settings)
    r = atocore.cli("config", "validate", str(atocore.config_path))
    assert r.rc == 2 and message in r.err, r.err
    assert "Traceback" not in r.err
