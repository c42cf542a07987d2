"""Config: every error names the key, the bad value and what is allowed; exit 2."""

from __future__ import annotations

import dataclasses
import resource
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import NEO_DB, SYSTEM_PYTHON, Runtime, make_db

GOOD = {
    "db_path": "/opt/neo/runtime/db/neo_live_stage1.db",
    "backup_dir": "/opt/neo/runtime/backups",
    "exports_dir": "/opt/neo/runtime/exports",
    "state_dir": "/opt/neo/runtime/state",
}


def validate(runtime: Runtime, tmp_path: Path, body: object) -> tuple[int, str]:
    path = tmp_path / "candidate.yml"
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body))
    r = runtime.cli("config", "validate", str(path))
    assert "Traceback" not in r.err
    return r.rc, r.err + r.out


def test_a_good_config_validates(runtime: Runtime, tmp_path: Path) -> None:
    rc, out = validate(runtime, tmp_path, {"db_safeguards": GOOD | {"backup_retention_count": 10, "backup_retention_days": 14}})
    assert rc == 0 and "valid" in out


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"db_path": "db/neo.db"}, ["'db_path'", "'db/neo.db'", "absolute path"]),
        ({"backup_retention_count": -3}, ["'backup_retention_count'", "-3", "whole number from 1"]),
        ({"backup_retention_days": 7}, ["'backup_retention_days'", "7", "FLAG-023"]),
        ({"abnormal_retention_days": "thirty"}, ["'abnormal_retention_days'", "'thirty'"]),
        ({"integrity_check_on_startup": "yes please"}, ["'integrity_check_on_startup'", "true or false"]),
        ({"backup_retention_count": True}, ["'backup_retention_count'", "True"]),
        ({"backup_dir": "/opt/neo/runtime/db/backups"}, ["'backup_dir'", "inside the DB's directory"]),
        ({"exports_dir": "/opt/neo/runtime/db"}, ["'exports_dir'", "inside the DB's directory"]),
        ({"backup_retension_days": 20}, ["'backup_retension_days'", "unknown", "did you mean 'backup_retention_days'"]),
        ({"clean_exit_statuses": [0, 300]}, ["'clean_exit_statuses'", "0 to 255"]),
        ({"db_path": "/opt/neo/../etc/neo.db"}, ["'db_path'", "'..'"]),
        ({"session_summary_path": "/opt/neo/summary.json"}, ["'session_summary_path'", "{session}"]),
    ],
)
def test_each_bad_value_is_named_with_what_is_allowed(runtime: Runtime, tmp_path: Path, change: dict, expect: list[str]) -> None:
    rc, out = validate(runtime, tmp_path, {"db_safeguards": GOOD | change})
    assert rc == 2
    for text in expect:
        assert text in out, f"{text!r} missing from:\n{out}"
    assert "candidate.yml" in out


def test_every_problem_is_reported_at_once(runtime: Runtime, tmp_path: Path) -> None:
    rc, out = validate(runtime, tmp_path, {"db_safeguards": {"db_path": "x", "backup_retention_count": -1, "nope": 1}})
    assert rc == 2
    for key in ("'db_path'", "'backup_retention_count'", "'nope'", "'backup_dir' is missing", "'state_dir' is missing"):
        assert key in out


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ("db_safeguards: [unclosed", "does not parse at line 1"),
        ("just a string", "top-level 'db_safeguards:' key"),
        ("other: 1", "top-level 'db_safeguards:' key"),
        ("db_safeguards: 5", "must be a mapping"),
        ("", "top-level 'db_safeguards:' key"),
    ],
)
def test_malformed_documents(runtime: Runtime, tmp_path: Path, body: str, expect: str) -> None:
    rc, out = validate(runtime, tmp_path, body)
    assert rc == 2 and expect in out


def test_missing_config_says_where_config_comes_from(runtime: Runtime, tmp_path: Path) -> None:
    r = runtime.cli("check", env=runtime.env(NEO_DB_CONFIG=str(tmp_path / "absent.yml")))
    assert r.rc == 2
    assert "absent.yml" in r.err and "--config" in r.err and "NEO_DB_CONFIG" in r.err


def test_config_flag_wins_over_the_environment(runtime: Runtime, tmp_path: Path) -> None:
    r = runtime.cli("--config", str(runtime.config_path), "config", "show", "--json", env=runtime.env(NEO_DB_CONFIG="/nonexistent"))
    assert r.rc == 0
    assert r.json["db_safeguards"]["backup_retention_count"] == 10


# ---- duplicate keys (issue 12, item 13) ----


def good_text(runtime: Runtime) -> str:
    return yaml.safe_dump({"db_safeguards": runtime.settings}, sort_keys=False)


@pytest.mark.parametrize(
    ("extra", "key", "at"),
    [
        ("  integrity_check_on_startup: true\n  integrity_check_on_startup: false\n", "integrity_check_on_startup", 2),
        ("  backup_retention_days: 30\n  'backup_retention_days': 14\n", "backup_retention_days", 2),
        ("db_safeguards:\n  db_path: /elsewhere/neo.db\n", "db_safeguards", 1),
        ("  layout: snapshots\n  extra_files:\n  - path: /srv/a.json\n    dest: config/a.json\n    path: /srv/b.json\n", "path", 5),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key_and_its_lines(runtime: Runtime, tmp_path: Path, extra: str, key: str, at: int) -> None:
    base = good_text(runtime)
    rc, out = validate(runtime, tmp_path, base)
    assert rc == 0, out  # the control: the same file without the duplicate is valid
    rc, out = validate(runtime, tmp_path, base + extra)
    assert rc == 2, out
    assert f"'{key}'" in out and "twice" in out, out
    assert f"line {len(base.splitlines()) + at}" in out, out  # where the second one is


def test_a_second_integrity_check_false_cannot_turn_the_gate_off(runtime: Runtime) -> None:
    make_db(runtime.db)
    base = good_text(runtime)
    runtime.config_path.write_text(base + "  integrity_check_on_startup: true\n  integrity_check_on_startup: false\n")
    r = runtime.cli("session-start")
    assert r.rc == 2 and "'integrity_check_on_startup'" in r.err, r.err
    assert "Traceback" not in r.err
    assert runtime.files("pre_session") == [] and not runtime.state.exists()
    runtime.config_path.write_text(base + "  integrity_check_on_startup: true\n")
    r = runtime.cli("session-start")
    assert r.rc == 0, r.err
    assert runtime.health("S001")["integrity_check"] == "ok" and len(runtime.files("pre_session")) == 1


BOMB = "  snapshot_notes: [&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]" + "".join(
    f", &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
) + "]\n"  # fmt: skip


def run_limited(runtime: Runtime, *args: str, memory: int = 512 << 20) -> subprocess.CompletedProcess[str]:
    """The CLI under a memory rlimit and a timeout: a regression fails the test instead of eating the machine."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(
        [SYSTEM_PYTHON, str(NEO_DB), *args],
        capture_output=True,
        text=True,
        env=runtime.env(),
        timeout=60,
        preexec_fn=limit,  # setrlimit only, in the child
        check=False,
    )


def test_a_billion_laughs_config_is_refused_fast_with_exit_2(runtime: Runtime, tmp_path: Path) -> None:
    assert len(BOMB.encode()) <= 1024, len(BOMB)
    candidate = tmp_path / "candidate.yml"
    candidate.write_text(good_text(runtime))
    control = run_limited(runtime, "config", "validate", str(candidate))
    assert control.returncode == 0, control.stderr  # the same config without the bomb, under the same limits
    candidate.write_text(good_text(runtime) + BOMB)
    for args in (["config", "validate", str(candidate)], ["--config", str(candidate), "check"]):
        r = run_limited(runtime, *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr[-2000:])
        assert "alias" in r.stderr and "*a" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert f"line {len(good_text(runtime).splitlines()) + 1}" in r.stderr, r.stderr


def test_any_alias_is_refused_and_the_written_out_value_is_accepted(runtime: Runtime, tmp_path: Path) -> None:
    rc, out = validate(runtime, tmp_path, good_text(runtime) + "  session_first_number: 20\n  backup_retention_count: 20\n")
    assert rc == 0, out
    rc, out = validate(runtime, tmp_path, good_text(runtime) + "  session_first_number: &n 20\n  backup_retention_count: *n\n")
    assert rc == 2 and "alias" in out and "*n" in out, out


def test_a_merge_key_cannot_hide_a_second_value(runtime: Runtime, tmp_path: Path) -> None:
    rc, out = validate(runtime, tmp_path, good_text(runtime) + "  integrity_check_on_startup: true\n")
    assert rc == 0, out
    # YAML's merge takes the FIRST of a list of mappings: a reader who expects the last one sees the gate on.
    merged = "  <<: [{integrity_check_on_startup: false}, {integrity_check_on_startup: true}]\n"
    rc, out = validate(runtime, tmp_path, good_text(runtime) + merged)
    assert rc == 2 and "merge key" in out and f"line {len(good_text(runtime).splitlines()) + 1}" in out, out


# ---- paths that must be refused (issue 12, item 15) ----


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"backup_dir": "/opt/neo/runtime/exports"}, ["'backup_dir'", "'exports_dir'", "readers"]),
        ({"backup_dir": "/opt/neo/runtime/exports/backups"}, ["'backup_dir'", "'/opt/neo/runtime/exports/backups'", "readers"]),
        ({"backup_dir": "/opt/neo/runtime/exports/./backups/"}, ["'backup_dir'", "readers"]),
        ({"exports_dir": "/opt/neo/runtime/backups/exports"}, ["'exports_dir'", "'backup_dir'", "readers"]),
        ({"db_path": "/opt/neo/runtime/exports/db/neo_live_stage1.db"}, ["'db_path'", "'exports_dir'", "readers"]),
    ],
)
def test_backups_or_the_db_where_readers_can_read_them_are_refused(
    runtime: Runtime, tmp_path: Path, change: dict, expect: list[str]
) -> None:
    rc, out = validate(runtime, tmp_path, {"db_safeguards": GOOD})
    assert rc == 0, out
    rc, out = validate(runtime, tmp_path, {"db_safeguards": GOOD | change})
    assert rc == 2, out
    for text in expect:
        assert text in out, f"{text!r} missing from:\n{out}"


def test_an_exports_dir_that_is_a_symlink_to_the_backups_is_refused(runtime: Runtime, tmp_path: Path) -> None:
    backups, exports, elsewhere = tmp_path / "rt" / "backups", tmp_path / "rt" / "exports", tmp_path / "rt" / "elsewhere"
    backups.mkdir(parents=True)
    elsewhere.mkdir()
    exports.symlink_to(elsewhere)
    paths = GOOD | {"backup_dir": str(backups), "exports_dir": str(exports)}
    rc, out = validate(runtime, tmp_path, {"db_safeguards": paths})
    assert rc == 0, out
    exports.unlink()
    exports.symlink_to(backups)
    rc, out = validate(runtime, tmp_path, {"db_safeguards": paths})
    # the key names the fix; a long value (a deep tmp_path, as under xdist) is shortened in the message
    assert rc == 2 and "'exports_dir'" in out and "'backup_dir'" in out, out


PATH_KEYS = {
    "db_path": "/opt/neo/runtime/db/neo_live_stage1.db",
    "backup_dir": "/opt/neo/runtime/backups",
    "exports_dir": "/opt/neo/runtime/exports",
    "state_dir": "/opt/neo/runtime/state",
    "unit_dir": "/etc/systemd/system",
    "hetzner_fact_path": "/etc/ansible/facts.d/hetzner_backups.fact",
    "session_summary_path": "/opt/neo/runtime/exports/sessions/{session}/summary.json",
}


@pytest.mark.parametrize("key", [*PATH_KEYS, "extra_files"])
@pytest.mark.parametrize("bad", ["\nNEO_SESSION_ID=S001", "\r", "\t", "\x1b[2J", "\x85", "\\n"])
def test_a_path_with_a_newline_or_another_control_character_is_refused(runtime: Runtime, tmp_path: Path, key: str, bad: str) -> None:
    def section(suffix: str) -> dict:
        if key == "extra_files":
            return GOOD | {"layout": "snapshots", "extra_files": [{"path": f"/srv/registry.json{suffix}", "dest": "config/r.json"}]}
        return GOOD | {key: PATH_KEYS[key].replace("/opt/neo", f"/opt/neo{suffix}", 1).replace("/etc/", f"/etc{suffix}/", 1)}

    rc, out = validate(runtime, tmp_path, {"db_safeguards": section("-x")})
    assert rc == 0, out
    rc, out = validate(runtime, tmp_path, {"db_safeguards": section(bad)})
    assert rc == 2, out
    assert f"'{key}'" in out and ("control character" in out or "backslash" in out), out


def test_a_newline_in_db_path_never_reaches_session_env(runtime: Runtime) -> None:
    make_db(runtime.db)
    good = runtime.settings["db_path"]
    runtime.write_config(db_path=f"{good}\nLD_PRELOAD=/tmp/evil.so")
    r = runtime.cli("session-start")
    assert r.rc == 2 and "'db_path'" in r.err and "Traceback" not in r.err, r.err
    assert not runtime.state.exists() and not runtime.backups.exists()
    runtime.write_config(db_path=good)
    assert runtime.cli("session-start").rc == 0
    assert (runtime.state / "session.env").read_text() == f"NEO_SESSION_ID=S001\nNEO_DB_PATH={good}\n"


@pytest.mark.parametrize("bad", ["\nLD_PRELOAD=/tmp/evil.so", "\r", "\\", " "])
def test_session_env_refuses_a_value_systemd_would_split_even_past_validation(tmp_path: Path, bad: str) -> None:
    from neo_db.actions import session
    from neo_db.config import Config
    from neo_db.errors import UsageError

    state = tmp_path / "state"
    state.mkdir()
    good = Config(db_path=tmp_path / "db" / "neo.db", backup_dir=tmp_path / "b", exports_dir=tmp_path / "e", state_dir=state)
    session._write_env(good, "S001")
    assert (state / "session.env").read_text() == f"NEO_SESSION_ID=S001\nNEO_DB_PATH={tmp_path}/db/neo.db\n"
    (state / "session.env").unlink()
    bad_cfg = dataclasses.replace(good, db_path=Path(f"{tmp_path}/db/neo.db{bad}"))  # a Config built without validate()
    with pytest.raises(UsageError, match="NEO_DB_PATH"):
        session._write_env(bad_cfg, "S001")
    assert list(state.iterdir()) == []


# ---- issue 17 "one source of truth": SCHEMA declares each key; the role's check runs through it ----


def test_each_schema_default_is_the_configs_default() -> None:
    """SCHEMA's defaults (what the role's argument_specs show) are the ones Config applies to a key left out."""
    from neo_db import config as config_mod

    paths = {k: Path(v) for k, v in GOOD.items()}
    applied = config_mod.Config(**paths).as_dict()
    assert set(applied) - {"db_link"} == set(config_mod.SCHEMA)
    for key, field in config_mod.SCHEMA.items():
        assert field.required or applied[key] == field.default, (key, applied[key], field.default)
    # The required keys are exactly the ones Config cannot default.
    assert {k for k, f in config_mod.SCHEMA.items() if f.required} == set(GOOD)


def test_role_vars_names_the_role_variable_and_schema_only_leaves_the_rules_between_keys_to_the_host(
    runtime: Runtime, tmp_path: Path
) -> None:
    """The role's check: each refusal names the neo_safeguards variable (neo_db_bin is set by neo_safeguards_bin,
    unit_dir by none); --schema-only checks each key alone, without the rules between keys that look at paths."""
    body = {"db_safeguards": GOOD | {"backup_retention_days": 7, "neo_db_bin": "neo-db", "unit_dir": "systemd"}}
    path = tmp_path / "rendered.yml"
    path.write_text(yaml.safe_dump(body))
    r = runtime.cli("config", "validate", "--role-vars", str(path))
    assert r.rc == 2, r.err
    assert (
        "neo_safeguards_backup_retention_days (key 'backup_retention_days'): value 7 is not allowed; expected a whole number from 14"
        in r.err
    )
    assert "neo_safeguards_bin (key 'neo_db_bin'): value 'neo-db'" in r.err
    assert "  - key 'unit_dir': value 'systemd'" in r.err, r.err
    assert "set the role variables named above" in r.err
    # Without --role-vars the same file is refused with the config's own key names (what test cases above check).
    r = runtime.cli("config", "validate", str(path))
    assert r.rc == 2 and "key 'backup_retention_days': value 7" in r.err and "neo_safeguards_" not in r.err, r.err
    # A rule between keys (backups where readers of exports_dir read): refused in full, not with --schema-only.
    path.write_text(yaml.safe_dump({"db_safeguards": GOOD | {"backup_dir": "/opt/neo/runtime/exports/b"}}))
    r = runtime.cli("config", "validate", "--role-vars", str(path))
    assert (
        r.rc == 2 and "neo_safeguards_backup_dir (key 'backup_dir')" in r.err and "neo_safeguards_exports_dir (key 'exports_dir')" in r.err
    )
    r = runtime.cli("config", "validate", "--role-vars", "--schema-only", str(path))
    assert r.rc == 0 and "holds allowed values" in r.out, r.err


def test_a_unit_name_starting_with_a_dash_is_refused_as_a_systemctl_option(runtime: Runtime, tmp_path: Path) -> None:
    """`systemctl show -Hroot@host.service` asks systemd on another host over ssh (as root, from the reboot guard)."""
    rc, out = validate(runtime, tmp_path, {"db_safeguards": GOOD | {"engine_unit": "neo-engine@a-1", "backup_timer": "neo-db-x.timer"}})
    assert rc == 0, out  # positive control: dashes inside a name are fine
    for key, bad in (("engine_unit", "-Hroot@evil"), ("backup_timer", "-Mevil.timer")):
        rc, out = validate(runtime, tmp_path, {"db_safeguards": GOOD | {key: bad}})
        assert rc == 2 and f"key '{key}': value {bad!r} is not allowed" in out and "not starting with '-'" in out, out
