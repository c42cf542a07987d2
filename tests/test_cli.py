"""Bad input at the command line: a clear error, exit 2, no traceback, nothing changed on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Runtime, make_db
from neo_db import config as config_mod
from neo_db.errors import ConfigError


def snapshot(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p)] = p.lstat().st_mtime_ns
    return out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["backup", "--phase", "sideways"],
        ["prune", "--dry-run", "--force"],
        ["session-start", "--session", "../../etc"],
        ["session-start", "--session", ""],
        ["session-start", "--session", "S" * 300],
        ["session-stop", "--session", "S053/../../x"],
        ["backup", "--session", "a b"],
        ["health", "--session", "-1"],
        ["config", "validate"],
    ],
)
def test_bad_arguments_exit_2_without_a_traceback_or_a_change(runtime: Runtime, argv: list[str]) -> None:
    make_db(runtime.db)
    before = snapshot(runtime.root)
    r = runtime.cli(*argv)
    assert r.rc == 2, (argv, r.rc, r.err)
    assert "Traceback" not in r.err and r.err.strip()
    assert snapshot(runtime.root) == before


def test_help_and_version(runtime: Runtime) -> None:
    r = runtime.cli("--help")
    assert r.rc == 0 and "session-start" in r.out
    assert runtime.cli("--version").out.startswith("neo-db ")


def test_health_of_an_unknown_session_is_a_clear_error(runtime: Runtime) -> None:
    r = runtime.cli("health", "--session", "S999")
    assert r.rc == 2 and "S999" in r.err


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.text(max_size=30),
    st.sampled_from(["/opt/neo/runtime/db/x.db", "relative/x", "/opt/neo/runtime/db", "/tmp/../etc", "{session}"]),
)  # fmt: skip
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=8
)
_keys = st.sampled_from([*config_mod.SCHEMA, "unknown_key", "db_path "])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=st.dictionaries(_keys, _values, max_size=12), wrap=st.booleans())
def test_fuzzed_configs_either_load_or_fail_with_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, section: dict, wrap: bool
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.yml"
    path.write_text(yaml.safe_dump({"db_safeguards": section} if wrap else section))
    try:
        cfg = config_mod.load(path)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert str(path) in exc.message
        return
    assert cfg.db_path.is_absolute() and cfg.backup_retention_days >= 14


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_fuzzed_raw_text_never_escapes_as_another_exception(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.getbasetemp() / "raw.yml"
    path.write_bytes(text.encode("utf-8", "replace"))
    try:
        cfg = config_mod.load(path)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError always says what is wrong"
    else:
        assert cfg.db_path.is_absolute()


# ---- phase words as session IDs (issue 12, item 17) ----


@pytest.mark.parametrize("word", ["pre", "post", "abnormal", "manual", "quarantine", "timed", "imported", "legacy", "PRE", "Quarantine"])
def test_phase_words_are_refused_as_session_ids(runtime: Runtime, word: str) -> None:
    make_db(runtime.db)
    r = runtime.cli("backup", "--session", "S007", "--json")  # the control: an ordinary ID
    assert r.rc == 0, r.err
    assert [x["session"] for x in runtime.cli("list", "--json").json["backups"]] == ["S007"]
    before = snapshot(runtime.root)
    for argv in (["session-start"], ["backup"], ["session-stop"], ["diff"], ["health"]):
        r = runtime.cli(*argv, "--session", word)
        assert r.rc == 2, (argv, r.rc, r.err)
        assert repr(word) in r.err and "reserved" in r.err and "Traceback" not in r.err, r.err
    assert snapshot(runtime.root) == before, "nothing was created or changed"
    assert runtime.cli("session-start", "--session", "S008").rc == 0
    assert {x["session"] for x in runtime.cli("list", "--json").json["backups"]} == {"S007", "S008"}


def test_health_skips_a_session_dir_named_like_a_phase_left_by_an_older_version(runtime: Runtime) -> None:
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    legacy = runtime.exports / "sessions" / "pre"
    legacy.mkdir()
    (legacy / "db_health.json").write_text('{"db_health": {"session": "pre"}}')  # the newest db_health
    r = runtime.cli("health", "--json")
    assert r.rc == 0, r.err
    assert r.json["db_health"]["session"] == "S001"
