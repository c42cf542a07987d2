"""Bad Ansible variables fail early, naming the variable, the value and what is allowed.

Runs site.yml in --check mode against this machine (a local connection): the roles' argument
specs and asserts come first, so a bad value stops the play before any task could change
anything, and check mode guarantees nothing is changed even if a check were to let it through.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
        ("safeguards", {"neo_safeguards_backup_retention_days": 7}, ["neo_safeguards_backup_retention_days is 7", "at least 14"]),
        ("safeguards", {"neo_safeguards_backup_retention_count": -1}, ["neo_safeguards_backup_retention_count is -1", "at least 1"]),
        ("safeguards", {"neo_safeguards_abnormal_retention_days": "thirty"}, ["neo_safeguards_abnormal_retention_days"]),
        ("safeguards", {"neo_safeguards_integrity_check_on_startup": "maybe"}, ["neo_safeguards_integrity_check_on_startup"]),
        ("safeguards", {"neo_safeguards_db_path": "db/neo.db"}, ["neo_safeguards_db_path", "absolute path"]),
        (
            "safeguards",
            {"neo_safeguards_engine_restart": "on-failure"},
            ['neo_safeguards_engine_restart is "on-failure"', "systemd issue 11868", "on-failure or always would restart through a gate"],
        ),
        ("safeguards", {"neo_safeguards_umask": 27}, ["neo_safeguards_umask", "quoted octal"]),
        ("safeguards", {"neo_safeguards_layout": "flat"}, ["neo_safeguards_layout", "phases, snapshots"]),
        ("runtime", {"neo_runtime_backup_subdirs": ["../escape"]}, ["neo_runtime_backup_subdirs must be a non-empty list of plain"]),
        ("runtime", {"neo_runtime_extra_dirs": ["config"]}, ["neo_runtime_extra_dirs a list of", "absolute paths"]),
        ("runtime", {"neo_runtime_db_dir": "relative/db"}, ["neo_runtime_db_dir", "absolute path"]),
        ("runtime", {"neo_runtime_backup_dir": "/opt/neo/runtime/db/backups"}, ["must lie outside neo_runtime_db_dir"]),
        ("runtime", {"neo_runtime_user": "Neo User"}, ["not a valid user or group name"]),
        ("logrotate", {"neo_logrotate_rotate": 0}, ["neo_logrotate_rotate", "at least 1"]),
        ("monitoring", {"neo_monitoring_listen_address": "9100"}, ["neo_monitoring_listen_address", "expected host:port"]),
        ("monitoring", {"neo_monitoring_notify_retries": 0}, ["neo_monitoring_notify_retries (0) 1 to 10", "bounded time"]),
        ("monitoring", {"neo_monitoring_textfile_dir": "var/lib/x"}, ["neo_monitoring_textfile_dir", "absolute path"]),
    ],
)
def test_a_bad_variable_fails_early_and_names_itself(inventory: Path, tags: str, extra: dict, expect: list[str]) -> None:
    rc, out = play(inventory, tags, extra)
    assert rc != 0, out
    for text in expect:
        assert text in out, f"{text!r} not in:\n{out[-3000:]}"
    assert "changed=0" in out.split("PLAY RECAP")[-1]


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
    rc, out = play(inventory, "safeguards", {"neo_safeguards_engine_restart": restart})
    assert rc != 0, out[-3000:]
    assert f"neo_safeguards_engine_restart is {json.dumps(restart)}" in out and "systemd issue 11868" in out, out[-3000:]
    assert "must be one of" not in out, out[-3000:]
    # Positive control: an allowed policy passes the same assert (the play goes on past it, no explanation shown).
    rc, out = play(inventory, "safeguards", {"neo_safeguards_engine_restart": "on-abort"})
    assert "Ensure the restart policy cannot loop through a refused gate" in out and "systemd issue 11868" not in out, out[-3000:]
