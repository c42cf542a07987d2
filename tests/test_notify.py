"""`neo-db notify`: a real HTTP receiver on 127.0.0.1 stands in for the webhook, ntfy and the
healthchecks-style ping; a closed port and a receiver slower than the timeout stand in for a
notifier that is down. The URLs carry tokens that must never be printed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import FLAG049, NEO_DB, SYSTEM_PYTHON, Result, Runtime, make_db

TOKENS = ("hookT0KEN4f9a2c", "ntfyT0PIC77e1b0", "pingUUID3c5d9e")


@dataclass
class Receiver:
    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0
    status: int = 200

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, prefix: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].startswith(prefix)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(0)

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            rec.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
            if rec.delay:
                time.sleep(rec.delay)
            self.send_response(rec.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    """A port nothing listens on (bound, then closed): connections are refused."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def configure(rt: Runtime, targets: dict[str, str], *, mode: int = 0o600, **cfg: Any) -> Path:
    secrets = rt.root / "notify.yml"
    secrets.write_text(yaml.safe_dump(targets))
    secrets.chmod(mode)
    prom = rt.root / "textfile"
    prom.mkdir(exist_ok=True)
    rt.write_config(notify_secrets_path=str(secrets), metrics_textfile_dir=str(prom), hetzner_fact_path=None, **cfg)
    return secrets


def all_targets(rec: Receiver) -> dict[str, str]:
    return {
        "webhook_url": rec.url(f"/hook/{TOKENS[0]}"),
        "ntfy_url": rec.url(f"/ntfy/{TOKENS[1]}"),
        "ping_url": rec.url(f"/ping/{TOKENS[2]}"),
    }


def no_token(*texts: str) -> None:
    for text in texts:
        for token in TOKENS:
            assert token not in text, f"a notifier token was printed: {text}"


def prom_value(rt: Runtime, name: str) -> float:
    for line in (Path(rt.settings["metrics_textfile_dir"]) / "neo_db.prom").read_text().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in neo_db.prom")


def test_notify_test_reaches_every_target_and_prints_no_url(runtime: Runtime, receiver: Receiver) -> None:
    configure(runtime, all_targets(receiver))
    r = runtime.cli("-v", "notify", "--test")
    assert r.rc == 0, r.err
    [hook] = receiver.on("/hook/")
    doc = json.loads(hook["body"])
    assert doc["event"] == "test" and doc["host"] and doc["source"] == "neo-db"
    assert hook["headers"]["Content-Type"] == "application/json"
    [ntfy] = receiver.on("/ntfy/")
    assert ntfy["headers"]["Title"].startswith("neo-db test notification") and ntfy["headers"]["Priority"] == "high"
    assert b"host: " in ntfy["body"]
    [ping] = receiver.on("/ping/")
    assert ping["method"] == "GET" and not ping["path"].endswith("/fail")
    no_token(r.out, r.err)
    assert "webhook: ok" in r.out and "ntfy: ok" in r.out and "ping: ok" in r.out


def test_queued_events_are_sent_exactly_once_with_their_content(runtime: Runtime, receiver: Receiver) -> None:
    configure(runtime, all_targets(receiver))
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    assert receiver.requests == [], "a session hook never talks to the network: it only queues"
    assert runtime.stop("killed", "KILL", "signal").rc == 0
    r = runtime.cli("notify", "--queue")
    assert r.rc == 0 and "sent 1 queued event" in r.out, r.out + r.err
    [hook] = receiver.on("/hook/")
    doc = json.loads(hook["body"])
    assert doc["event"] == "abnormal_stop" and doc["session"] == "S001" and doc["unit"] == "neo-engine.service"
    assert "killed by signal KILL" in doc["message"] and doc["severity"] == "critical"
    [fail] = receiver.on("/ping/")
    assert fail["path"].endswith("/fail") and b"S001" in fail["body"]
    assert len(receiver.on("/ntfy/")) == 1
    # Sent once: a second drain sends nothing.
    n = len(receiver.requests)
    r = runtime.cli("notify", "--queue")
    assert r.rc == 0 and "sent 0 queued event" in r.out and len(receiver.requests) == n
    # A clean session: a success ping only, no message.
    assert runtime.cli("session-start").rc == 0
    assert runtime.stop("exited", "0").rc == 0
    assert runtime.cli("notify", "--queue").rc == 0
    new = receiver.requests[n:]
    assert [(q["method"], q["path"]) for q in new] == [("GET", f"/ping/{TOKENS[2]}")], new
    assert prom_value(runtime, "neo_db_notify_last_success_timestamp_seconds") > 0
    assert prom_value(runtime, "neo_db_notify_failures_total") == 0


def test_a_failed_unit_notifies_what_failed_with_the_session(runtime: Runtime, receiver: Receiver) -> None:
    configure(runtime, all_targets(receiver))
    make_db(runtime.db)
    data = bytearray(runtime.db.read_bytes())
    data[int.from_bytes(data[16:18], "big")] = 0x07
    runtime.db.write_bytes(bytes(data))
    assert runtime.cli("session-start").rc == 3
    assert runtime.cli("notify", "--queue").rc == 0 and receiver.requests == [], "a refusal fails the unit: nothing queued"
    r = runtime.cli("notify", "--unit", "neo-engine.service")
    assert r.rc == 0, r.err
    [hook] = receiver.on("/hook/")
    doc = json.loads(hook["body"])
    assert doc["event"] == "unit_failed" and doc["unit"] == "neo-engine.service" and doc["session"] == "S001"
    assert FLAG049.split(" — ")[0] in doc["message"], doc["message"]
    assert receiver.on("/ping/")[0]["path"].endswith("/fail")
    no_token(r.out, r.err)


RUN = "0123456789abcdef0123456789abcdef"  # the killed run's $INVOCATION_ID


def fake_systemctl(tmp: Path, invocation: str, result: str) -> dict[str, str]:
    """PATH with a `systemctl show` that reports the engine unit's run: systemd itself runs in
    the stand-in (molecule verify); here only its answer is needed. One dir per answer: envs
    built together must not share (and overwrite) one script."""
    bin_dir = tmp / f"fake-bin-{invocation}-{result}"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "systemctl"
    props = f"Result={result}", "ExecMainStatus=9", "ActiveState=failed", "Description=NEO engine", f"InvocationID={invocation}"
    script.write_text("#!/bin/sh\ncat <<'EOF'\n" + "\n".join(props) + "\nEOF\n")
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _killed(rt: Runtime, invocation: str = RUN) -> Result:
    """ExecStopPost after a SIGKILL, with the environment systemd gives it ($INVOCATION_ID of the run)."""
    return rt.cli("session-stop", env=rt.env(SERVICE_RESULT="signal", EXIT_CODE="killed", EXIT_STATUS="KILL", INVOCATION_ID=invocation))


def _on_failure(rt: Runtime, invocation: str = RUN, result: str = "signal") -> Result:
    """neo-db-notify@neo-engine.service started by OnFailure=: systemd >= 251 passes the failed run."""
    env = rt.env(MONITOR_INVOCATION_ID=invocation, MONITOR_SERVICE_RESULT=result, MONITOR_UNIT="neo-engine.service")
    return rt.cli("notify", "--unit", "neo-engine.service", env=env)


def test_one_sigkill_makes_one_message_though_on_failure_fires_too(runtime: Runtime, receiver: Receiver, tmp_path: Path) -> None:
    # systemd >= 254 (Debian 13) passes a killed, auto-restarting unit through "failed", so
    # OnFailure= runs notify --unit for the same run whose stop hook already queued abnormal_stop.
    configure(runtime, all_targets(receiver))
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    assert _killed(runtime).rc == 0
    r = _on_failure(runtime)
    assert r.rc == 0 and "abnormal stop of session S001, already queued" in r.out, r.out + r.err
    # By hand (no MONITOR_*), systemd is asked: the same run, died.
    r = runtime.cli("notify", "--unit", "neo-engine.service", env=runtime.env(**fake_systemctl(tmp_path, RUN, "signal")))
    assert r.rc == 0 and "already queued" in r.out, r.out + r.err
    assert receiver.requests == []
    assert runtime.cli("notify", "--queue").rc == 0
    assert [json.loads(h["body"])["event"] for h in receiver.on("/hook/")] == ["abnormal_stop"]
    assert len([p for p in receiver.on("/ping/") if p["path"].endswith("/fail")]) == 1
    # Each of these is another failure, and is sent: another unit; the crash loop's
    # start-limit-hit (the same InvocationID: no new run started); a newer run, asked by hand too.
    for unit, env in (
        ("neo-db-drill.service", runtime.env(MONITOR_INVOCATION_ID=RUN, MONITOR_SERVICE_RESULT="exit-code")),
        ("neo-engine.service", runtime.env(MONITOR_INVOCATION_ID=RUN, MONITOR_SERVICE_RESULT="start-limit-hit")),
        # the same run, but it exited non-zero by itself: Restart=on-abnormal leaves it down
        ("neo-engine.service", runtime.env(MONITOR_INVOCATION_ID=RUN, MONITOR_SERVICE_RESULT="exit-code")),
        ("neo-engine.service", runtime.env(**fake_systemctl(tmp_path, RUN, "start-limit-hit"))),
        ("neo-engine.service", runtime.env(MONITOR_INVOCATION_ID=RUN[::-1], MONITOR_SERVICE_RESULT="signal")),
        ("neo-engine.service", runtime.env(**fake_systemctl(tmp_path, RUN[::-1], "exit-code"))),
    ):
        n = len(receiver.on("/hook/"))
        r = runtime.cli("notify", "--unit", unit, env=env)
        assert r.rc == 0 and "not sent" not in r.out, (unit, r.out, r.err)
        assert len(receiver.on("/hook/")) == n + 1 and json.loads(receiver.on("/hook/")[-1]["body"])["event"] == "unit_failed"


def test_a_restart_refused_before_it_takes_a_session_is_sent_though_the_kill_was_queued(runtime: Runtime, receiver: Receiver) -> None:
    # Restart=on-abnormal restarts the killed engine; its ExecStartPre refuses before it takes a
    # session ID (here: the engine's program is gone), ExecStopPost finds nothing open, and the unit
    # stays failed. That failure is not the kill: OnFailure= must send it, or nobody hears the engine is down.
    units, engine = runtime.root / "units", runtime.root / "engine"
    units.mkdir()
    engine.write_text("#!/bin/sh\nexit 0\n")
    engine.chmod(0o755)
    (units / "neo-engine.service").write_text(f"[Service]\nExecStart={engine}\n")
    configure(runtime, all_targets(receiver), unit_dir=str(units))
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    assert _killed(runtime, "1" * 32).rc == 0
    r = _on_failure(runtime, "1" * 32)
    assert r.rc == 0 and "already queued" in r.out and receiver.requests == [], r.out + r.err  # the kill: one message
    engine.unlink()
    refused = runtime.cli("session-start")
    assert refused.rc == 2 and "is not installed" in refused.err, refused.err
    stop_env = runtime.env(SERVICE_RESULT="exit-code", EXIT_CODE="exited", EXIT_STATUS="2", INVOCATION_ID="2" * 32)
    assert runtime.cli("session-stop", env=stop_env).rc == 0
    r = _on_failure(runtime, "2" * 32, "exit-code")
    assert r.rc == 0 and "not sent" not in r.out, r.out + r.err
    [hook] = receiver.on("/hook/")
    assert json.loads(hook["body"])["event"] == "unit_failed", hook


def test_a_crash_after_a_stop_hook_run_by_hand_is_sent(runtime: Runtime, receiver: Receiver) -> None:
    # root runs session-stop by hand while the engine still runs (no $INVOCATION_ID: not systemd's
    # hook); the engine's real crash later finds no open session, so its hook queues nothing: OnFailure= must send.
    configure(runtime, all_targets(receiver))
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    assert runtime.stop(None, None, "success").rc == 0  # by hand: classified abnormal, queued
    assert _killed(runtime, "3" * 32).rc == 0  # the real crash: nothing open, nothing queued
    r = _on_failure(runtime, "3" * 32)
    assert r.rc == 0 and "not sent" not in r.out, r.out + r.err
    [hook] = receiver.on("/hook/")
    assert json.loads(hook["body"])["event"] == "unit_failed", hook


def test_a_stop_hook_run_by_hand_records_no_run_to_silence(runtime: Runtime, receiver: Receiver, tmp_path: Path) -> None:
    configure(runtime, all_targets(receiver))
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    assert runtime.stop("killed", "KILL", "signal").rc == 0  # no $INVOCATION_ID
    r = runtime.cli("notify", "--unit", "neo-engine.service", env=runtime.env(**fake_systemctl(tmp_path, RUN, "signal")))
    assert r.rc == 0 and "not sent" not in r.out, r.out + r.err
    assert [json.loads(h["body"])["event"] for h in receiver.on("/hook/")] == ["unit_failed"]


def test_a_sigkill_whose_event_could_not_be_queued_is_sent_by_on_failure(runtime: Runtime, receiver: Receiver) -> None:
    configure(runtime, all_targets(receiver))
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0
    queue = runtime.state / "notify-queue"
    shutil.rmtree(queue, ignore_errors=True)
    queue.write_text("not a directory\n")  # the stop hook cannot queue (root ignores modes)
    r = _killed(runtime)
    assert r.rc == 0 and "could not queue the abnormal_stop event" in r.err, r.err
    queue.unlink()
    r = _on_failure(runtime)
    assert r.rc == 0 and "not sent" not in r.out, r.out + r.err
    [hook] = receiver.on("/hook/")
    assert json.loads(hook["body"])["event"] == "unit_failed" and json.loads(hook["body"])["session"] == "S001"


def test_a_notifier_that_is_down_is_bounded_logged_and_counted(runtime: Runtime, receiver: Receiver) -> None:
    down = closed_port()
    targets = {"webhook_url": f"http://127.0.0.1:{down}/hook/{TOKENS[0]}", "ntfy_url": receiver.url(f"/ntfy/{TOKENS[1]}")}
    configure(runtime, targets, notify_retries=3, notify_timeout_seconds=2)
    make_db(runtime.db)
    assert runtime.cli("session-start").rc == 0  # the session does not care
    r = runtime.cli("notify", "--test")
    assert r.rc == 1, r.out + r.err
    assert "webhook: not delivered after 3 attempt(s)" in r.err and "Connection refused" in r.err, r.err
    no_token(r.out, r.err)
    assert "ntfy: ok" in r.out and len(receiver.on("/ntfy/")) == 1, "the working target still gets it"
    assert prom_value(runtime, "neo_db_notify_failures_total") == 1
    assert prom_value(runtime, "neo_db_notify_last_failure_timestamp_seconds") > 0


def test_a_receiver_slower_than_the_timeout_gets_a_bounded_number_of_attempts(runtime: Runtime, receiver: Receiver) -> None:
    configure(runtime, {"webhook_url": receiver.url(f"/hook/{TOKENS[0]}")}, notify_retries=2, notify_timeout_seconds=1)
    receiver.delay = 3.0
    r = runtime.cli("notify", "--test", timeout=60)
    assert r.rc == 1 and "not delivered after 2 attempt(s)" in r.err, r.err
    assert len(receiver.on("/hook/")) == 2, "exactly notify_retries attempts, each cut by the timeout"
    no_token(r.out, r.err)
    # Positive control: the same receiver, answering in time, gets one request and it counts as delivered.
    receiver.delay = 0.0
    r = runtime.cli("notify", "--test")
    assert r.rc == 0 and len(receiver.on("/hook/")) == 3, r.err


def test_a_4xx_answer_is_not_retried(runtime: Runtime, receiver: Receiver) -> None:
    configure(runtime, {"webhook_url": receiver.url(f"/hook/{TOKENS[0]}")}, notify_retries=3)
    receiver.status = 404
    r = runtime.cli("notify", "--test")
    assert r.rc == 1 and "HTTP 404" in r.err and len(receiver.requests) == 1, r.err
    receiver.status = 503
    r = runtime.cli("notify", "--test")
    assert r.rc == 1 and "HTTP 503" in r.err and len(receiver.requests) == 4, "a 5xx is retried"


def test_the_secrets_file_must_be_root_only(runtime: Runtime, receiver: Receiver) -> None:
    secrets = configure(runtime, all_targets(receiver), mode=0o644)
    r = runtime.cli("notify", "--test")
    assert r.rc == 2 and str(secrets) in r.err and "mode 0644" in r.err and f"chmod 0600 {secrets}" in r.err, r.err
    assert receiver.requests == [] and "Traceback" not in r.err
    os.chown(secrets, 65534, 65534)
    secrets.chmod(0o600)
    r = runtime.cli("notify", "--test")
    assert r.rc == 2 and "owner uid 65534" in r.err, r.err
    os.chown(secrets, 0, 0)
    link = runtime.root / "link.yml"
    link.symlink_to(secrets)
    runtime.write_config(notify_secrets_path=str(link))
    r = runtime.cli("notify", "--test")
    assert r.rc == 2 and "not a regular file" in r.err, r.err
    # A bad value is named by key, never echoed (it may hold a token).
    secrets.write_text(yaml.safe_dump({"webhook_url": f"ftp://x/{TOKENS[0]}", "ntfy_urll": "x"}))
    runtime.write_config(notify_secrets_path=str(secrets))
    r = runtime.cli("notify", "--test")
    assert r.rc == 2 and "key 'webhook_url'" in r.err and "'ntfy_urll' is unknown" in r.err, r.err
    no_token(r.out, r.err)
    assert receiver.requests == []
    # Positive control: root-owned, 0600, valid: delivered.
    secrets.write_text(yaml.safe_dump(all_targets(receiver)))
    r = runtime.cli("notify", "--test")
    assert r.rc == 0 and len(receiver.requests) == 3, r.err


def test_the_service_user_cannot_read_the_secrets(receiver: Receiver) -> None:
    top = Path(tempfile.mkdtemp(prefix="neo-notify-", dir="/tmp"))  # outside pytest's 0700 tree
    try:
        os.chmod(top, 0o755)  # noqa: S103 (the user "nobody" must reach the config)
        rt = Runtime(top / "runtime", top / "db_safeguards.yml")
        (rt.root / "db").mkdir(parents=True)
        rt.write_config(
            db_path=str(rt.root / "db" / "neo_live_stage1.db"),
            backup_dir=str(rt.root / "backups"),
            exports_dir=str(rt.root / "exports"),
            state_dir=str(rt.root / "state"),
        )
        secrets = configure(rt, all_targets(receiver))
        rt.config_path.chmod(0o644)
        os.chmod(rt.root, 0o755)  # noqa: S103
        cmd = ["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, str(NEO_DB), "notify", "--test"]
        r = subprocess.run(cmd, env=rt.env(), capture_output=True, text=True, check=False)
        assert r.returncode == 2 and str(secrets) in r.stderr and "root-only" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert receiver.requests == []
        no_token(r.stdout, r.stderr)
        # Positive control: root reads the same file.
        assert rt.cli("notify", "--test").rc == 0 and len(receiver.requests) == 3
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_no_notifier_configured_is_a_clear_usage_error(runtime: Runtime) -> None:
    r = runtime.cli("notify", "--test")
    assert r.rc == 2 and "notify_secrets_path is null" in r.err and "Traceback" not in r.err, r.err
    r = runtime.cli("notify")
    assert r.rc == 2 and "one of the arguments" in r.err, r.err
