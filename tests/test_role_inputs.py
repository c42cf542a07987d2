"""Bad Ansible variables fail early, naming the variable, the value and what is allowed.

Runs site.yml in --check mode against this machine (a local connection): the roles' argument
specs come first, then the converge stamp's check (it only reads; this machine has no stamp, so it
is not current; a value that cannot even build its arguments makes it not current too) and the
role's checks, so a bad value stops the play before any task could change
anything, and check mode guarantees nothing is changed even if a check were to let it through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import site_playbook

pytestmark = pytest.mark.ansible


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inv") / "inventory.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "ansible_become": False}
    path.write_text(yaml.safe_dump({"neo_vps": {"hosts": {"neo-input-check": host}}}))
    return path


def play(inventory: Path, tags: str, extra: dict) -> tuple[int, str]:
    return site_playbook(inventory, "--check", "--tags", tags, "-e", json.dumps(extra))


@pytest.mark.parametrize(
    ("tags", "extra", "expect"),
    [
        # Ranges: neo-db's schema (config.py SCHEMA) checks the rendered config on the controller, naming the variable.
        (
            "safeguards",
            {"neo_safeguards_backup_retention_days": 7},
            ["neo_safeguards_backup_retention_days (key 'backup_retention_days'): value 7 is not allowed", "from 14 to 3650 (FLAG-023"],
        ),
        (
            "safeguards",
            {"neo_safeguards_backup_retention_count": -1},
            ["neo_safeguards_backup_retention_count (key 'backup_retention_count'): value -1", "from 1 to 100000"],
        ),
        (
            "safeguards",
            {"neo_safeguards_notify_retries": 11},
            ["neo_safeguards_notify_retries (key 'notify_retries'): value 11", "1 to 10"],
        ),
        (
            "safeguards",
            {"neo_safeguards_clean_exit_statuses": []},
            ["neo_safeguards_clean_exit_statuses", "non-empty list of exit statuses"],
        ),
        ("safeguards", {"neo_safeguards_bin": "neo-db"}, ["neo_safeguards_bin (key 'neo_db_bin'): value 'neo-db'", "absolute path"]),
        ("safeguards", {"neo_safeguards_abnormal_retention_days": "thirty"}, ["neo_safeguards_abnormal_retention_days"]),
        ("safeguards", {"neo_safeguards_integrity_check_on_startup": "maybe"}, ["neo_safeguards_integrity_check_on_startup"]),
        ("safeguards", {"neo_safeguards_db_path": "db/neo.db"}, ["neo_safeguards_db_path", "absolute path"]),
        # Values that would break the converge stamp's arguments (a null path's dirname, a string where a list
        # goes): the stamp check fails on them and is taken as not current, so the role's checks still name them.
        ("safeguards", {"neo_safeguards_config_path": None}, ['neo_safeguards_config_path is "None": expected an absolute path']),
        ("monitoring", {"neo_monitoring_rules_path": None}, ['neo_monitoring_rules_path is "None": expected an absolute path']),
        (
            "runtime",
            {"neo_runtime_backup_subdirs": "abc"},
            ["neo_runtime_backup_subdirs must be a non-empty list of plain directory names"],
        ),
        (
            "engine",
            {"neo_engine_restart": "on-failure"},
            ['neo_engine_restart is "on-failure"', "systemd issue 11868", "on-failure or always would restart through a gate"],
        ),
        ("engine", {"neo_engine_exec_start": "demo-engine --db x"}, ["neo_engine_exec_start must start with an absolute path"]),
        (
            "safeguards",
            {"neo_safeguards_engine_exec_start": "/opt/engine/bin/run"},
            ["neo_safeguards_engine_exec_start is set", "it is now neo_engine_exec_start", "Rename it"],
        ),
        # Issue 17: the role takes nothing from the checkout; the old path into it is refused by its new name.
        (
            "safeguards",
            {"neo_safeguards_code_dir": "/srv/neo-vps/scripts"},
            ["neo_safeguards_code_dir is set", "it is now neo_safeguards_pyz", "scripts/build-pyz OUT.pyz", "Rename it"],
        ),
        ("engine", {"neo_engine_demo_src": "/nonexistent/demo-engine"}, ['neo_engine_demo_src is "/nonexistent/demo-engine"']),
        ("safeguards", {"neo_safeguards_umask": 27}, ["neo_safeguards_umask", "quoted octal"]),
        ("safeguards", {"neo_safeguards_layout": "flat"}, ["neo_safeguards_layout", "phases, snapshots"]),
        ("runtime", {"neo_runtime_backup_subdirs": ["../escape"]}, ["neo_runtime_backup_subdirs must be a non-empty list of plain"]),
        ("runtime", {"neo_runtime_extra_dirs": ["config"]}, ["neo_runtime_extra_dirs a list of", "absolute paths"]),
        ("runtime", {"neo_runtime_db_dir": "relative/db"}, ["neo_runtime_db_dir", "absolute path"]),
        # The tree is a tmpfiles.d file: a space splits its line, a % is a specifier.
        ("runtime", {"neo_runtime_logs_dir": "/opt/neo/run time/logs"}, ["neo_runtime_logs_dir", "spaces, '%'"]),
        ("runtime", {"neo_runtime_extra_dirs": ["/srv/a%b"]}, ["neo_runtime_extra_dirs a list of", "spaces, '%'"]),
        # tmpfiles.d unquotes and C-unescapes a path; a quote also ended the shell's quoting of systemd-sysusers' line
        # (a neo_runtime_root with ' and $(...) ran the command when the user was created).
        ("runtime", {"neo_runtime_root": "/opt/x'$(touch${IFS}/tmp/pwned)'/runtime"}, ["neo_runtime_root", "quotes"]),
        ("runtime", {"neo_runtime_state_dir": '/opt/neo/runtime/st"ate'}, ["neo_runtime_state_dir", "quotes"]),
        ("runtime", {"neo_runtime_extra_dirs": ["/srv/a\\x2fb"]}, ["neo_runtime_extra_dirs a list of", "backslashes"]),
        ("runtime", {"neo_runtime_backup_dir": "/opt/neo/runtime/db/backups"}, ["must lie outside neo_runtime_db_dir"]),
        ("runtime", {"neo_runtime_user": "Neo User"}, ["not a valid user or group name"]),
        ("logrotate", {"neo_logrotate_rotate": 0}, ["neo_logrotate_rotate", "at least 1"]),
        ("monitoring", {"neo_monitoring_listen_address": "9100"}, ["neo_monitoring_listen_address", "expected host:port"]),
        ("monitoring", {"neo_monitoring_notify_retries": 0}, ["neo_monitoring_notify_retries (0) 1 to 10", "bounded time"]),
        ("monitoring", {"neo_monitoring_textfile_dir": "var/lib/x"}, ["neo_monitoring_textfile_dir", "absolute path"]),
        ("host", {"neo_host_reboot_window": "3-5"}, ['neo_host_reboot_window is "3-5"', "HH:MM-HH:MM in UTC"]),
        ("host", {"neo_host_ssh_allow_cidrs": ["10.0.0.1"]}, ["not a CIDR", '["10.0.0.1"]', "203.0.113.7/32"]),
        ("host", {"neo_host_ssh_permit_root_login": "yes"}, ["neo_host_ssh_permit_root_login", "prohibit-password"]),
        ("host", {"neo_host_firewall_open_ports": [{"port": 70000, "cidrs": ["0.0.0.0/0"]}]}, ["open_ports entry", "1-65535"]),
        ("host", {"neo_host_needrestart_exclude_units": ["neo-engine"]}, ["neo_host_needrestart_exclude_units", "neo-engine.service"]),
    ],
)
def test_a_bad_variable_fails_early_and_names_itself(inventory: Path, tags: str, extra: dict, expect: list[str]) -> None:
    rc, out = play(inventory, tags, extra)
    assert rc != 0, out
    for text in expect:
        assert text in out, f"{text!r} not in:\n{out[-3000:]}"
    assert "changed=0" in out.split("PLAY RECAP")[-1]


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A neo_db.pyz built the way site.yml builds it (scripts/build-pyz), outside the checkout."""
    pyz = tmp_path_factory.mktemp("pyz") / "neo_db.pyz"
    subprocess.run([sys.executable, "-I", str(ROOT / "scripts" / "build-pyz"), str(pyz)], check=True, capture_output=True)
    return pyz


def test_the_safeguards_role_refuses_a_pyz_that_is_missing_or_does_not_run(inventory: Path, tmp_path: Path, built_pyz: Path) -> None:
    """Issue 17: neo_safeguards installs the neo_db.pyz it is given (neo_safeguards_pyz) and runs it on the
    controller first; a missing, relative or non-zip path fails before any task, naming the variable and the build."""
    text = tmp_path / "neo_db.pyz"
    text.write_text("this is not a zip\n")
    for bad, reason in (
        (str(tmp_path / "absent.pyz"), "can't open file"),
        (str(text), "SyntaxError"),
        ("neo_db.pyz", "not set or not an absolute path"),
        (None, "not set or not an absolute path"),
    ):
        rc, out = play(inventory, "safeguards", {"neo_safeguards_pyz": bad})
        assert rc != 0, out[-3000:]
        for expect in (f"neo_safeguards_pyz is {json.dumps(bad)}", reason, "scripts/build-pyz /path/to/neo_db.pyz"):
            assert expect in out, f"{expect!r} not in:\n{out[-3000:]}"
        assert "changed=0" in out.split("PLAY RECAP")[-1]
    # Positive controls: a pyz built outside the checkout, and site.yml's own (group_vars/all.yml), pass the check
    # and run the schema check (which refuses a bad value through the pyz's neo-db).
    for extra in ({"neo_safeguards_pyz": str(built_pyz)}, {}):
        rc, out = play(inventory, "safeguards", {**extra, "neo_safeguards_backup_retention_days": 7})
        assert rc != 0 and "neo_safeguards_backup_retention_days (key 'backup_retention_days'): value 7" in out, out[-3000:]
        assert "Ensure neo_safeguards_pyz is a neo_db.pyz that runs" in out, out[-3000:]
        assert "expected the absolute controller path of a" not in out, out[-3000:]


def test_a_bad_notifier_url_is_named_but_never_shown(inventory: Path) -> None:
    """The URLs carry tokens: a bad one fails the play naming the variable, not the value (even with -vvv)."""
    token = "tok3nNotShownQ7x"
    rc, out = site_playbook(
        inventory, "--check", "-vvv", "--tags", "monitoring", "-e", json.dumps({"neo_monitoring_webhook_url": f"ftp://{token}"})
    )
    assert rc != 0 and "neo_monitoring_webhook_url: expected an http:// or https:// URL" in out, out[-3000:]
    assert token not in out
    # Positive control: a good URL passes the same check (the play goes on to the next task).
    rc, out = site_playbook(
        inventory, "--check", "--tags", "monitoring", "-e", json.dumps({"neo_monitoring_webhook_url": f"https://h/{token}"})
    )
    assert "Ensure the delivery bounds are sane" in out and token not in out, out[-3000:]


def test_a_restart_policy_that_loops_through_the_gate_is_refused_with_the_systemd_reason(inventory: Path) -> None:
    restart = "always"  # on-failure: the parametrized case above
    """Issue 17.4: the operator sees the role's explanation (systemd#11868), not a bare `choices:` refusal."""
    rc, out = play(inventory, "engine", {"neo_engine_restart": restart})
    assert rc != 0, out[-3000:]
    assert f"neo_engine_restart is {json.dumps(restart)}" in out and "systemd issue 11868" in out, out[-3000:]
    assert "must be one of" not in out, out[-3000:]
    # Positive control: an allowed policy passes the same assert (the play goes on past it, no explanation shown).
    rc, out = play(inventory, "engine", {"neo_engine_restart": "on-abort"})
    assert "Ensure the restart policy cannot loop through a refused gate" in out and "systemd issue 11868" not in out, out[-3000:]


# ---- issue 17.11: `-e key=value`, the way operators change one setting, hands the roles strings ----

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"


def typed_options() -> list[tuple[str, str, str, Any]]:
    """(role, variable, type, default) of every int and bool variable of every role, from the argument_specs."""
    found = []
    for spec in sorted(ROLES_DIR.glob("*/meta/argument_specs.yml")):
        options = yaml.safe_load(spec.read_text())["argument_specs"]["main"]["options"]
        found += [(spec.parent.parent.name, k, v["type"], v.get("default")) for k, v in options.items() if v.get("type") in ("int", "bool")]
    return found


def site_order() -> list[str]:
    """The roles in site.yml's order: neo_engine reads neo_safeguards' variables, so it comes after it."""
    plays = yaml.safe_load((ROLES_DIR.parent / "site.yml").read_text())
    names = [entry["role"] for play in plays for entry in play.get("roles", [])]
    return list(dict.fromkeys(names))


def key_value(default: Any) -> str:
    """The default as `-e key=value` gives it to the role: a string ("12", "false")."""
    return str(default).lower() if isinstance(default, bool) else str(default)


def validation_playbook(tmp_path: Path, roles: list[str]) -> Path:
    """Each role's argument_spec validation, then its own checks (tasks/assert.yml), then the neo-db config
    rendered from the same variables: what site.yml does before a full converge, without touching the machine."""
    tasks: list[dict[str, Any]] = []
    for role in roles:
        spec = yaml.safe_load((ROLES_DIR / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]
        tasks += [
            {"name": f"Validate {role}'s argument_spec", "ansible.builtin.validate_argument_spec": {"argument_spec": spec["options"]}},
            {"name": f"Run {role}'s asserts", "ansible.builtin.include_role": {"name": role, "tasks_from": "assert", "public": True}},
        ]
    tasks.append(
        {
            "name": "Render the neo-db config",
            "ansible.builtin.template": {
                "src": str(ROLES_DIR / "neo_safeguards" / "templates" / "etc" / "neo" / "db_safeguards.yml.j2"),
                "dest": str(tmp_path / "db_safeguards.yml"),
                "mode": "0600",
            },
        }
    )
    path = tmp_path / "validate.yml"
    path.write_text(yaml.safe_dump([{"name": "Role inputs", "hosts": "all", "gather_facts": False, "tasks": tasks}], sort_keys=False))
    return path


def run_playbook(inventory: Path, playbook: Path, *args: str) -> tuple[int, str]:
    root = ROLES_DIR.parent
    env = {**os.environ, "ANSIBLE_CONFIG": str(root / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(ROLES_DIR), "ANSIBLE_NOCOLOR": "1"}
    env["HCLOUD_TOKEN"] = "t" * 64  # hetzner_backups' asserts want a token; nothing here calls the API
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")
    proc = subprocess.run(
        [ansible_playbook, "-i", str(inventory), str(playbook), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_every_int_and_bool_variable_is_accepted_as_key_equals_value(inventory: Path, tmp_path: Path, built_pyz: Path) -> None:
    """`ansible-playbook site.yml -e neo_safeguards_backup_retention_count=12`: every int and bool variable of
    every role, given as key=value (a string), passes the argument_spec AND the role's asserts, and the
    rendered neo-db config holds real numbers and booleans."""
    options = typed_options()
    assert len(options) > 20, options
    roles = sorted({role for role, *_ in options}, key=site_order().index)
    playbook = validation_playbook(tmp_path, roles)
    extra = [arg for _, key, _, default in options for arg in ("-e", f"{key}={key_value(default)}")]
    # What group_vars/all.yml gives the roles beside site.yml (this playbook is elsewhere): the files they install.
    files = ["-e", f"neo_safeguards_pyz={built_pyz}", "-e", f"neo_engine_demo_src={ROOT / 'scripts' / 'demo-engine'}"]
    rc, out = run_playbook(inventory, playbook, *files, *extra, "-e", "neo_safeguards_backup_retention_count=12")
    assert rc == 0, out[-4000:]
    rendered = yaml.safe_load((tmp_path / "db_safeguards.yml").read_text())["db_safeguards"]
    assert rendered["backup_retention_count"] == 12
    for role, key, kind, _ in options:
        name = key.removeprefix(f"{role}_")
        if role == "neo_safeguards" and name in rendered:
            assert type(rendered[name]) is {"int": int, "bool": bool}[kind], (key, rendered[name])
    # Negative controls: key=value strings that are not the type, or break a role's rule, are still refused, by name.
    for bad, message in (
        ("neo_safeguards_backup_retention_count=twelve", "neo_safeguards_backup_retention_count"),
        (
            "neo_safeguards_backup_retention_days=7",
            "neo_safeguards_backup_retention_days (key 'backup_retention_days'): value 7 is not allowed; expected a whole number from 14",
        ),
        ("neo_engine_enabled=maybe", "neo_engine_enabled"),
        ("neo_logrotate_rotate=0", "neo_logrotate_rotate a whole number of at least 1"),
        ("neo_monitoring_notify_retries=11", "neo_monitoring_notify_retries"),
    ):
        rc, out = run_playbook(inventory, playbook, *files, "-e", bad)
        assert rc != 0 and message in out, (bad, out[-3000:])
