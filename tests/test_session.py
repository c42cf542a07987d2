"""The ExecStartPre/ExecStopPost hooks: FLAG-049's four tests and the FLAG-023 additions."""

from __future__ import annotations

import json
import re
import shutil
import signal

import pytest

from conftest import FLAG049, Runtime, make_db, seqs_in

NAME_RE = r"neo_live_stage1_{phase}_{session}_\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}-\d{{2}}-\d{{2}}Z\.db"


def corrupt_root_page(db) -> None:
    """Give page 2 (the trades table's root) an invalid b-tree page type."""
    data = bytearray(db.read_bytes())
    psize = int.from_bytes(data[16:18], "big")
    data[psize] = 0x07
    db.write_bytes(bytes(data))


# ---- FLAG-049's four ----


def test_gate_passes_on_a_good_db_and_the_session_opens(runtime: Runtime) -> None:
    make_db(runtime.db)
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    current = json.loads((runtime.state / "current_session.json").read_text())
    assert current["state"] == "open" and current["session"] == "S001"
    assert runtime.health("S001")["integrity_check"] == "ok"
    assert (runtime.state / "session.env").read_text().startswith("NEO_SESSION_ID=S001\n")


def test_gate_aborts_on_a_corrupt_db_with_the_exact_message(runtime: Runtime) -> None:
    make_db(runtime.db)
    corrupt_root_page(runtime.db)
    before = runtime.db.read_bytes()
    r = runtime.cli("session-start")
    assert r.rc == 3
    assert FLAG049 in r.err.splitlines(), r.err
    assert "SQLite reported:" in r.err
    assert runtime.files("pre_session") == [] and runtime.files("pre_session", "") == []
    assert runtime.db.read_bytes() == before, "the gate must not touch the live DB"
    block = runtime.health("S001")
    assert block["integrity_check"] != "ok" and block["start_attempts"][-1]["result"] == "refused"


def test_pre_session_backup_has_the_session_explicit_name(runtime: Runtime) -> None:
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    [pre] = runtime.files("pre_session")
    assert re.fullmatch(NAME_RE.format(phase="pre", session="S001"), pre.name), pre.name
    manifest = json.loads(pre.with_suffix(".json").read_text())
    assert manifest["session"] == "S001" and manifest["phase"] == "pre"
    assert manifest["integrity_check"] == ["ok"] and manifest["row_counts"] == {"trades": 200}
    assert runtime.health("S001")["pre_session_backup"] == pre.name


def test_post_session_backup_after_a_clean_close(runtime: Runtime) -> None:
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    make_db(runtime.db, rows=50)  # the "session" writes
    r = runtime.stop("exited", "0")
    assert r.rc == 0, r.err
    [post] = runtime.files("post_session")
    assert re.fullmatch(NAME_RE.format(phase="post", session="S001"), post.name)
    assert json.loads(post.with_suffix(".json").read_text())["row_counts"] == {"trades": 250}
    block = runtime.health("S001")
    assert block["post_session_backup"] == post.name and block["post_session_backup_ok"] is True
    assert block["stop"]["classification"] == "clean"
    assert not (runtime.state / "current_session.json").exists()


# ---- stops ----


def test_abnormal_stop_after_sigkill_mid_transaction_keeps_every_committed_row(runtime: Runtime, writer_factory) -> None:
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    w = writer_factory(runtime.db, rate=0)  # as fast as it can: the kill lands mid-transaction
    w.wait_commits(300)
    assert w.kill(signal.SIGKILL) == -signal.SIGKILL
    committed = set(w.committed())
    r = runtime.stop("killed", "KILL", "signal")
    assert r.rc == 0, r.err
    [copy] = runtime.files("abnormal_stop")
    assert re.fullmatch(NAME_RE.format(phase="abnormal", session="S001"), copy.name)
    assert committed <= seqs_in(copy), "a committed sequence is missing from the abnormal-stop backup"
    raw = copy.with_suffix(".raw")
    assert (raw / "neo_live_stage1.db").is_file() and (raw / "neo_live_stage1.db-wal").is_file()
    stop = json.loads((raw / "stop.json").read_text())
    assert stop["stop"]["exit_code"] == "killed"
    block = runtime.health("S001")
    assert block["stop"]["classification"] == "abnormal" and block["post_session_backup"] is None
    assert block["abnormal_stop_backup"] == str(copy)
    # The next session starts: the gate passes on the crashed DB (WAL recovery is SQLite's job).
    assert runtime.cli("session-start").rc == 0
    assert committed <= seqs_in(runtime.db)


def test_sigterm_kill_counts_as_abnormal_even_though_systemd_says_success(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.cli("session-start")
    assert runtime.stop("killed", "TERM", "success").rc == 0
    assert runtime.health("S001")["stop"]["classification"] == "abnormal"
    assert runtime.files("post_session") == [] and len(runtime.files("abnormal_stop")) == 1


def test_non_zero_exit_is_abnormal_unless_listed_clean(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.write_config(clean_exit_statuses=[0, 143])
    runtime.cli("session-start")
    runtime.stop("exited", "143")
    assert runtime.health("S001")["stop"]["classification"] == "clean"
    runtime.cli("session-start")
    runtime.stop("exited", "1", "exit-code")
    assert runtime.health("S002")["stop"]["classification"] == "abnormal"


def test_unclean_previous_session_is_preserved_before_anything_opens_the_db(runtime: Runtime, writer_factory) -> None:
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    w = writer_factory(runtime.db, rate=0)
    w.wait_commits(200)
    w.kill(signal.SIGKILL)  # power loss: no ExecStopPost ever runs
    committed = set(w.committed())
    wal_before = (runtime.db.parent / "neo_live_stage1.db-wal").read_bytes()
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    assert "still open" in r.err
    [raw] = [p for p in (runtime.backups / "abnormal_stop").iterdir() if p.name.endswith(".raw")]
    assert "_abnormal_S001_" in raw.name
    assert (raw / "neo_live_stage1.db-wal").read_bytes() == wal_before, "the raw -wal must be the crashed one, untouched"
    assert committed <= seqs_in(raw.with_suffix(".db"))
    assert runtime.health("S001")["stop"]["classification"] == "unclean_previous_session"
    assert runtime.health("S002")["integrity_check"] == "ok"


def test_a_start_refused_by_the_gate_gets_no_post_backup(runtime: Runtime) -> None:
    make_db(runtime.db)
    corrupt_root_page(runtime.db)
    assert runtime.cli("session-start").rc == 3
    r = runtime.stop(None, None, "exit-code")  # systemd leaves EXIT_CODE unset: the engine never ran
    assert r.rc == 0
    assert runtime.health("S001")["stop"]["classification"] == "start_failed"
    assert runtime.files("post_session") == [] and runtime.files("abnormal_stop") == []


def test_a_refused_start_does_not_use_up_the_session_id(runtime: Runtime) -> None:
    make_db(runtime.db)
    good = runtime.db.read_bytes()
    corrupt_root_page(runtime.db)
    assert runtime.cli("session-start").rc == 3
    runtime.stop(None, None, "exit-code")
    runtime.db.write_bytes(good)  # the operator restores
    assert runtime.cli("session-start").rc == 0
    attempts = runtime.health("S001")["start_attempts"]
    assert [a["result"] for a in attempts] == ["refused", "opened"]


def test_explicit_session_id_and_counter(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.write_config(session_first_number=53)
    assert runtime.cli("session-start").rc == 0
    runtime.stop()
    assert runtime.cli("session-start", "--session", "S060").rc == 0
    runtime.stop()
    assert runtime.cli("session-start").rc == 0
    assert (runtime.state / "session.env").read_text().startswith("NEO_SESSION_ID=S061\n")
    assert {p.name for p in (runtime.exports / "sessions").iterdir()} == {"S053", "S060", "S061"}


def test_db_health_is_merged_into_the_engine_summary(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.write_config(session_summary_path=str(runtime.exports / "sessions" / "{session}" / "summary.json"))
    runtime.cli("session-start")
    summary = runtime.exports / "sessions" / "S001" / "summary.json"
    summary.write_text(json.dumps({"session": "S001", "pnl": 12.5}))
    runtime.stop()
    doc = json.loads(summary.read_text())
    assert doc["pnl"] == 12.5
    assert doc["db_health"]["post_session_backup"].startswith("neo_live_stage1_post_S001_")
    assert doc["db_health"]["integrity_check"] == "ok" and doc["db_health"]["db_path"] == str(runtime.db)


def test_first_run_without_a_db_is_allowed_only_once(runtime: Runtime) -> None:
    assert runtime.cli("session-start").rc == 0, "no DB, no backups, no history: the first run"
    make_db(runtime.db)
    runtime.stop()
    runtime.db.unlink()
    r = runtime.cli("session-start")
    assert r.rc == 6 and "does not exist" in r.err and "restore" in r.err


def test_session_stop_with_nothing_open_is_a_no_op(runtime: Runtime) -> None:
    r = runtime.stop()
    assert r.rc == 0 and "nothing to do" in r.err


def test_the_pre_backup_is_proven_by_comparison_with_the_checked_live_db(runtime: Runtime) -> None:
    make_db(runtime.db, rows=3000)
    assert runtime.cli("session-start").rc == 0
    [pre] = runtime.files("pre_session")
    manifest = json.loads(pre.with_suffix(".json").read_text())
    assert manifest["verified_by"].startswith("integrity_check of the live DB, and a page-by-page comparison")
    assert manifest["integrity_check"] == ["ok"] and manifest["row_counts"] == {"trades": 3000}
    import sqlite3

    conn = sqlite3.connect(f"file:{pre}?mode=ro", uri=True)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "the comparison's claim holds: the copy checks ok itself"
    conn.close()


def test_after_a_crash_with_a_hot_wal_the_copy_itself_is_checked(runtime: Runtime, writer_factory) -> None:
    make_db(runtime.db)
    w = writer_factory(runtime.db, rate=0)
    w.wait_commits(100)
    w.kill(signal.SIGKILL)
    assert runtime.cli("session-start").rc == 0
    [pre] = runtime.files("pre_session")
    assert json.loads(pre.with_suffix(".json").read_text())["verified_by"] == "integrity_check of the copy"


# ---- the session counter and the state files (issue 12, item 16) ----

BAD_COUNTERS = {
    "garbage": b"\x00\x01 not json {",
    "a string number": b'{"last_number": "7", "session": "S007"}',
    "no last_number": b'{"session": 123}',
    "a list": b"[2]",
    "negative": b'{"last_number": -4}',
    "a boolean": b'{"last_number": true}',
    "empty": b"",
}


def two_sessions(runtime: Runtime) -> None:
    for _ in range(2):
        assert runtime.cli("session-start").rc == 0
        assert runtime.stop().rc == 0


@pytest.mark.parametrize("bad", [*BAD_COUNTERS, "missing"])
def test_a_corrupt_or_missing_counter_never_reuses_a_session_id(runtime: Runtime, bad: str) -> None:
    make_db(runtime.db)
    two_sessions(runtime)
    counter = runtime.state / "session_counter.json"
    assert json.loads(counter.read_text())["last_number"] == 2
    s001 = (runtime.exports / "sessions" / "S001" / "db_health.json").read_bytes()
    if bad == "missing":
        counter.unlink()
    else:
        counter.write_bytes(BAD_COUNTERS[bad])
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err
    assert str(counter) in r.err and "S002" in r.err, f"the recovery is reported, naming the file and the evidence:\n{r.err}"
    assert (runtime.state / "session.env").read_text().startswith("NEO_SESSION_ID=S003\n")
    assert (runtime.exports / "sessions" / "S001" / "db_health.json").read_bytes() == s001, "S001's db_health is untouched"
    assert json.loads(counter.read_text())["last_number"] == 3
    assert any("session_counter.json" in w for w in runtime.health("S003")["warnings"])


@pytest.mark.parametrize("kept", ["backups", "exports"])
def test_the_counter_is_recovered_from_either_the_backups_or_the_exports(runtime: Runtime, kept: str) -> None:
    make_db(runtime.db)
    two_sessions(runtime)
    (runtime.state / "session_counter.json").write_bytes(BAD_COUNTERS["garbage"])
    shutil.rmtree(runtime.exports / "sessions" if kept == "backups" else runtime.backups)
    assert runtime.cli("session-start").rc == 0
    assert (runtime.state / "session.env").read_text().startswith("NEO_SESSION_ID=S003\n")


def test_a_corrupt_counter_with_no_evidence_is_refused_with_the_fix(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.state.mkdir()
    counter = runtime.state / "session_counter.json"
    counter.write_bytes(BAD_COUNTERS["a string number"])
    r = runtime.cli("session-start")
    assert r.rc == 2, r.err
    assert str(counter) in r.err and "last_number" in r.err and "Traceback" not in r.err, r.err
    assert runtime.files("pre_session") == [] and not (runtime.state / "session.env").exists()
    assert not (runtime.exports / "sessions").exists()
    counter.write_text('{"last_number": 41}')  # the fix the message gives
    assert runtime.cli("session-start").rc == 0
    assert (runtime.state / "session.env").read_text().startswith("NEO_SESSION_ID=S042\n")


def test_a_refused_first_start_still_does_not_use_up_its_id_when_the_counter_is_missing(runtime: Runtime) -> None:
    make_db(runtime.db)
    good = runtime.db.read_bytes()
    corrupt_root_page(runtime.db)
    assert runtime.cli("session-start").rc == 3  # S001 refused: exports/sessions/S001 exists, no counter
    runtime.stop(None, None, "exit-code")
    runtime.db.write_bytes(good)
    assert runtime.cli("session-start").rc == 0
    assert (runtime.state / "session.env").read_text().startswith("NEO_SESSION_ID=S001\n")


@pytest.mark.parametrize(
    "doc",
    [
        {"session": 123, "state": "open"},
        {"session": ["S001"], "state": "open"},
        {"session": "../../etc", "state": "open"},
        {"session": "pre", "state": "open"},
        {"session": "S001", "state": 7},
        [1, 2],
        "open",
    ],
    ids=repr,
)
def test_wrong_types_in_current_session_are_reported_not_a_crash(runtime: Runtime, doc: object) -> None:
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0  # S001 opens
    current = runtime.state / "current_session.json"
    current.write_text(json.dumps(doc))
    r = runtime.cli("session-start")  # as after a crash that left a damaged marker
    assert r.rc == 0, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err
    assert str(current) in r.err, r.err
    raws = [p for p in (runtime.backups / "abnormal_stop").iterdir() if p.name.endswith(".raw")]
    assert len(raws) == 1, "an unreadable marker counts as an unclean previous session: its raw files are kept"
    assert (runtime.state / "session.env").read_text().startswith("NEO_SESSION_ID=S002\n")
    current.write_text(json.dumps(doc))
    r = runtime.stop("exited", "0")
    assert r.rc == 0 and str(current) in r.err and "Traceback" not in r.err and "internal error" not in r.err, r.err
    assert not current.exists()
    assert runtime.cli("session-start").rc == 0  # and the next one is ordinary
    assert (runtime.state / "session.env").read_text().startswith("NEO_SESSION_ID=S003\n")
