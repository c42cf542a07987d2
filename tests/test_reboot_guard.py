"""`neo-db reboot-guard`: the reboot-guard timer's decision (issue 16, "Reboots only between sessions").

A reboot that /var/run/reboot-required asks for happens only inside the maintenance window and
only while no session is open. The reboot command is a script that records its call, so "reboots"
means: the command ran, once. Real sessions (session-start / session-stop on a real WAL DB), a real
flock held by another process, the real textfile checked with promtool.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Result, Runtime, make_db
from neo_db import config as config_mod
from neo_db import systemd
from neo_db.actions import rebootguard

PROMTOOL = shutil.which("promtool")
DECISIONS = ("none", "outside_window", "session_open", "engine_active", "busy", "rebooting", "reboot_failed")


def _window(start_h: int, end_h: int) -> str:
    """A window in UTC, hours relative to now (wraps past midnight as the guard must)."""
    now = dt.datetime.now(dt.timezone.utc)
    a, b = now + dt.timedelta(hours=start_h), now + dt.timedelta(hours=end_h)
    return f"{a:%H:%M}-{b:%H:%M}"


INSIDE = (-1, 1)  # now is in the middle: minutes of test time cannot leave it
OUTSIDE = (3, 5)


class Guard:
    def __init__(self, rt: Runtime, tmp: Path) -> None:
        self.rt = rt
        self.flag = tmp / "reboot-required"
        self.calls = tmp / "reboot-calls.log"
        self.cmd = tmp / "fake-reboot"
        self.cmd.write_text(f'#!/bin/sh\necho "reboot $*" >> {self.calls}\n')
        self.cmd.chmod(0o755)
        self.textfile = rt.root / "textfile"
        self.textfile.mkdir()
        rt.write_config(metrics_textfile_dir=str(self.textfile), hetzner_fact_path=None)

    def run(self, window: tuple[int, int] = INSIDE, *extra: str, command: str | None = None) -> Result:
        return self.rt.cli(
            "reboot-guard",
            "--json",
            "--window",
            _window(*window),
            "--reboot-required-file",
            str(self.flag),
            "--reboot-command",
            command or f"{self.cmd} --now",
            *extra,
        )

    def reboots(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def prom(self) -> dict[str, float]:
        out = {}
        for line in (self.textfile / "neo_host.prom").read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def decision_metric(self) -> str:
        values = self.prom()
        on = [d for d in DECISIONS if values.get(f'neo_host_reboot_guard_last_decision{{decision="{d}"}}') == 1]
        assert len(on) == 1, values
        return on[0]


@pytest.fixture
def guard(runtime: Runtime, tmp_path: Path) -> Guard:
    make_db(runtime.db)
    return Guard(runtime, tmp_path)


def test_session_open_refuses_and_none_open_reboots(guard: Guard) -> None:
    guard.flag.write_text("*** System restart required ***\n")
    started = guard.rt.cli("session-start")
    assert started.rc == 0, started.err

    refused = guard.run()
    assert refused.rc == 0, refused.err
    assert refused.json["decision"] == "session_open", refused.out
    assert "session" in refused.err and "open" in refused.err  # the journal says why it waits
    assert guard.reboots() == []
    assert guard.decision_metric() == "session_open"
    assert guard.prom()["neo_host_reboot_required"] == 1

    # Positive control: the session stops cleanly, the same probe now reboots, exactly once.
    stopped = guard.rt.stop()
    assert stopped.rc == 0, stopped.err
    done = guard.run()
    assert done.rc == 0, done.err
    assert done.json["decision"] == "rebooting", done.out
    assert guard.reboots() == ["reboot --now"]
    assert guard.decision_metric() == "rebooting"


def test_outside_the_window_waits(guard: Guard) -> None:
    guard.flag.touch()
    waited = guard.run(OUTSIDE)
    assert waited.rc == 0, waited.err
    assert waited.json["decision"] == "outside_window", waited.out
    assert "window" in waited.err
    assert guard.reboots() == []
    assert guard.decision_metric() == "outside_window"

    inside = guard.run(INSIDE)
    assert inside.json["decision"] == "rebooting", inside.out
    assert guard.reboots() == ["reboot --now"]


def test_no_reboot_required_does_nothing(guard: Guard) -> None:
    nothing = guard.run()
    assert nothing.rc == 0, nothing.err
    assert nothing.json["decision"] == "none", nothing.out
    assert guard.reboots() == []
    assert guard.prom()["neo_host_reboot_required"] == 0
    assert guard.decision_metric() == "none"

    guard.flag.touch()
    assert guard.run().json["decision"] == "rebooting"
    assert guard.reboots() == ["reboot --now"]
    assert guard.prom()["neo_host_reboot_required"] == 1
    assert guard.prom()["neo_host_reboot_required_since_timestamp_seconds"] == int(guard.flag.stat().st_mtime)


def test_a_neo_db_run_in_progress_waits(guard: Guard) -> None:
    """A backup or restore holds state_dir/neo-db.lock: the guard waits rather than cut it."""
    guard.flag.touch()
    lock = guard.rt.state / "neo-db.lock"
    guard.rt.state.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        ["flock", str(lock), "sh", "-c", "echo held; read x"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        busy = guard.run()
        assert busy.rc == 0, busy.err
        assert busy.json["decision"] == "busy", busy.out
        assert guard.reboots() == []
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    free = guard.run()
    assert free.json["decision"] == "rebooting", free.out
    assert guard.reboots() == ["reboot --now"]
    # The guard (root) never creates or re-owns the lock a service user must open read-write.
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_a_failing_reboot_command_is_reported(guard: Guard, tmp_path: Path) -> None:
    guard.flag.touch()
    bad = tmp_path / "failing-reboot"
    bad.write_text("#!/bin/sh\necho 'Failed to reboot: access denied' >&2\nexit 1\n")
    bad.chmod(0o755)
    failed = guard.run(command=str(bad))
    assert failed.rc == 1, failed.out + failed.err
    assert "Traceback" not in failed.err
    assert str(bad) in failed.err and "exit status 1" in failed.err
    assert guard.decision_metric() == "reboot_failed"

    missing = guard.run(command=str(tmp_path / "no-such-command"))
    assert missing.rc == 1
    assert "no-such-command" in missing.err and "Traceback" not in missing.err

    # Positive control: the working command reboots.
    assert guard.run().json["decision"] == "rebooting"
    assert guard.reboots() == ["reboot --now"]


@pytest.mark.parametrize("window", ["25:00-03:00", "03:00", "0300-0500", "03:00-03:00", "", "03:00-05:00x"])
def test_a_bad_window_is_a_usage_error(guard: Guard, window: str) -> None:
    guard.flag.touch()
    r = guard.rt.cli("reboot-guard", "--window", window, "--reboot-required-file", str(guard.flag), "--reboot-command", str(guard.cmd))
    assert r.rc == 2, r.out + r.err
    assert repr(window) in r.err or window in r.err
    assert "HH:MM-HH:MM" in r.err
    assert "Traceback" not in r.err
    assert guard.reboots() == []
    ok = guard.rt.cli(
        "reboot-guard", "--window", "00:00-24:00", "--reboot-required-file", str(guard.flag), "--reboot-command", str(guard.cmd)
    )
    assert ok.rc == 0, ok.err
    assert guard.reboots() == ["reboot "]


def test_the_textfile_passes_promtool(guard: Guard) -> None:
    assert PROMTOOL, "promtool is missing: install the distro's prometheus package (make deps)"
    guard.flag.touch()
    guard.run(OUTSIDE)
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=(guard.textfile / "neo_host.prom").read_bytes(), capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert not [p for p in guard.textfile.iterdir() if p.name != "neo_host.prom"]  # no temp file left


def test_an_engine_state_that_cannot_be_read_waits(runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd runs in the stand-in (molecule verify, tasks/host.yml); here only its answer is
    faked, in-process: a `systemctl show` that fails must never read as "the engine is idle"."""
    cfg = config_mod.load(runtime.config_path)
    fake = tmp_path / "bin"
    fake.mkdir()
    monkeypatch.setattr(systemd, "running", lambda: True)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")

    def systemctl(body: str) -> None:
        (fake / "systemctl").write_text(f"#!/bin/sh\n{body}\n")
        (fake / "systemctl").chmod(0o755)

    systemctl("echo 'Failed to connect to bus: No such file or directory' >&2; exit 1")
    state = rebootguard._engine_state(cfg)
    assert state is not None and "unknown state" in state and "exit status 1" in state and "Failed to connect" in state, state
    systemctl("exit 0")  # no output at all
    assert "unknown state" in str(rebootguard._engine_state(cfg))
    systemctl("sleep 30")
    monkeypatch.setattr(rebootguard.subprocess, "run", _timeout_run)
    assert "unknown state" in str(rebootguard._engine_state(cfg))
    monkeypatch.undo()
    monkeypatch.setattr(systemd, "running", lambda: True)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    # Positive controls: an idle engine lets the reboot go; an active one waits.
    systemctl("echo inactive")
    assert rebootguard._engine_state(cfg) is None
    systemctl("echo active")
    assert rebootguard._engine_state(cfg) == "active"
    # systemd 257's "refreshing" is a running engine; a word systemd never prints is an unread state, not idle.
    systemctl("echo refreshing")
    assert rebootguard._engine_state(cfg) == "refreshing"
    systemctl("echo Aktiv")
    assert "unknown state (ActiveState='Aktiv')" in str(rebootguard._engine_state(cfg))


def _timeout_run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    raise subprocess.TimeoutExpired(cmd="systemctl", timeout=10)
