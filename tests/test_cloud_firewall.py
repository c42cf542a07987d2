"""The Hetzner Cloud Firewall (neo_host, site.yml --tags hetzner) against the fake Hetzner API on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import TOKEN, FakeApi, site_playbook
from test_hetzner_backups import Run

pytestmark = pytest.mark.ansible

ANYWHERE = ["0.0.0.0/0", "::/0"]
ICMP = {
    "direction": "in",
    "protocol": "icmp",
    "port": None,
    "source_ips": ANYWHERE,
    "destination_ips": [],
    "description": "ICMP and ICMPv6 (ping, path MTU)",
}


def ssh(port: str = "22", cidrs: list[str] | None = None) -> dict[str, Any]:
    return {
        "direction": "in",
        "protocol": "tcp",
        "port": port,
        "source_ips": cidrs or ANYWHERE,
        "destination_ips": [],
        "description": "SSH",
    }


@pytest.fixture
def play(tmp_path: Path, api: FakeApi):
    def run(*extra: str, token: str = TOKEN, **host_vars: Any) -> Run:
        inventory = tmp_path / "inventory.yml"
        host = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ansible_become": False,
            "hetzner_backups_fact_path": str(tmp_path / "facts.d" / "hetzner_backups.fact"),
            **host_vars,
        }
        inventory.write_text(yaml.safe_dump({"neo_vps": {"hosts": {"neo-live-1": host}}}))
        # The Hetzner fact's converge stamp goes beside the fact, not into this machine's /var/lib/neo-ops.
        stamps = ["-e", f"_hetzner_backups_stamp_dir={tmp_path / 'stamps'}"]
        rc, out = site_playbook(inventory, "--tags", "hetzner", *stamps, *extra, env={"HCLOUD_TOKEN": token, "HCLOUD_ENDPOINT": api.url})
        return Run(rc, out)

    return run


def firewall_writes(api: FakeApi) -> list[dict[str, Any]]:
    return [w for w in api.writes() if "firewall" in w]


def test_off_by_default_then_created_applied_once_and_a_rerun_changes_nothing(play, api: FakeApi) -> None:
    off = play()
    assert off.rc == 0, off.out
    assert not [r for r in api.state()["requests"] if "/firewalls" in r], "disabled: the firewall API is never asked"
    on = play(neo_host_cloud_firewall_enabled=True)
    assert on.rc == 0, on.out
    assert [w["command"] for w in firewall_writes(api)] == ["create_firewall", "apply_firewall"]
    [fw] = api.state()["firewalls"]
    assert fw["name"] == "neo-live-1-neo-host" and fw["rules"] == [ICMP, ssh()]
    assert fw["applied_to"] == [{"type": "server", "server": {"id": api.state()["servers"][0]["id"]}}]
    again = play(neo_host_cloud_firewall_enabled=True)
    assert again.rc == 0 and again.recap_changed() == 0, again.out
    assert len(firewall_writes(api)) == 2, "a rerun writes nothing"


def test_check_mode_shows_the_change_and_writes_nothing(play, api: FakeApi) -> None:
    r = play("--check", neo_host_cloud_firewall_enabled=True)
    assert r.rc == 0, r.out
    assert r.recap_changed() >= 1 and firewall_writes(api) == [] and api.state()["firewalls"] == []
    assert play(neo_host_cloud_firewall_enabled=True).rc == 0  # positive control: the real run writes
    assert [w["command"] for w in firewall_writes(api)] == ["create_firewall", "apply_firewall"]


def test_the_rules_follow_the_host_variables_and_change_once(play, api: FakeApi) -> None:
    assert play(neo_host_cloud_firewall_enabled=True).rc == 0
    changed = {
        "neo_host_cloud_firewall_enabled": True,
        "neo_host_ssh_allow_cidrs": ["198.51.100.0/24"],
        "neo_host_metrics_allow_cidrs": ["10.0.0.5/32"],
        "neo_host_firewall_open_ports": [{"port": 443, "proto": "tcp", "cidrs": ANYWHERE}],
    }
    r = play(**changed)
    assert r.rc == 0, r.out
    assert [w["command"] for w in firewall_writes(api)][2:] == ["set_rules"], "the rules are replaced, not re-created or re-applied"
    [fw] = api.state()["firewalls"]
    assert fw["rules"] == [
        ICMP,
        ssh(cidrs=["198.51.100.0/24"]),
        {
            "direction": "in",
            "protocol": "tcp",
            "port": "9100",
            "source_ips": ["10.0.0.5/32"],
            "destination_ips": [],
            "description": "node_exporter",
        },
        {
            "direction": "in",
            "protocol": "tcp",
            "port": "443",
            "source_ips": ANYWHERE,
            "destination_ips": [],
            "description": "neo_host_firewall_open_ports",
        },
    ]
    again = play(**changed)
    assert again.rc == 0 and again.recap_changed() == 0 and len(firewall_writes(api)) == 3, again.out


def test_a_rejected_token_is_a_clear_failure_and_never_printed(play, api: FakeApi) -> None:
    bad = "wrong-token-77aa10"
    r = play("-vvv", token=bad, neo_host_cloud_firewall_enabled=True, hetzner_backups_enabled=True)
    assert r.rc != 0
    assert "Cloud Firewall neo-live-1-neo-host" in r.out and "HCLOUD_TOKEN" in r.out, r.out[-3000:]
    assert bad not in r.out
    assert firewall_writes(api) == [] and api.state()["firewalls"] == []


# ---- hostile operator cases ----


def create_firewall(api: FakeApi, name: str, rules: list[dict[str, Any]], labels: dict[str, str]) -> None:
    """A firewall made in the project by someone else (the console, another tool), through the API."""
    req = urllib.request.Request(
        f"{api.url}/firewalls", data=json.dumps({"name": name, "labels": labels, "rules": rules}).encode(), method="POST"
    )
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", "application/json")
    urllib.request.urlopen(req).close()


@pytest.mark.parametrize("status", [503, 500])
def test_a_transient_error_is_retried_and_succeeds(play, api: FakeApi, status: int) -> None:
    api.post("/__fake/faults", {"status": status, "count": 2})
    r = play(neo_host_cloud_firewall_enabled=True, hetzner_backups_enabled=True)
    assert r.rc == 0, r.out[-3000:]
    assert [w["command"] for w in firewall_writes(api)] == ["create_firewall", "apply_firewall"]


def test_a_persistent_server_error_is_named_after_retries(play, api: FakeApi) -> None:
    api.post("/__fake/faults", {"status": 503, "count": 100})
    r = play(neo_host_cloud_firewall_enabled=True)
    assert r.rc != 0
    assert "kept failing (503 unavailable)" in r.out, r.out[-3000:]
    assert len(api.state()["requests"]) > 1 and firewall_writes(api) == []


def test_a_server_not_in_the_project_creates_no_firewall(play, api: FakeApi) -> None:
    r = play(neo_host_cloud_firewall_enabled=True, neo_host_cloud_firewall_server_name="neo-typo-9")
    assert r.rc != 0
    assert '"neo-typo-9" was not found in the project' in r.out, r.out[-3000:]
    assert firewall_writes(api) == [] and api.state()["firewalls"] == [], "no orphan firewall left behind"


def test_a_firewall_of_that_name_made_by_someone_else_is_left_alone(play, api: FakeApi) -> None:
    theirs = [{"direction": "in", "protocol": "tcp", "port": "80", "source_ips": ANYWHERE, "description": "web"}]
    create_firewall(api, "neo-live-1-neo-host", theirs, {"team": "web"})
    for extra in ([], ["--check"]):
        r = play(*extra, neo_host_cloud_firewall_enabled=True)
        assert r.rc != 0, r.out[-3000:]
        assert "not made by neo_host" in r.out and "managed-by=neo_host" in r.out, r.out[-3000:]
    [fw] = api.state()["firewalls"]
    assert fw["labels"] == {"team": "web"} and fw["rules"][0]["port"] == "80" and fw["applied_to"] == []
    assert [w["command"] for w in firewall_writes(api)] == ["create_firewall"], "only theirs"


def test_a_missing_token_says_where_it_comes_from_and_asks_nothing(play, api: FakeApi) -> None:
    r = play(token="", neo_host_cloud_firewall_enabled=True)
    assert r.rc != 0
    assert "No Hetzner Cloud API token" in r.out and "HCLOUD_TOKEN" in r.out, r.out[-3000:]
    assert api.state()["requests"] == []


def test_an_open_port_without_proto_is_tcp_as_in_nftables(play, api: FakeApi) -> None:
    r = play(neo_host_cloud_firewall_enabled=True, neo_host_firewall_open_ports=[{"port": 443, "cidrs": ANYWHERE}])
    assert r.rc == 0, r.out[-3000:]
    [fw] = api.state()["firewalls"]
    assert [(x["protocol"], x["port"]) for x in fw["rules"][2:]] == [("tcp", "443")]


def test_tags_hetzner_keeps_the_old_ssh_port_open_during_a_port_move(play, api: FakeApi, tmp_path: Path) -> None:
    sshd = tmp_path / "sshd"
    sshd.write_text("#!/bin/sh\necho 'port 22'\n")
    sshd.chmod(0o755)
    r = play("-e", f"_neo_host_sshd_bin={sshd}", neo_host_cloud_firewall_enabled=True, neo_host_ssh_port=2222)
    assert r.rc == 0, r.out[-3000:]
    [fw] = api.state()["firewalls"]
    assert sorted(x["port"] for x in fw["rules"] if x["protocol"] == "tcp") == ["22", "2222"], "sshd still answers on 22"


def test_a_rejected_token_from_the_inventory_is_never_printed_under_vvv(play, api: FakeApi) -> None:
    bad = "inventory-token-5c1e77"
    r = play("-vvv", token="", neo_host_cloud_firewall_enabled=True, neo_host_cloud_firewall_api_token=bad)
    assert r.rc != 0 and "rejected the token (401 unauthorized)" in r.out, r.out[-3000:]
    assert bad not in r.out


def test_check_mode_on_its_own_firewall_with_other_rules_writes_nothing(play, api: FakeApi) -> None:
    old = [{"direction": "in", "protocol": "tcp", "port": "8080", "source_ips": ANYWHERE, "description": "old"}]
    create_firewall(api, "neo-live-1-neo-host", old, {"managed-by": "neo_host"})
    r = play("--check", neo_host_cloud_firewall_enabled=True)
    assert r.rc == 0 and r.recap_changed() >= 1, r.out[-3000:]
    assert [w["command"] for w in firewall_writes(api)] == ["create_firewall"]
    assert play(neo_host_cloud_firewall_enabled=True).rc == 0  # positive control: it is handed over and set
    [fw] = api.state()["firewalls"]
    assert fw["rules"] == [ICMP, ssh()] and len(fw["applied_to"]) == 1
