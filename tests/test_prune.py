"""Retention: count AND age, newest verified, pre/post pairs; dry-run changes nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from conftest import Runtime, make_db
from neo_db import catalog
from neo_db import config as config_mod
from neo_db.core import backups

NOW = catalog.utcnow()


def days_ago(n: float) -> dt.datetime:
    return (NOW - dt.timedelta(days=n)).replace(microsecond=0)


def seed(runtime: Runtime, phase: str, session: str, age_days: float) -> Path:
    cfg = config_mod.load(runtime.config_path)
    return backups.take_backup(cfg, phase, session, "test", now=days_ago(age_days)).path


def names(runtime: Runtime, phase_dir: str) -> set[str]:
    return {p.name for p in runtime.files(phase_dir)}


def prune(runtime: Runtime, *extra: str) -> dict:
    r = runtime.cli("prune", "--json", *extra)
    assert r.rc == 0, r.err
    return r.json


def test_count_and_age_must_both_be_exceeded(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.write_config(backup_retention_count=3)
    old = [seed(runtime, "pre", f"S{i:03d}", 40 - i) for i in range(1, 6)]  # 39..35 days old
    young = [seed(runtime, "pre", f"S{i:03d}", 5) for i in range(6, 8)]
    prune(runtime)
    kept = names(runtime, "pre_session")
    # newest 3: S007, S006 (young) and S005; S004..S001 are beyond the count and old.
    assert kept == {p.name for p in [*young, old[4]]}


def test_young_backups_are_kept_beyond_the_count(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.write_config(backup_retention_count=1)
    made = [seed(runtime, "post", f"S{i:03d}", 13 - i) for i in range(1, 6)]  # 12..8 days old
    prune(runtime)
    assert names(runtime, "post_session") == {p.name for p in made}


def test_the_newest_verified_backup_is_never_removed(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.write_config(backup_retention_count=1)
    good = seed(runtime, "pre", "S001", 60)
    bad = seed(runtime, "pre", "S002", 50)
    manifest = bad.with_suffix(".json")
    doc = json.loads(manifest.read_text())
    doc["integrity_check"] = ["*** in database main ***", "Page 7 is never used"]
    manifest.write_text(json.dumps(doc))
    prune(runtime)
    assert names(runtime, "pre_session") == {good.name, bad.name}


def test_a_session_pair_is_kept_or_removed_together(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.write_config(backup_retention_count=2)
    pres = [seed(runtime, "pre", f"S{i:03d}", 50 - i) for i in range(1, 5)]
    posts = [seed(runtime, "post", f"S{i:03d}", 3) for i in (1, 2)]  # S001/S002 posts are young
    out = prune(runtime)
    kept_pre = names(runtime, "pre_session")
    assert pres[0].name in kept_pre and pres[1].name in kept_pre, "pre halves of kept pairs stay"
    assert names(runtime, "post_session") == {p.name for p in posts}
    reasons = {d["name"]: d["reason"] for d in out["decisions"]}
    assert "pairs with a kept backup of session S001" in reasons[pres[0].stem]


def test_abnormal_stops_use_their_own_longer_retention(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.write_config(backup_retention_count=1, backup_retention_days=14, abnormal_retention_days=30)
    pre = [seed(runtime, "pre", "S001", 20), seed(runtime, "pre", "S002", 1)]
    ab = [seed(runtime, "abnormal", "S001", 20), seed(runtime, "abnormal", "S002", 1)]
    prune(runtime)
    assert names(runtime, "pre_session") == {pre[1].name}
    assert names(runtime, "abnormal_stop") == {p.name for p in ab}


def test_dry_run_removes_nothing_and_says_what_would_go(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.write_config(backup_retention_count=1)
    made = [seed(runtime, "pre", f"S{i:03d}", 30 - i) for i in range(1, 4)]
    before = sorted(p.name for p in (runtime.backups / "pre_session").iterdir())
    r = runtime.cli("prune", "--dry-run")
    assert r.rc == 0
    assert "[dry-run] would remove" in r.err and made[0].stem in r.out
    assert sorted(p.name for p in (runtime.backups / "pre_session").iterdir()) == before


def test_prune_removes_manifest_and_raw_dir_with_the_copy(runtime: Runtime) -> None:
    make_db(runtime.db)
    runtime.write_config(backup_retention_count=1, abnormal_retention_days=14)
    old = seed(runtime, "abnormal", "S001", 40)
    raw = old.with_suffix(".raw")
    raw.mkdir()
    (raw / "neo_live_stage1.db").write_bytes(b"x")
    seed(runtime, "abnormal", "S002", 1)
    prune(runtime)
    assert not old.exists() and not old.with_suffix(".json").exists() and not raw.exists()


def test_a_planted_symlink_is_neither_followed_nor_deleted(runtime: Runtime, tmp_path: Path) -> None:
    make_db(runtime.db)
    runtime.write_config(backup_retention_count=1)
    seed(runtime, "pre", "S001", 1)
    victim = tmp_path / "victim.db"
    victim.write_bytes(b"precious")
    link = runtime.backups / "pre_session" / f"neo_live_stage1_pre_S000_{days_ago(90).strftime(catalog.TS_FORMAT)}.db"
    link.symlink_to(victim)
    r = runtime.cli("prune")
    assert r.rc == 0 and "ignoring symlink" in r.err
    assert victim.read_bytes() == b"precious" and link.is_symlink()
    assert runtime.cli("list").rc == 0


def test_list_shows_phase_session_age_size_and_status(runtime: Runtime) -> None:
    make_db(runtime.db)
    seed(runtime, "pre", "S001", 2)
    seed(runtime, "post", "S001", 2)
    r = runtime.cli("list")
    assert r.rc == 0
    header = r.out.splitlines()[0].split()
    assert header == ["PHASE", "SESSION", "CREATED", "AGE", "SIZE", "STATUS", "NAME"]
    assert "2d" in r.out and "verified" in r.out
    rows = runtime.cli("list", "--json").json["backups"]
    assert {(x["phase"], x["session"], x["verified"]) for x in rows} == {("pre", "S001", True), ("post", "S001", True)}


# ---- a clock that ran ahead (issue 12, item 6) ----


def seed_at(runtime: Runtime, phase: str, session: str, when: dt.datetime) -> Path:
    cfg = config_mod.load(runtime.config_path)
    return backups.take_backup(cfg, phase, session, "test", now=when.replace(microsecond=0)).path


@pytest.mark.parametrize(("count", "real_removed"), [(10, 0), (3, 2)])
def test_backups_dated_in_the_future_never_push_genuine_ones_out(runtime: Runtime, count: int, real_removed: int) -> None:
    make_db(runtime.db)
    runtime.write_config(backup_retention_count=count)
    real = [seed(runtime, "pre", f"S{i:03d}", 40 - i) for i in range(1, 6)]  # 39..35 days old: only the count keeps them
    # Ten backups "named in 2027": a year ahead of whatever today is, so the test stays true later on.
    ahead = [seed_at(runtime, "pre", f"S{900 + i}", catalog.utcnow() + dt.timedelta(days=365 + i)) for i in range(10)]
    planned = prune(runtime, "--dry-run")
    decisions = {d["name"]: d for d in planned["decisions"]}
    removed = {name for name, d in decisions.items() if not d["keep"]}
    assert removed == {p.stem for p in real[:real_removed]}, "the count decides among the genuine backups only"
    newest = decisions[real[-1].stem]
    assert newest["keep"] and not newest["future_dated"], "the real newest verified backup stays"
    for p in ahead:
        d = decisions[p.stem]
        assert d["keep"] and d["future_dated"] and "in the future" in d["reason"], d
    assert not any(decisions[p.stem]["future_dated"] for p in real)
    r = runtime.cli("prune")
    assert r.rc == 0, r.err
    for p in ahead:
        assert p.stem in r.err, f"prune names the future-dated {p.stem}:\n{r.err}"
    assert names(runtime, "pre_session") == {p.name for p in [*real[real_removed:], *ahead]}


def test_list_and_drill_name_future_dated_backups_and_never_take_them_as_the_newest(runtime: Runtime) -> None:
    make_db(runtime.db)
    real = seed(runtime, "pre", "S001", 1)
    near = seed_at(runtime, "pre", "S002", catalog.utcnow() + dt.timedelta(minutes=2))  # within the tolerance
    ahead = seed_at(runtime, "pre", "S003", catalog.utcnow() + dt.timedelta(days=400))
    rows = {x["name"]: x for x in runtime.cli("list", "--json").json["backups"]}
    assert rows[ahead.stem]["future_dated"] is True
    assert rows[real.stem]["future_dated"] is False and rows[near.stem]["future_dated"] is False
    r = runtime.cli("list")
    assert r.rc == 0
    [line] = [x for x in r.out.splitlines() if ahead.stem in x]
    assert "future-dated" in line
    assert not any("future-dated" in x for x in r.out.splitlines() if near.stem in x or real.stem in x)
    assert ahead.stem in r.err and "in the future" in r.err
    drilled = runtime.cli("drill", "--json").json["phases"]["pre"]
    assert drilled["backup"] == near.stem, "the newest genuine backup is drilled, not the future-dated one"
