"""The hetzner_backups play (site.yml --tags hetzner) against the fake Hetzner API on 127.0.0.1."""

from __future__ import annotations

import configparser
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from conftest import ANSIBLE_PLAYBOOK, ROOT, TOKEN, FakeApi, site_playbook

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
        # The fact's converge stamp goes beside the fact, not into this machine's /var/lib/neo-ops.
        stamps = ["-e", f"_hetzner_backups_stamp_dir={tmp_path / 'stamps'}"]
        rc, out = site_playbook(inventory, "--tags", "hetzner", *stamps, *extra, env={"HCLOUD_TOKEN": token, "HCLOUD_ENDPOINT": api.url})
        return Run(rc, out)

    run.fact = fact  # type: ignore[attr-defined]
    run.stamps = tmp_path / "stamps"  # type: ignore[attr-defined]
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
    before = len(api.state()["requests"])
    again = play()
    assert again.rc == 0, again.out
    assert again.recap_changed() == 0, again.out
    assert len(api.writes()) == 1, "a rerun must not call enable_backup again"
    # Issue 18: a rerun that finds backups on makes one API call, the lookup (its drift check), and the fact
    # is vouched for by its converge stamp (one round trip).
    assert api.state()["requests"][before:] == ["GET /v1/servers"], api.state()["requests"][before:]
    assert (play.stamps / "hetzner_backups.json").is_file() and "Write the fact" not in again.out, again.out[-3000:]
    # The fact edited behind Ansible's back is drift: the next run writes it again, naming why, then the fast path.
    play.fact.write_text(play.fact.read_text().replace("enabled=true", "enabled=false"))
    repaired = play()
    assert repaired.rc == 0 and repaired.recap_changed() == 1, repaired.out[-3000:]
    assert f"{play.fact}: content changed" in repaired.out and read_fact(play.fact)["enabled"] == "true", repaired.out[-3000:]
    assert play().recap_changed() == 0


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


# ---- the lookup runs in-process on the controller (action_plugins/hetzner_server_lookup.py, issue 18) ----


def test_an_endpoint_nobody_answers_is_retried_then_named_without_the_token(play, api: FakeApi) -> None:
    secret = "tok-unreachable-5Vq81"
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = play("-e", f"hetzner_backups_api_endpoint=http://127.0.0.1:{port}/v1", token=secret)
    assert r.rc != 0
    assert f"failed at http://127.0.0.1:{port}/v1" in r.out and "Connection refused" in r.out, r.out[-3000:]
    assert r.out.count("FAILED - RETRYING") == 4, "no answer at all is transient: retried"
    assert secret not in r.out
    # Positive control: the same play against an endpoint that answers succeeds.
    ok = play()
    assert ok.rc == 0, ok.out[-3000:]
    assert api.state()["requests"][0] == "GET /v1/servers", api.state()["requests"]


def lookup_play(tmp_path: Path, endpoint: str, timeout: float = 30) -> tuple[int, str]:
    """The action plugin alone, as a task: its own refusals (the role's asserts stop most of them first)."""
    play = tmp_path / "lookup.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "hetzner_server_lookup": {
                                "name": "neo-live-1",
                                "api_token": TOKEN,
                                "api_endpoint": endpoint,
                                "timeout": timeout,
                            },
                            "register": "r",
                        },
                        {"ansible.builtin.debug": {"var": "r.hcloud_server_info"}},
                    ],
                }
            ]
        )
    )
    env = {**os.environ, "ANSIBLE_ACTION_PLUGINS": str(ROOT / "roles/hetzner_backups/action_plugins"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(play)], capture_output=True, text=True, env=env, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


class PortalPage(http.server.BaseHTTPRequestHandler):
    """A server that is not the API: a captive portal's page (200, HTML), or, under /v1/moved, a redirect to
    another host (the port in the class's `redirect_to`). Every request's Authorization header is recorded."""

    seen: ClassVar[list[tuple[str, str | None]]] = []
    redirect_to = 0

    def do_GET(self) -> None:
        PortalPage.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/trickle/"):  # a byte now and then, never the whole answer
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.25)
            return
        if self.path.startswith("/echo/"):  # an error that says back what it was sent
            body = json.dumps({"error": {"code": "unauthorized", "message": f"bad header {self.headers.get('Authorization')}"}}).encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/moved/") and PortalPage.redirect_to:
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{PortalPage.redirect_to}/v1/servers?name=neo-live-1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"<html><body>Log in to the hotel Wi-Fi</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_lookup_refuses_a_non_http_endpoint_and_an_answer_that_is_not_the_api(tmp_path: Path, api: FakeApi) -> None:
    rc, out = lookup_play(tmp_path, "file:///etc")
    assert rc != 0 and "hetzner_backups_api_endpoint 'file:///etc': expected an http(s) URL" in out, out[-3000:]
    assert "Traceback" not in out
    # An HTTP server that is not the API (a captive portal's page): 200, HTML.
    portal = http.server.HTTPServer(("127.0.0.1", 0), PortalPage)
    threading.Thread(target=portal.serve_forever, daemon=True).start()
    try:
        rc, out = lookup_play(tmp_path, f"http://127.0.0.1:{portal.server_address[1]}/v1")
    finally:
        portal.shutdown()
        portal.server_close()
    assert rc != 0 and "the answer is not the API's JSON" in out, out[-3000:]
    assert "Traceback" not in out and TOKEN not in out
    # A redirect to another host is an answer of its own, never followed: the token never goes there.
    PortalPage.seen.clear()
    mover = http.server.HTTPServer(("127.0.0.1", 0), PortalPage)
    other = http.server.HTTPServer(("127.0.0.1", 0), PortalPage)
    PortalPage.redirect_to = other.server_address[1]
    for server in (mover, other):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rc, out = lookup_play(tmp_path, f"http://127.0.0.1:{mover.server_address[1]}/moved")
    finally:
        for server in (mover, other):
            server.shutdown()
            server.server_close()
    assert rc != 0 and "302" in out and "Traceback" not in out and TOKEN not in out, out[-3000:]
    assert PortalPage.seen == [("/moved/servers?name=neo-live-1", f"Bearer {TOKEN}")], PortalPage.seen
    # A body that trickles in is cut at the timeout (each read alone would wait on), and an error that echoes
    # the Authorization header back never shows the token.
    portal = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PortalPage)
    threading.Thread(target=portal.serve_forever, daemon=True).start()
    try:
        rc, out = lookup_play(tmp_path, f"http://127.0.0.1:{portal.server_address[1]}/trickle", timeout=2)
        assert rc != 0 and "no answer from the API: TimeoutError" in out and "Traceback" not in out, out[-3000:]
        rc, out = lookup_play(tmp_path, f"http://127.0.0.1:{portal.server_address[1]}/echo")
        assert rc != 0 and "bad header Bearer ********" in out and TOKEN not in out, out[-3000:]
    finally:
        portal.shutdown()
        portal.server_close()
    # Positive control: the fake API's server, in server_info's shape.
    rc, out = lookup_play(tmp_path, api.url)
    assert rc == 0, out[-3000:]
    assert "name: neo-live-1" in out and "backup_window: null" in out, out[-3000:]
