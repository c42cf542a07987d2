"""The hetzner_backups play (site.yml --tags hetzner) against the fake Hetzner API on 127.0.0.1."""

from __future__ import annotations

import configparser
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import TOKEN, FakeApi, site_playbook

pytestmark = pytest.mark.ansible


@dataclass
class Run:
    rc: int
    out: str

    def recap_changed(self) -> int:
        line = next(ln for ln in self.out.splitlines() if ln.startswith("neo-live-1") and "changed=" in ln)
        return int(line.split("changed=")[1].split()[0])


@pytest.fixture
def play(tmp_path: Path, api: FakeApi):
    fact = tmp_path / "facts.d" / "hetzner_backups.fact"
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "neo_vps": {
                    "hosts": {
                        "neo-live-1": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                            "ansible_become": False,
                            "hetzner_backups_fact_path": str(fact),
                        }
                    }
                }
            }
        )
    )

    def run(*extra: str, token: str = TOKEN) -> Run:
        rc, out = site_playbook(inventory, "--tags", "hetzner", *extra, env={"HCLOUD_TOKEN": token, "HCLOUD_ENDPOINT": api.url})
        return Run(rc, out)

    run.fact = fact  # type: ignore[attr-defined]
    return run


def read_fact(path: Path) -> dict[str, str]:
    cp = configparser.ConfigParser()
    cp.read(path)
    return dict(cp["backups"])


def test_backups_off_are_enabled_once_and_a_rerun_changes_nothing(play, api: FakeApi) -> None:
    first = play()
    assert first.rc == 0, first.out
    assert [w["command"] for w in api.writes()] == ["enable_backup"]
    assert "on, window 22-02 UTC" in first.out
    assert first.recap_changed() >= 1
    fact = read_fact(play.fact)
    assert fact["enabled"] == "true" and fact["backup_window"] == "22-02" and fact["server"] == "neo-live-1"
    again = play()
    assert again.rc == 0, again.out
    assert again.recap_changed() == 0, again.out
    assert len(api.writes()) == 1, "a rerun must not call enable_backup again"


def test_check_mode_reports_the_change_and_writes_nothing(play, api: FakeApi) -> None:
    r = play("--check")
    assert r.rc == 0, r.out
    assert r.recap_changed() >= 1
    assert api.writes() == []
    assert not any(req.startswith("POST") for req in api.state()["requests"])
    assert not play.fact.exists()


def test_a_missing_server_is_a_clear_failure_that_creates_nothing(play, api: FakeApi) -> None:
    r = play("-e", "hetzner_backups_server_name=neo-typo-9")
    assert r.rc != 0
    assert '"neo-typo-9" was not found in the project' in r.out
    assert api.writes() == [] and len(api.state()["servers"]) == 1


@pytest.mark.parametrize("verbosity", [[], ["-vvv"]])
def test_a_rejected_token_is_a_clear_failure_and_never_printed(play, api: FakeApi, verbosity: list[str]) -> None:
    secret = "wrong-secret-7Q2xVb91"
    r = play(*verbosity, token=secret)
    assert r.rc != 0
    assert "rejected the token (401 unauthorized)" in r.out
    assert "HCLOUD_TOKEN" in r.out and "ansible-vault" in r.out
    assert secret not in r.out
    assert api.writes() == []


def test_a_missing_token_says_where_it_comes_from(play, api: FakeApi) -> None:
    r = play(token="")
    assert r.rc != 0
    assert "No Hetzner Cloud API token" in r.out and "HCLOUD_TOKEN" in r.out
    assert api.state()["requests"] == []


@pytest.mark.parametrize("status", [429, 503])
def test_a_transient_error_is_retried_and_succeeds(play, api: FakeApi, status: int) -> None:
    api.post("/__fake/faults", {"status": status, "count": 2})
    r = play()
    assert r.rc == 0, r.out
    assert [w["command"] for w in api.writes()] == ["enable_backup"]
    assert len(api.state()["requests"]) > 4, "the faults were served and retried past"


def test_disabling_is_refused_unless_explicitly_allowed(play, api: FakeApi) -> None:
    assert play().rc == 0
    r = play("-e", "hetzner_backups_enabled=false")
    assert r.rc != 0
    assert "Refusing to disable Hetzner backups" in r.out and "deletes EVERY" in r.out
    assert [w["command"] for w in api.writes()] == ["enable_backup"]
    allowed = play("-e", "hetzner_backups_enabled=false", "-e", "hetzner_backups_allow_disable=true")
    assert allowed.rc == 0, allowed.out
    assert [w["command"] for w in api.writes()] == ["enable_backup", "disable_backup"]
    assert read_fact(play.fact)["enabled"] == "false"


# ---- the role reads the error's code (the module's failure.code), not its message text ----


@pytest.mark.parametrize(
    ("status", "expect"),
    [
        (401, ["rejected the token (401 unauthorized)", "ansible-vault"]),
        (403, ["refused the call (403 forbidden)", "Read & Write"]),
        (404, ["answered 404 not_found", "hetzner_backups_api_endpoint"]),
    ],
)
def test_a_refusal_is_named_by_its_code_and_not_retried(play, api: FakeApi, status: int, expect: list[str]) -> None:
    api.post("/__fake/faults", {"status": status, "count": 20})
    r = play()
    assert r.rc != 0
    for text in expect:
        assert text in r.out, f"{text!r} not in {r.out[-3000:]}"
    assert len(api.state()["requests"]) == 1, "a refusal is final: not retried"
    assert api.writes() == []


@pytest.mark.parametrize(("status", "code"), [(500, "server_error"), (503, "unavailable")])
def test_a_server_error_that_persists_is_retried_then_named(play, api: FakeApi, status: int, code: str) -> None:
    api.post("/__fake/faults", {"status": status, "count": 100})
    r = play()
    assert r.rc != 0
    assert f"kept failing ({status} {code})" in r.out, r.out[-3000:]
    assert len(api.state()["requests"]) > 1, "retried before giving up"
    assert api.writes() == []
