"""Operator workflows: restore, drill, diff, snapshot and confirm, on real files and processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import NEO_DB, SYSTEM_PYTHON, Runtime, count_rows, install_neo_db, make_db, seqs_in
from neo_db import catalog, systemd


def start_session(runtime: Runtime) -> Path:
    assert runtime.cli("session-start").rc == 0
    [pre] = runtime.files("pre_session")
    return pre


def bad_run(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM trades WHERE id % 2 = 0")
    conn.execute("UPDATE trades SET qty = -1")
    conn.close()


def live_files(runtime: Runtime) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in runtime.db.parent.iterdir() if not p.name.startswith(".")}


# ---- restore ----


def test_restore_brings_back_the_pre_session_backup_and_quarantines_the_bad_db(runtime: Runtime) -> None:
    make_db(runtime.db)
    pre = start_session(runtime)
    bad_run(runtime.db)
    runtime.stop()
    bad = runtime.db.read_bytes()
    r = runtime.cli("restore", pre.stem, "--yes", "--json")
    assert r.rc == 0, r.err
    assert count_rows(runtime.db) == 200
    conn = sqlite3.connect(f"file:{runtime.db}?mode=ro", uri=True)
    assert conn.execute("SELECT count(*) FROM trades WHERE qty = -1").fetchone()[0] == 0
    conn.close()
    assert runtime.db.read_bytes()[18:20] == b"\x02\x02", "back in WAL mode"
    quarantine = Path(r.json["quarantine"])
    assert (quarantine / "neo_live_stage1.db").read_bytes() == bad, "the replaced DB is kept, byte for byte"
    assert json.loads((quarantine / "stop.json").read_text())["trigger"] == "restore-quarantine"
    [record] = list((runtime.exports / "restores").iterdir())
    assert json.loads(record.read_text())["backup"] == str(pre)
    assert runtime.cli("check").rc == 0
    assert "quarantine" in runtime.cli("list").out


def test_restore_dry_run_and_a_missing_yes_change_nothing(runtime: Runtime) -> None:
    make_db(runtime.db)
    pre = start_session(runtime)
    runtime.stop()
    before = live_files(runtime)
    dry = runtime.cli("restore", pre.name, "--dry-run")
    assert dry.rc == 0 and "would restore" in dry.out
    no_yes = runtime.cli("restore", pre.name)
    assert no_yes.rc == 2 and "--yes" in no_yes.err
    assert live_files(runtime) == before
    assert not (runtime.backups / "abnormal_stop").exists() or not list((runtime.backups / "abnormal_stop").iterdir())


def test_restore_refuses_a_tampered_backup_and_loses_nothing(runtime: Runtime) -> None:
    make_db(runtime.db)
    pre = start_session(runtime)
    runtime.stop()
    data = bytearray(pre.read_bytes())
    data[-100] ^= 0xFF
    os.chmod(pre, 0o640)
    pre.write_bytes(bytes(data))
    before = live_files(runtime)
    r = runtime.cli("restore", pre.stem, "--yes")
    assert r.rc == 3 and "does not match the manifest" in r.err
    assert live_files(runtime) == before


@pytest.mark.parametrize(
    "arg", ["/etc/passwd", "../../etc/passwd", "{backups}/pre_session/../../db/neo_live_stage1.db", "no_such_backup", ""]
)
def test_restore_refuses_anything_outside_backup_dir(runtime: Runtime, arg: str) -> None:
    make_db(runtime.db)
    start_session(runtime)
    runtime.stop()
    before = live_files(runtime)
    r = runtime.cli("restore", arg.format(backups=runtime.backups), "--yes")
    assert r.rc == 2, r.err
    assert "Traceback" not in r.err
    assert live_files(runtime) == before


def test_restore_refuses_a_symlink_planted_in_the_backup_dir(runtime: Runtime, tmp_path: Path) -> None:
    make_db(runtime.db)
    pre = start_session(runtime)
    runtime.stop()
    evil = tmp_path / "evil.db"
    make_db(evil, rows=1, wal=False)
    link = pre.with_name(pre.name.replace("_S001_", "_S002_"))
    link.symlink_to(evil)
    before = live_files(runtime)
    r = runtime.cli("restore", str(link), "--yes")
    assert r.rc == 2 and "not a backup inside backup_dir" in r.err
    assert live_files(runtime) == before


def test_restore_refuses_while_the_engine_holds_the_db(runtime: Runtime, writer_factory) -> None:
    make_db(runtime.db)
    pre = start_session(runtime)
    runtime.stop()
    w = writer_factory(runtime.db, rate=50)
    w.wait_commits(5)
    # The plan (made before the engine is stopped) checks the backup and says the engine must stop first.
    dry = runtime.cli("restore", pre.stem, "--dry-run", "--json")
    assert dry.rc == 0, dry.err
    assert "the live DB is open" in dry.json["must_stop_first"] and "stop it before the restore" in dry.err
    r = runtime.cli("restore", pre.stem, "--yes")
    assert r.rc == 5 and f"PID {w.proc.pid}" in r.err
    w.wait_commits(len(w.committed()) + 5)
    assert w.proc.poll() is None
    assert set(w.committed()) <= seqs_in(runtime.db) | set(w.committed()[-1:]), "the engine's DB was not replaced"
    assert pre.exists()


# ---- drill ----


def test_drill_restores_each_phase_and_catches_a_damaged_backup(runtime: Runtime) -> None:
    make_db(runtime.db)
    start_session(runtime)
    runtime.stop()
    r = runtime.cli("drill", "--json")
    assert r.rc == 0, r.err
    assert r.json["phases"]["pre"]["result"] == "pass" and r.json["phases"]["post"]["result"] == "pass"
    assert r.json["phases"]["abnormal"]["result"] == "none"
    [post] = runtime.files("post_session")
    os.chmod(post, 0o640)
    with open(post, "r+b") as fh:
        fh.seek(-50, 2)
        fh.write(b"\xff" * 10)
    r = runtime.cli("drill", "--json")
    assert r.rc == 1 and r.json["phases"]["post"]["result"] == "fail"
    assert "sha256" in r.json["phases"]["post"]["detail"]
    assert runtime.cli("health", "--json").json["db_health"]["last_drill"]["result"] == "fail"


# ---- diff ----


def test_diff_reports_exactly_what_a_scripted_session_changed(runtime: Runtime) -> None:
    make_db(runtime.db, rows=100)
    start_session(runtime)
    conn = sqlite3.connect(runtime.db, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO trades(symbol, qty) VALUES (?, ?)", [("NEW", i) for i in range(7)])
    conn.execute("DELETE FROM trades WHERE id IN (1, 2, 3)")
    conn.execute("UPDATE trades SET qty = qty + 1000 WHERE id IN (10, 11, 12, 13, 14)")
    conn.execute("CREATE TABLE fills (fill_id TEXT PRIMARY KEY, px REAL)")
    conn.execute("INSERT INTO fills VALUES ('f1', 1.5), ('f2', 2.5)")
    conn.execute("CREATE INDEX trades_qty ON trades(qty)")
    conn.execute("COMMIT")
    conn.close()
    runtime.stop()
    r = runtime.cli("diff", "--session", "S001", "--json")
    assert r.rc == 0, r.err
    t = r.json["tables"]["trades"]
    assert (t["rows_before"], t["rows_after"], t["inserted"], t["deleted"], t["updated"]) == (100, 104, 7, 3, 5)
    assert r.json["tables_added"] == {"fills": 2}
    assert r.json["objects_added"] == ["trades_qty"]
    text = runtime.cli("diff", "--session", "S001").out
    assert "+ table fills (2 rows)" in text and "trades" in text


def test_diff_refuses_the_live_db(runtime: Runtime) -> None:
    make_db(runtime.db)
    pre = start_session(runtime)
    r = runtime.cli("diff", str(pre), str(runtime.db))
    assert r.rc == 2 and "live DB" in r.err


# ---- snapshot ----


def test_snapshot_under_a_steady_writer_is_consistent_and_readable(runtime: Runtime, writer_factory) -> None:
    w = writer_factory(runtime.db, rate=0)
    w.wait_commits(300)
    before = set(w.committed())
    r = runtime.cli("snapshot", "--json")
    assert r.rc == 0, r.err
    latest = Path(r.json["latest"])
    assert latest.is_symlink() and latest.resolve() == Path(r.json["path"])
    assert stat.S_IMODE(latest.resolve().stat().st_mode) == 0o440
    assert r.json["manifest"]["integrity_check"] == ["ok"]
    assert before <= seqs_in(latest)
    w.wait_commits(len(w.committed()) + 50)
    assert w.proc.poll() is None, "the writer kept committing"
    reader = sqlite3.connect(f"file:{latest}?mode=ro", uri=True)
    assert reader.execute("SELECT count(*) FROM ticks").fetchone()[0] >= len(before)
    reader.close()


def test_old_snapshots_are_pruned_but_latest_is_kept(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.write_config(snapshot_retention_count=2)
    paths = [runtime.cli("snapshot", "--json").json["path"] for _ in range(4)]
    left = sorted(p.name for p in (runtime.exports / "snapshots").glob("*.db"))
    assert left == sorted(Path(p).name for p in paths[-2:])


# ---- confirm ----


def enable_prune_timer(units: Path) -> Path:
    """neo-db-prune.timer as `systemctl enable` leaves it in the unit files; returns the wants link."""
    (units / "timers.target.wants").mkdir(parents=True, exist_ok=True)
    (units / "neo-db-prune.timer").write_text("[Timer]\nOnCalendar=daily\nPersistent=true\n")
    link = units / "timers.target.wants" / "neo-db-prune.timer"
    link.symlink_to("../neo-db-prune.timer")
    return link


@pytest.fixture
def provisioned(runtime: Runtime, tmp_path: Path) -> Runtime:
    units = tmp_path / "units"
    neo_db = install_neo_db(tmp_path)
    (units / "neo-engine.service.d").mkdir(parents=True)
    engine = tmp_path / "opt-neo-engine" / "neo-engine"
    engine.parent.mkdir()
    engine.write_text("#!/bin/sh\nexec sleep 1\n")
    engine.chmod(0o755)
    (units / "neo-engine.service").write_text(f"[Service]\nExecStart={engine} --config /etc/neo/engine.yml\n")
    (units / "neo-engine.service.d" / "10-safeguards.conf").write_text(
        f"[Service]\nUser=root\nExecStartPre={neo_db} session-start\nExecStopPost={neo_db} session-stop\n"
    )
    enable_prune_timer(units)
    fact = tmp_path / "hetzner_backups.fact"
    fact.write_text("[backups]\nserver=neo-live-1\nenabled=true\nbackup_window=22-02\n")
    (tmp_path / "textfile").mkdir()
    runtime.write_config(
        unit_dir=str(units),
        hetzner_fact_path=str(fact),
        neo_db_bin=str(neo_db),
        metrics_textfile_dir=str(tmp_path / "textfile"),
        notify_explicitly_off=True,
    )
    for d in ("", "pre_session", "post_session", "abnormal_stop", "manual", "imported", "legacy"):  # as the neo_runtime role makes them
        (runtime.backups / d).mkdir(exist_ok=True)
        (runtime.backups / d).chmod(0o750)
    make_db(runtime.db)
    assert runtime.cli("import", "--adopt").rc == 0  # no migration here: the DB is its own origin (as make demo does)
    start_session(runtime)
    runtime.stop()
    assert runtime.cli("drill").rc == 0
    return runtime


def test_confirm_passes_when_everything_is_wired(provisioned: Runtime) -> None:
    r = provisioned.cli("confirm", "--json")
    assert r.rc == 0, r.out
    assert {i["item"]: i["result"] for i in r.json["items"]} == {
        "integrity checks are wired": "PASS",
        "pre/post-session backups are wired": "PASS",
        "backup paths are verified": "PASS",
        "retention is defined": "PASS",
        "Hetzner backups are on": "PASS",
        "the last restore drill passed": "PASS",
        "the live DB's origin is recorded": "PASS",
        "metrics are fresh": "PASS",
        "a notifier is configured, or none is an explicit choice": "PASS",
        "the engine is installed": "PASS",
    }
    md = provisioned.cli("confirm", "--markdown").out
    assert md.startswith("# Pre-first-VPS-run confirmation") and "Overall: **PASS**" in md


def test_confirm_and_session_start_refuse_while_the_engine_is_not_installed(provisioned: Runtime) -> None:
    """A production host is provisioned before its engine is installed (unit-verify lets the unit in
    with a notice): the first session must then fail clearly at the gate, naming the path and the fix,
    before it takes a session ID or a backup; confirm FAILs the item. Installed: both pass."""
    unit = Path(provisioned.settings["unit_dir"]) / "neo-engine.service"
    engine = Path(unit.read_text().split("ExecStart=")[1].split()[0])

    def engine_item() -> dict[str, Any]:
        item: dict[str, Any] = {i["item"]: i for i in provisioned.cli("confirm", "--json").json["items"]}["the engine is installed"]
        return item

    assert engine_item()["result"] == "PASS"  # positive control: installed
    engine.unlink()
    item = engine_item()
    assert item["result"] == "FAIL", item
    assert any(str(engine) in e and "not installed" in e for e in item["evidence"]), item

    counter_before = sorted(p.name for p in provisioned.state.iterdir())
    backups_before = provisioned.files("pre_session")
    refused = provisioned.cli("session-start")
    assert refused.rc == 2, refused.err
    assert f"the engine {engine} (ExecStart of neo-engine.service) is not installed" in refused.err, refused.err
    assert "install the engine there" in refused.err and "neo_engine_exec_start" in refused.err
    assert "Traceback" not in refused.err and "internal error" not in refused.err
    assert provisioned.files("pre_session") == backups_before  # no backup, no session taken
    assert sorted(p.name for p in provisioned.state.iterdir()) == counter_before
    assert provisioned.stop().rc == 0  # ExecStopPost after the refused start: nothing was open

    # Present but not executable: refused too, with the other reason.
    engine.write_text("#!/bin/sh\n")
    engine.chmod(0o644)
    refused = provisioned.cli("session-start")
    assert refused.rc == 2 and "is not executable" in refused.err, refused.err
    assert engine_item()["result"] == "FAIL"

    engine.chmod(0o755)  # installed: the same start opens a session
    assert provisioned.cli("session-start").rc == 0
    assert engine_item()["result"] == "PASS"


def test_confirm_fails_when_a_hook_is_missing(provisioned: Runtime) -> None:
    dropin = Path(provisioned.settings["unit_dir"]) / "neo-engine.service.d" / "10-safeguards.conf"
    dropin.write_text(dropin.read_text().replace(f"ExecStopPost={provisioned.settings['neo_db_bin']} session-stop\n", ""))
    r = provisioned.cli("confirm", "--json")
    assert r.rc == 1
    results = {i["item"]: i for i in r.json["items"]}
    assert results["pre/post-session backups are wired"]["result"] == "FAIL"
    assert "ExecStopPost" in results["pre/post-session backups are wired"]["evidence"][0]
    assert results["integrity checks are wired"]["result"] == "PASS"


def test_confirm_fails_without_hetzner_backups_or_a_drill(provisioned: Runtime) -> None:
    Path(provisioned.settings["hetzner_fact_path"]).write_text("[backups]\nenabled=false\nbackup_window=\n")
    (provisioned.state / "last_drill.json").unlink()
    r = provisioned.cli("confirm", "--json")
    results = {i["item"]: i["result"] for i in r.json["items"]}
    assert r.rc == 1
    assert results["Hetzner backups are on"] == "FAIL" and results["the last restore drill passed"] == "FAIL"


def retention_item(runtime: Runtime) -> dict[str, Any]:
    item: dict[str, Any] = {i["item"]: i for i in runtime.cli("confirm", "--json").json["items"]}["retention is defined"]
    return item


def test_confirm_retention_checks_the_prune_timer_prune_after_session_and_the_last_prune(provisioned: Runtime) -> None:
    """Issue 17.2: each thing the item claims is checked on real state, and each one missing is a FAIL naming the fix."""
    item = retention_item(provisioned)  # positive control: the fixture's session-stop pruned, the timer is enabled
    assert item["result"] == "PASS", item
    assert any("neo-db-prune.timer" in e and "enabled" in e for e in item["evidence"]), item
    assert any("last prune" in e and "succeeded" in e for e in item["evidence"]), item

    # The timer is not enabled (no timers.target.wants link, as `systemctl disable` leaves it).
    link = Path(provisioned.settings["unit_dir"]) / "timers.target.wants" / "neo-db-prune.timer"
    link.unlink()
    item = retention_item(provisioned)
    assert item["result"] == "FAIL", item
    assert any("neo-db-prune.timer" in e and "systemctl enable --now neo-db-prune.timer" in e for e in item["evidence"]), item
    link.symlink_to("../neo-db-prune.timer")
    assert retention_item(provisioned)["result"] == "PASS"

    # Prune after each session is off.
    provisioned.write_config(prune_after_session=False)
    item = retention_item(provisioned)
    assert item["result"] == "FAIL", item
    assert any("prune_after_session: false" in e and str(provisioned.config_path) in e for e in item["evidence"]), item
    provisioned.write_config(prune_after_session=True)
    assert retention_item(provisioned)["result"] == "PASS"

    # The last prune failed: a backup beyond retention on a read-only bind mount cannot be removed.
    from neo_db import config as config_mod
    from neo_db.core import backups

    provisioned.write_config(backup_retention_count=1)
    old = backups.take_backup(
        config_mod.load(provisioned.config_path), "pre", "S777", "test", now=catalog.utcnow() - dt.timedelta(days=40)
    ).path
    pre_dir = provisioned.backups / "pre_session"
    subprocess.run(["mount", "--bind", str(pre_dir), str(pre_dir)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(pre_dir)], check=True)
        r = provisioned.cli("prune")
        assert r.rc != 0 and old.exists(), (r.rc, r.err)
        item = retention_item(provisioned)
        assert item["result"] == "FAIL", item
        assert any("last prune" in e and "FAILED" in e and "Read-only file system" in e for e in item["evidence"]), item
    finally:
        subprocess.run(["umount", str(pre_dir)], check=True)
    assert provisioned.cli("prune").rc == 0 and not old.exists()  # positive control: the same prune, writable
    assert retention_item(provisioned)["result"] == "PASS"

    # No prune recorded at all (a box where neither a session nor the timer has pruned yet).
    state = provisioned.state / "metrics_state.json"
    doc = json.loads(state.read_text())
    del doc["prune"]
    state.write_text(json.dumps(doc))
    item = retention_item(provisioned)
    assert item["result"] == "FAIL", item
    assert any("no prune recorded" in e and "neo-db prune" in e for e in item["evidence"]), item


def test_confirm_names_backups_dated_in_the_future(provisioned: Runtime) -> None:
    r = provisioned.cli("confirm", "--json")
    assert {i["item"]: i["result"] for i in r.json["items"]}["retention is defined"] == "PASS"
    [pre] = provisioned.files("pre_session")
    ahead = pre.with_name(pre.name.replace(pre.stem[-20:], "2099-01-01T00-00-00Z"))
    ahead.write_bytes(pre.read_bytes())
    ahead.with_suffix(".json").write_text(pre.with_suffix(".json").read_text())
    r = provisioned.cli("confirm", "--json")
    assert r.rc == 1
    retention = {i["item"]: i for i in r.json["items"]}["retention is defined"]
    assert retention["result"] == "FAIL"
    assert any(ahead.stem in e and "in the future" in e for e in retention["evidence"]), retention


def test_confirm_never_takes_a_future_dated_backup_as_the_newest_for_its_gate_dry_run(provisioned: Runtime) -> None:
    """Without a live DB the gate dry run copies the newest verified backup: a genuine one (the adopted
    DB's imported backup or S001's pre or post, which may share a second), never one dated in the future."""
    provisioned.db.rename(provisioned.root / "moved-away.db")
    genuine = [*provisioned.files("pre_session"), *provisioned.files("post_session"), *provisioned.files("imported")]
    assert len(genuine) >= 2, genuine
    pre = genuine[0]
    ahead = pre.with_name(pre.name.replace(pre.stem[-20:], "2099-01-01T00-00-00Z"))
    ahead.write_bytes(bytes(100) + pre.read_bytes()[100:])  # damaged, the same size: its manifest still says verified
    ahead.with_suffix(".json").write_text(pre.with_suffix(".json").read_text())

    def gate_item() -> dict[str, Any]:
        item: dict[str, Any] = {i["item"]: i for i in provisioned.cli("confirm", "--json").json["items"]}["integrity checks are wired"]
        return item

    gate = gate_item()
    assert gate["result"] == "PASS", gate
    assert any(f"gate dry run on a copy of {p.stem} " in e and e.endswith(": ok") for e in gate["evidence"] for p in genuine), gate
    # Negative control: the same damage in the genuine backups fails the dry run.
    for p in genuine:
        p.write_bytes(bytes(100) + p.read_bytes()[100:])
    gate = gate_item()
    assert gate["result"] == "FAIL", gate
    assert any(f"a copy of {p.stem} " in e and "not a SQLite" in e for e in gate["evidence"] for p in genuine), gate


@pytest.mark.parametrize(
    "doc", [{"result": "pass", "at": "2026-01-01T00:00:00Z", "phases": 5}, {"result": "pass", "phases": {"pre": "ok"}}, [1], {"at": 7}]
)
def test_wrong_types_in_the_last_drill_record_are_reported_not_a_crash(provisioned: Runtime, doc: object) -> None:
    record = provisioned.state / "last_drill.json"
    r = provisioned.cli("confirm", "--json")
    assert {i["item"]: i["result"] for i in r.json["items"]}["the last restore drill passed"] == "PASS"
    record.write_text(json.dumps(doc))
    for args in (["confirm", "--json"], ["health", "--json"]):
        r = provisioned.cli(*args)
        assert "internal error" not in r.err and "Traceback" not in r.err, r.err
        assert str(record) in r.err, r.err
    r = provisioned.cli("confirm", "--json")
    assert r.rc == 1 and {i["item"]: i["result"] for i in r.json["items"]}["the last restore drill passed"] == "FAIL"


# The engine unit's ExecStartPre forms, {bin} being the installed neo-db. Only a gate that runs the
# installed neo-db's session-start, with its failure honoured, makes "integrity checks are wired" PASS.
GATE_FORMS = {
    "the role's line": ("ExecStartPre={bin} session-start", "PASS"),
    "a privileged holder scan first (+), then the gate": ("ExecStartPre=+{bin} holders --db x\nExecStartPre={bin} session-start", "PASS"),
    "the launcher the PATH symlink points at": ("ExecStartPre={hooks} session-start", "PASS"),
    "quoted, with a quiet flag and this config": ('ExecStartPre="{bin}" -q --config {config} "session-start"', "PASS"),
    "failure ignored (-)": ("ExecStartPre=-{bin} session-start", "FAIL"),
    "failure ignored, with + too": ("ExecStartPre=+-{bin} session-start", "FAIL"),
    "echo of the words": ("ExecStartPre=/bin/echo neo-db session-start", "FAIL"),
    "echo of the installed path": ("ExecStartPre=/bin/echo {bin} session-start", "FAIL"),
    "@: another program gets neo-db as argv[0]": ("ExecStartPre=@/bin/true {bin} session-start", "FAIL"),
    "a shell that swallows the failure": ('ExecStartPre=/bin/sh -c "{bin} session-start || true"', "FAIL"),
    "a copy of neo-db that is not the installed one": ("ExecStartPre={copy} session-start", "FAIL"),
    "another subcommand": ("ExecStartPre={bin} check", "FAIL"),
    "the words after a ';' separator": ("ExecStartPre=/bin/true ; /bin/echo session-start", "FAIL"),
    "a missing DB let through": ("ExecStartPre={bin} session-start --allow-missing", "FAIL"),
    "another config": ("ExecStartPre={bin} --config /tmp/other.yml session-start", "FAIL"),
    "only the holder scan": ("ExecStartPre=+{bin} holders --db x", "FAIL"),
    "reset by a later drop-in": ("ExecStartPre={bin} session-start\n[Service]\nExecStartPre=", "FAIL"),
}


@pytest.mark.parametrize("form", list(GATE_FORMS))
def test_confirm_passes_the_gate_item_only_for_the_installed_session_start_with_its_failure_honoured(
    provisioned: Runtime, tmp_path: Path, form: str
) -> None:
    line, expected = GATE_FORMS[form]
    neo_db = Path(provisioned.settings["neo_db_bin"])
    copy = tmp_path / "elsewhere" / "neo-db"
    copy.parent.mkdir()
    shutil.copy2(NEO_DB, copy)
    line = line.format(bin=neo_db, hooks=neo_db.resolve(), copy=copy, config=provisioned.config_path)
    dropin = Path(provisioned.settings["unit_dir"]) / "neo-engine.service.d" / "10-safeguards.conf"
    dropin.write_text(f"[Service]\nUser=root\nExecStopPost={neo_db} session-stop\n{line}\n")
    r = provisioned.cli("confirm", "--json")
    assert r.rc == (0 if expected == "PASS" else 1), r.out
    item = {i["item"]: i for i in r.json["items"]}["integrity checks are wired"]
    assert item["result"] == expected, (form, item)
    assert item["evidence"][0].startswith("ExecStartPre from unit files in")
    assert {i["item"]: i["result"] for i in r.json["items"]}["pre/post-session backups are wired"] == expected, (
        "the pre-session backup is the same hook"
    )


def test_confirm_fails_the_gate_item_when_the_installed_neo_db_is_missing(provisioned: Runtime) -> None:
    assert provisioned.cli("confirm").rc == 0  # positive control: installed, wired
    neo_db = Path(provisioned.settings["neo_db_bin"])
    neo_db.resolve().unlink()
    r = provisioned.cli("confirm", "--json")
    assert r.rc == 1
    item = {i["item"]: i for i in r.json["items"]}["integrity checks are wired"]
    assert item["result"] == "FAIL" and any(f"{neo_db}" in e and "not installed" in e for e in item["evidence"]), item


def test_confirm_fails_on_stale_metrics_and_on_no_notifier_without_a_choice(provisioned: Runtime) -> None:
    prom = Path(provisioned.settings["metrics_textfile_dir"]) / "neo_db.prom"
    text = prom.read_text()
    stale = re.sub(r"^(neo_db_metrics_last_write_timestamp_seconds) \d+$", r"\1 1000", text, flags=re.M)
    assert stale != text
    prom.write_text(stale)
    provisioned.write_config(notify_explicitly_off=False)
    r = provisioned.cli("confirm", "--json")
    results = {i["item"]: i for i in r.json["items"]}
    assert r.rc == 1
    assert results["metrics are fresh"]["result"] == "FAIL" and "written" in results["metrics are fresh"]["evidence"][0]
    notifier = results["a notifier is configured, or none is an explicit choice"]
    assert notifier["result"] == "FAIL" and "neo_monitoring_no_notifier" in notifier["evidence"][0]
    # Positive controls: fresh metrics (any writing command) and a configured root-only notifier.
    assert provisioned.cli("metrics").rc == 0
    secrets = provisioned.root / "notify.yml"
    secrets.write_text("ping_url: http://127.0.0.1:9/ping/abcdef123456\n")
    secrets.chmod(0o600)
    provisioned.write_config(notify_secrets_path=str(secrets))
    r = provisioned.cli("confirm", "--json")
    results = {i["item"]: i for i in r.json["items"]}
    assert r.rc == 0, r.out
    assert "ping configured" in results["a notifier is configured, or none is an explicit choice"]["evidence"][0]
    assert "abcdef123456" not in r.out


def test_systemctl_state_reads_is_enabled_and_is_active_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The systemctl branch of systemd.unit_state (taken where systemd runs, not in this test box): a PATH shim
    `systemctl`, a real process, answers as systemctl does (state word on stdout, non-zero exit when not so)."""
    shim = tmp_path / "bin" / "systemctl"
    shim.parent.mkdir()
    answers = tmp_path / "answers"
    shim.write_text(
        f'#!/bin/sh\nline=$(grep "^$1 " {answers})\n[ -n "$line" ] || {{ echo "Failed to connect to bus" >&2; exit 1; }}\n'
        'set -- $line\necho "$2"\nexit "$3"\n'
    )
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    answers.write_text("is-enabled enabled 0\nis-active active 0\n")
    state = systemd.systemctl_state("neo-db-prune.timer")
    assert (state.enabled, state.active) == (True, True), state
    answers.write_text("is-enabled disabled 1\nis-active inactive 3\n")
    state = systemd.systemctl_state("neo-db-prune.timer")
    assert (state.enabled, state.active) == (False, False), state
    assert "is-enabled neo-db-prune.timer: disabled; is-active: inactive" in state.evidence
    answers.write_text("")  # systemctl itself fails: neither enabled nor active, and the error is named
    state = systemd.systemctl_state("neo-db-prune.timer")
    assert (state.enabled, state.active) == (False, False), state
    assert "Failed to connect to bus" in state.evidence


def test_the_confirmation_playbook_runs_the_checks_once_and_renders_the_markdown_from_their_json(
    provisioned: Runtime, tmp_path: Path
) -> None:
    """Issue 17.10: ansible/confirm.yml ran `neo-db confirm` twice (JSON, then Markdown): two copies of the live DB,
    two integrity_checks. Now one run makes the JSON, and `confirm --markdown-from -` renders it without a config,
    a DB or a unit file: the DB is copied once."""
    playbook = yaml.safe_load((Path(__file__).resolve().parent.parent / "ansible" / "confirm.yml").read_text())
    commands = [t["ansible.builtin.command"] for t in playbook[0]["tasks"] if "ansible.builtin.command" in t]
    checks = [c for c in commands if str(c).startswith("neo-db confirm") and "--markdown-from" not in str(c)]
    assert len(checks) == 1, commands
    assert any("--markdown-from -" in str(c) for c in commands), commands

    report = provisioned.cli("confirm", "--json")
    assert report.rc == 0, report.out
    # The render reads only its input: no config (NEO_DB_CONFIG names nothing), no live DB.
    provisioned.db.rename(tmp_path / "away.db")
    env = provisioned.env(NEO_DB_CONFIG=str(tmp_path / "no-such-config.yml"))
    proc = subprocess.run(
        [SYSTEM_PYTHON, str(NEO_DB), "confirm", "--markdown-from", "-"],
        input=report.out,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    md = proc.stdout
    assert md.startswith(f"# Pre-first-VPS-run confirmation (FLAG-023 §8): {report.json['host']}") and "Overall: **PASS**" in md, md
    assert f"({report.json['at']})" in md, md
    for item in report.json["items"]:
        assert f"| {item['item']} | PASS |" in md and item["evidence"][0].replace("|", "\\|") in md, item
    # A FAIL report renders as FAIL; a file works as well as stdin.
    failed = {**report.json, "result": "FAIL", "items": [{**report.json["items"][0], "result": "FAIL"}, *report.json["items"][1:]]}
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(failed))
    r = provisioned.cli("confirm", "--markdown-from", str(saved), env=env)
    assert r.rc == 0 and "Overall: **FAIL**" in r.out and f"| {failed['items'][0]['item']} | **FAIL** |" in r.out, r.out
    # Bad input: a clear usage error naming the file and what is wrong, no traceback.
    for text, problem in (("not json", "not JSON"), ('{"host": "h"}', "'items'"), ("[]", "not a confirm --json report")):
        saved.write_text(text)
        r = provisioned.cli("confirm", "--markdown-from", str(saved), env=env)
        assert r.rc == 2 and str(saved) in r.err and problem in r.err and "Traceback" not in r.err, (text, r.err)
