"""The opt-in rehearsal on a real Hetzner server (molecule/hetzner): its create.yml and destroy.yml
against the fake Hetzner API on 127.0.0.1, and molecule's own test sequence with a failing step."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ANSIBLE_PLAYBOOK, ROOT, TOKEN, FakeApi

pytestmark = pytest.mark.ansible

SCENARIO = ROOT / "molecule" / "hetzner"
MOLECULE = str(Path(sys.executable).parent / "molecule")


@pytest.fixture
def sshd_banner() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that greets like sshd: create's wait for the new server's sshd ends there."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    sock.close()


@dataclass
class Run:
    rc: int
    out: str


@dataclass
class Rehearsal:
    api: FakeApi
    state_dir: Path
    ssh_port: int

    def env(self, token: str = TOKEN, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "HCLOUD_TOKEN": token,
            "HCLOUD_ENDPOINT": self.api.url,
            "MOLECULE_EPHEMERAL_DIRECTORY": str(self.state_dir),
            "NEO_REHEARSAL_SSH_WAIT_HOST": "127.0.0.1",
            "NEO_REHEARSAL_SSH_WAIT_PORT": str(self.ssh_port),
            "NEO_REHEARSAL_SSH_WAIT_TIMEOUT": "20",
            **extra,
        }

    def play(self, name: str, token: str = TOKEN, **extra: str) -> Run:
        proc = subprocess.run(
            [ANSIBLE_PLAYBOOK, str(SCENARIO / f"{name}.yml")],
            capture_output=True,
            text=True,
            env=self.env(token, **extra),
            cwd=ROOT,
            timeout=300,
            check=False,
        )
        return Run(proc.returncode, proc.stdout + proc.stderr)

    def run_file(self) -> dict[str, str]:
        return yaml.safe_load((self.state_dir / "hetzner-run.yml").read_text())

    def servers(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.api.state()["servers"]}

    def writes(self, command: str) -> list[dict[str, Any]]:
        return [w for w in self.api.writes() if w["command"] == command]


@pytest.fixture
def rehearsal(api: FakeApi, tmp_path: Path, sshd_banner: int) -> Rehearsal:
    state_dir = tmp_path / "ephemeral"
    state_dir.mkdir()
    return Rehearsal(api, state_dir, sshd_banner)


def labels(run_id: str) -> dict[str, str]:
    return {"managed-by": "neo-molecule", "neo-molecule-run": run_id}


def test_create_makes_one_server_with_the_image_type_and_labels_and_a_rerun_makes_none(rehearsal: Rehearsal) -> None:
    first = rehearsal.play("create")
    assert first.rc == 0, first.out[-3000:]
    run = rehearsal.run_file()
    assert run["server_name"] == f"neo-molecule-{run['run_id']}"
    [made] = rehearsal.writes("create_server")
    assert made == {
        "command": "create_server",
        "server": run["server_name"],
        "server_type": "cx23",
        "image": "ubuntu-24.04",
        "location": "fsn1",
        "labels": labels(run["run_id"]),
        "ssh_keys": [run["server_name"]],
    }
    [key] = rehearsal.api.state()["ssh_keys"]
    assert key["labels"] == labels(run["run_id"])
    assert sorted(rehearsal.servers()) == sorted(["neo-live-1", run["server_name"]])
    # molecule's instance config: the server's IPv4, root, the run's private key (its public half uploaded)
    [instance] = yaml.safe_load((rehearsal.state_dir / "instance_config.yml").read_text())
    server = rehearsal.servers()[run["server_name"]]
    assert instance["instance"] == "neo-rehearsal" and instance["user"] == "root" and instance["port"] == 22
    assert instance["address"] == server["public_net"]["ipv4"]["ip"]
    public = subprocess.run(["ssh-keygen", "-y", "-f", instance["identity_file"]], capture_output=True, text=True, check=True).stdout
    assert public.split()[:2] == key["public_key"].split()[:2]

    again = rehearsal.play("create")
    assert again.rc == 0, again.out[-3000:]
    assert len(rehearsal.writes("create_server")) == 1 and len(rehearsal.writes("create_ssh_key")) == 1, "a rerun makes nothing"
    assert rehearsal.run_file() == run and len(rehearsal.servers()) == 2


def test_the_type_image_location_and_prefix_come_from_the_environment(rehearsal: Rehearsal) -> None:
    r = rehearsal.play(
        "create",
        NEO_REHEARSAL_SERVER_TYPE="cx33",
        NEO_REHEARSAL_IMAGE="debian-13",
        NEO_REHEARSAL_LOCATION="hel1",
        NEO_REHEARSAL_NAME_PREFIX="neo-try",
    )
    assert r.rc == 0, r.out[-3000:]
    [made] = rehearsal.writes("create_server")
    assert (made["server_type"], made["image"], made["location"]) == ("cx33", "debian-13", "hel1")
    assert made["server"].startswith("neo-try-")


def test_destroy_deletes_the_runs_server_and_key_and_nothing_else(rehearsal: Rehearsal) -> None:
    assert rehearsal.play("create").rc == 0
    run = rehearsal.run_file()
    # other things in the project: an earlier rehearsal's server (other run id), an unlabelled
    # server, a server labelled by hand with the run id but not managed-by (and neo-live-1, the live box)
    rehearsal.api.post("/__fake/servers", {"name": "neo-molecule-earlier", "labels": labels("20260101-000000-abcdef")})
    rehearsal.api.post("/__fake/servers", {"name": "web-1", "labels": {}})
    rehearsal.api.post("/__fake/servers", {"name": "half-labelled", "labels": {"neo-molecule-run": run["run_id"]}})
    r = rehearsal.play("destroy")
    assert r.rc == 0, r.out[-3000:]
    assert [w["server"] for w in rehearsal.writes("delete_server")] == [run["server_name"]], "only the run's server"
    assert [w["ssh_key"] for w in rehearsal.writes("delete_ssh_key")] == [run["server_name"]]
    assert sorted(rehearsal.servers()) == ["half-labelled", "neo-live-1", "neo-molecule-earlier", "web-1"]
    assert rehearsal.api.state()["ssh_keys"] == []
    assert yaml.safe_load((rehearsal.state_dir / "instance_config.yml").read_text()) == []
    again = rehearsal.play("destroy")
    assert again.rc == 0 and len(rehearsal.writes("delete_server")) == 1, again.out[-3000:]


def test_destroy_goes_by_the_runs_labels_never_by_the_name(rehearsal: Rehearsal) -> None:
    """A server of the run's very name without its labels is someone else's: create refuses to adopt
    it and destroy leaves it; the run's labelled server, named otherwise, is deleted (the positive control)."""
    run_id = "20261123-120000-0a0b0c"
    (rehearsal.state_dir / "hetzner-run.yml").write_text(yaml.safe_dump({"run_id": run_id, "server_name": f"neo-molecule-{run_id}"}))
    rehearsal.api.post("/__fake/servers", {"name": f"neo-molecule-{run_id}", "labels": {"team": "web"}})
    refused = rehearsal.play("create")
    assert refused.rc != 0
    assert f'A server named "neo-molecule-{run_id}" already exists' in refused.out and "not this rehearsal's" in refused.out, refused.out[
        -3000:
    ]
    assert rehearsal.writes("create_server") == [] and rehearsal.servers()[f"neo-molecule-{run_id}"]["labels"] == {"team": "web"}
    rehearsal.api.post("/__fake/servers", {"name": "renamed-by-hand", "labels": labels(run_id)})
    r = rehearsal.play("destroy")
    assert r.rc == 0, r.out[-3000:]
    assert [w["server"] for w in rehearsal.writes("delete_server")] == ["renamed-by-hand"]
    assert f"neo-molecule-{run_id}" in rehearsal.servers()


def test_a_run_whose_molecule_directory_is_gone_is_destroyed_by_its_run_id(rehearsal: Rehearsal) -> None:
    """The README's way out after a hard interruption: NEO_REHEARSAL_RUN_ID names the run to delete."""
    assert rehearsal.play("create").rc == 0
    run = rehearsal.run_file()
    (rehearsal.state_dir / "hetzner-run.yml").unlink()
    lost = rehearsal.play("destroy")
    assert lost.rc == 0 and "nothing to delete" in lost.out, lost.out[-3000:]
    assert rehearsal.writes("delete_server") == [] and run["server_name"] in rehearsal.servers()
    named = rehearsal.play("destroy", NEO_REHEARSAL_RUN_ID=run["run_id"])
    assert named.rc == 0, named.out[-3000:]
    assert [w["server"] for w in rehearsal.writes("delete_server")] == [run["server_name"]]
    assert rehearsal.api.state()["ssh_keys"] == []


def test_a_stale_run_id_in_the_environment_never_redirects_this_runs_destroy(rehearsal: Rehearsal) -> None:
    """NEO_REHEARSAL_RUN_ID left exported from a cleanup by hand: destroy refuses, naming both ids, and
    deletes nothing (not the old run, not this one); unset, it deletes this run's server (the control)."""
    old = "20260101-000000-abcdef"
    rehearsal.api.post("/__fake/servers", {"name": f"neo-molecule-{old}", "labels": labels(old)})
    assert rehearsal.play("create").rc == 0
    run = rehearsal.run_file()
    stale = rehearsal.play("destroy", NEO_REHEARSAL_RUN_ID=old)
    assert stale.rc != 0 and f"NEO_REHEARSAL_RUN_ID is {old}" in stale.out and run["run_id"] in stale.out, stale.out[-3000:]
    assert rehearsal.writes("delete_server") == [] and run["server_name"] in rehearsal.servers()
    same = rehearsal.play("destroy", NEO_REHEARSAL_RUN_ID=run["run_id"])
    assert same.rc == 0, same.out[-3000:]
    assert [w["server"] for w in rehearsal.writes("delete_server")] == [run["server_name"]]
    assert f"neo-molecule-{old}" in rehearsal.servers()


def test_without_a_token_create_and_destroy_refuse_and_ask_the_api_nothing(rehearsal: Rehearsal) -> None:
    for name in ("create", "destroy"):
        r = rehearsal.play(name, token="")
        assert r.rc != 0, r.out[-3000:]
        assert "No Hetzner Cloud API token" in r.out and "HCLOUD_TOKEN" in r.out, r.out[-3000:]
    assert rehearsal.api.state()["requests"] == [] and not (rehearsal.state_dir / "hetzner-run.yml").exists()
    ok = rehearsal.play("create")  # positive control: with the token the same run writes
    assert ok.rc == 0, ok.out[-3000:]
    assert [w["command"] for w in rehearsal.api.writes()] == ["create_ssh_key", "create_server"]


def test_a_wrong_token_is_named_and_never_printed(rehearsal: Rehearsal) -> None:
    bad = "wrong-token-5c1e77aa"
    r = rehearsal.play("create", token=bad)
    assert r.rc != 0 and "could not be created" in r.out and "unable to authenticate" in r.out, r.out[-3000:]
    assert bad not in r.out and rehearsal.api.writes() == []


def test_molecule_test_destroys_the_server_when_a_step_after_create_fails(rehearsal: Rehearsal) -> None:
    """molecule's own sequence (destroy, create, prepare, ...): the server is created, prepare cannot
    log in (the fake's address is TEST-NET, nothing answers), and molecule destroys it anyway."""
    env = rehearsal.env(NEO_REHEARSAL_SSH_WAIT_TIMEOUT="5")
    proc = subprocess.run(
        [MOLECULE, "test", "-s", "hetzner", "--destroy", "always"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    made = rehearsal.writes("create_server")
    assert len(made) == 1, out[-4000:]  # create did run (positive control)
    # prepare failed where a real server would have answered: molecule's inventory (from create's
    # instance config) sent it to the server's address, with nothing listening there
    assert "timed out waiting for ping module" in out and 'remote host "203.0.113.' in out, out[-4000:]
    assert [w["server"] for w in rehearsal.writes("delete_server")] == [made[0]["server"]], out[-4000:]
    assert rehearsal.api.state()["ssh_keys"] == [] and sorted(rehearsal.servers()) == ["neo-live-1"]


def test_the_rehearsal_converges_the_production_inventorys_host_variables() -> None:
    """molecule/hetzner's one host stands for inventory/hetzner.yml's: same variables, group neo_vps,
    and the platform name create.yml writes into molecule's instance config."""
    inventory = yaml.safe_load((ROOT / "inventory" / "hetzner.yml").read_text())
    [(_, prod)] = inventory["neo_vps"]["hosts"].items()
    wanted = {k: v for k, v in prod.items() if not k.startswith("ansible_")}
    scenario = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
    [platform] = scenario["platforms"]
    assert platform["groups"] == ["neo_vps"]
    settings = yaml.safe_load((SCENARIO / "vars" / "main.yml").read_text())
    assert platform["name"] == settings["neo_rehearsal_instance"]
    host_vars = scenario["provisioner"]["inventory"]["host_vars"][platform["name"]]
    assert wanted and {k: host_vars.get(k) for k in wanted} == wanted
    sequence = scenario["scenario"]["test_sequence"]
    assert sequence[0] == "destroy" and sequence[-1] == "destroy" and "verify" in sequence
