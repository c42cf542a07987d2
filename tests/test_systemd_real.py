"""neo_db.systemd reads what real systemd 252 (Debian 12) and 257 (Debian 13) print.

tests/fixtures/systemd/<version>/captured.json holds the exit status, stdout and stderr of each systemctl and
busctl command neo_db runs, captured from a booted stand-in container by tests/systemd_capture.py (which also
names the units: a service whose ExecStart arguments hold ';', drop-ins overriding User=, ExecStart=,
OnCalendar= and Persistent=, timers enabled, disabled, masked and static). Here PATH shims named systemctl and
busctl, real processes, replay them; a command that was not captured exits 97, so a changed command line
fails these tests instead of passing unread. systemd itself does not run in this test box: only
systemd.running() is answered in-process."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import Runtime
from neo_db import config as config_mod
from neo_db import metrics, systemd
from neo_db.actions import confirm, rebootguard
from neo_db.core import install
from neo_db.errors import DbInUseError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "systemd"
VERSIONS = sorted(p.name for p in FIXTURES.iterdir() if (p / "captured.json").is_file())

REPLAY = """#!{python}
import json, os, sys, time
if os.environ.get("SYSTEMD_REPLAY_HANG"):
    time.sleep(30)
doc = json.load(open(os.environ["SYSTEMD_REPLAY"]))
argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]]
for run in doc["runs"]:
    if run["scenario"] == os.environ["SYSTEMD_REPLAY_SCENARIO"] and run["argv"] == argv:
        sys.stdout.write(run["stdout"])
        sys.stderr.write(run["stderr"])
        sys.exit(run["rc"])
sys.stderr.write("not captured: %r\\n" % (argv,))
sys.exit(97)
"""


@pytest.fixture(params=VERSIONS)
def replay(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """systemctl and busctl on PATH answering as the captured systemd did; systemd.running() is True."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("systemctl", "busctl"):
        (bin_dir / name).write_text(REPLAY.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    captured = FIXTURES / request.param / "captured.json"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SYSTEMD_REPLAY", str(captured))
    monkeypatch.setenv("SYSTEMD_REPLAY_SCENARIO", "ok")
    monkeypatch.setattr(systemd, "running", lambda: True)
    doc: dict[str, object] = json.loads(captured.read_text())
    assert str(doc["systemd"]).startswith(f"systemd {request.param} "), doc["systemd"]
    return doc


def _no_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSTEMD_REPLAY_SCENARIO", "no-bus")


def test_exec_arguments_with_semicolons_survive_and_the_drop_in_wins(replay: dict[str, object]) -> None:
    view = systemd.unit_view("neo-probe", systemd.DEFAULT_UNIT_DIR)
    assert view.where.startswith("systemd (systemctl show, busctl"), view.where
    # The drop-in's ExecStart= (reset, then set) and User= win over the unit file's '/bin/echo base' and 'nobody'.
    assert view.commands["ExecStart"] == [
        systemd.ExecCommand("/bin/echo", ("/bin/echo", "--label", "night run; keep", "a;b", ";", "plain"), False)
    ]
    assert view.get("User") == ["daemon"]
    assert view.commands["ExecStartPre"] == [systemd.ExecCommand("/bin/true", ("/bin/true", "pre; one"), True)]
    assert view.commands["ExecStopPost"] == [systemd.ExecCommand("/bin/true", ("/bin/true", "post"), False)]
    # Why not `systemctl show -p ExecStart`: it joins argv with spaces, and 'night run; keep' is lost in it.
    text = next(r["stdout"] for r in replay["runs"] if r["argv"][-1] == "--property=ExecStart")  # type: ignore[attr-defined]
    assert "argv[]=/bin/echo --label night run; keep a;b ; plain ;" in text, text


def test_a_timer_drop_in_wins_and_an_absent_unit_is_not_loaded(replay: dict[str, object]) -> None:
    timer = systemd.unit_view("neo-probe-enabled.timer", systemd.DEFAULT_UNIT_DIR)
    assert sorted(timer.get("OnCalendar")) == ["*-*-* 03:15:00", "Sun *-*-* 05:00:00"], timer  # not the file's 04:00
    assert timer.get("Persistent") == ["yes"], timer
    absent = systemd.unit_view("neo-absent", systemd.DEFAULT_UNIT_DIR)
    assert (absent.settings, absent.commands) == ({}, {}) and "not loaded (LoadState=not-found)" in absent.where, absent


@pytest.mark.parametrize(
    ("timer", "enabled", "active"),
    [("enabled", True, True), ("disabled", False, False), ("masked", False, False), ("static", False, False)],
)
def test_is_enabled_and_is_active_are_read_as_systemd_says(replay: dict[str, object], timer: str, enabled: bool, active: bool) -> None:
    state = systemd.systemctl_state(f"neo-probe-{timer}.timer")
    assert (state.enabled, state.active) == (enabled, active), state
    assert f"is-enabled neo-probe-{timer}.timer: {timer};" in state.evidence, state


def test_confirm_asks_systemd_whether_the_backup_timer_is_enabled(replay: dict[str, object], runtime: Runtime) -> None:
    """Not a timers.target.wants link (none exists in this box's /etc/systemd/system): systemctl is-enabled."""
    cfg = dataclasses.replace(config_mod.load(runtime.config_path), unit_dir=systemd.DEFAULT_UNIT_DIR)
    enabled, evidence = confirm._timer_enabled(dataclasses.replace(cfg, backup_timer="neo-probe-enabled.timer"))
    assert enabled and "systemctl is-enabled neo-probe-enabled.timer: enabled" in evidence, evidence
    for other in ("disabled", "masked", "static"):
        enabled, evidence = confirm._timer_enabled(dataclasses.replace(cfg, backup_timer=f"neo-probe-{other}.timer"))
        assert not enabled and f"not enabled (systemctl is-enabled neo-probe-{other}.timer: {other};" in evidence, evidence


def test_a_systemctl_that_cannot_reach_systemd_fails_closed(
    replay: dict[str, object], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = dataclasses.replace(config_mod.load(runtime.config_path), engine_unit="neo-probe", unit_dir=systemd.DEFAULT_UNIT_DIR)
    # Positive controls: systemd answers; the engine is inactive, so a restore and a reboot may go.
    assert systemd.unit_view("neo-probe", systemd.DEFAULT_UNIT_DIR).commands["ExecStart"]
    assert systemd.systemctl_state("neo-probe-enabled.timer").enabled
    install.refuse_if_in_use(cfg, scan_holders=False)
    assert rebootguard._engine_state(cfg) is None
    assert metrics._unit_failed("neo-probe") == 0
    _no_bus(monkeypatch)
    view = systemd.unit_view("neo-probe", systemd.DEFAULT_UNIT_DIR)
    assert (view.settings, view.commands) == ({}, {}), view
    assert "could not be asked about neo-probe.service" in view.where and "Failed to connect to" in view.where, view.where
    state = systemd.systemctl_state("neo-probe-enabled.timer")
    assert (state.enabled, state.active) == (False, False) and "Failed to connect to" in state.evidence, state
    with pytest.raises(DbInUseError, match=r"cannot be read.*Failed to connect to"):
        install.refuse_if_in_use(cfg, scan_holders=False)
    assert "unknown state" in str(rebootguard._engine_state(cfg))
    assert metrics._unit_failed("neo-probe") is None  # no series rather than a 0 "not failed"


def test_a_systemctl_that_hangs_fails_closed(replay: dict[str, object], runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dataclasses.replace(config_mod.load(runtime.config_path), engine_unit="neo-probe", unit_dir=systemd.DEFAULT_UNIT_DIR)
    monkeypatch.setattr(systemd, "TIMEOUT", 1.0)
    install.refuse_if_in_use(cfg, scan_holders=False)  # positive control: answered in time
    assert systemd.systemctl_state("neo-probe-enabled.timer").enabled
    monkeypatch.setenv("SYSTEMD_REPLAY_HANG", "1")
    with pytest.raises(DbInUseError, match="timed out"):
        install.refuse_if_in_use(cfg, scan_holders=False)
    state = systemd.systemctl_state("neo-probe-enabled.timer")
    assert (state.enabled, state.active) == (False, False) and "timed out" in state.evidence, state
    assert "timed out" in systemd.unit_view("neo-probe", systemd.DEFAULT_UNIT_DIR).where


def _shim(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / name).chmod(0o755)


def test_a_systemctl_missing_from_path_on_a_systemd_box_fails_closed(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/run/systemd/system says systemd runs; a PATH without systemctl must not make it "not running" (then
    a restore and a reboot would go as if there were no engine to ask about)."""
    cfg = dataclasses.replace(config_mod.load(runtime.config_path), engine_unit="neo-probe", unit_dir=systemd.DEFAULT_UNIT_DIR)
    run_dir = tmp_path / "run-systemd-system"
    run_dir.mkdir()
    monkeypatch.setattr(systemd, "RUN_DIR", run_dir)
    bin_dir = tmp_path / "bin"
    # Positive control: systemctl on PATH says the engine is inactive: restore and reboot may go.
    _shim(bin_dir, "systemctl", 'echo inactive; [ "$1" = is-active ] && exit 3; exit 0')
    monkeypatch.setenv("PATH", str(bin_dir))
    assert systemd.running()
    install.refuse_if_in_use(cfg, scan_holders=False)
    assert rebootguard._engine_state(cfg) is None
    (bin_dir / "systemctl").unlink()
    assert systemd.running()
    with pytest.raises(DbInUseError, match=r"cannot be read.*No such file"):
        install.refuse_if_in_use(cfg, scan_holders=False)
    assert "unknown state" in str(rebootguard._engine_state(cfg))
    assert "No such file" in systemd.unit_view("neo-probe", systemd.DEFAULT_UNIT_DIR).where
    assert not systemd.systemctl_state("neo-probe-enabled.timer").enabled
    run_dir.rmdir()  # and where systemd does not run, there is nothing to ask
    assert not systemd.running() and systemd.is_active("neo-probe") is None


def test_garbage_from_systemctl_and_busctl_is_an_unread_answer_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes that are not UTF-8, JSON nested past Python's recursion limit, a state word systemd never prints."""
    bin_dir = tmp_path / "bin"
    monkeypatch.setattr(systemd, "running", lambda: True)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    record = '{"type":"a(sasbttttuii)","data":[["/bin/true",["/bin/true"],false,0,0,0,0,0,0,0]]}'
    # Positive control: well-formed answers are read.
    _shim(bin_dir, "systemctl", "printf 'LoadState=loaded\\nUser=neo\\nActiveState=failed\\n'")
    _shim(bin_dir, "busctl", f"for p in a b c; do echo '{record}'; done")
    assert systemd.unit_view("neo-probe", systemd.DEFAULT_UNIT_DIR).commands["ExecStart"][0].path == "/bin/true"
    assert metrics._unit_failed("neo-probe") == 1
    _shim(bin_dir, "busctl", f"python3 -c \"print('[' * 100000)\"; echo '{record}'; echo '{record}'")
    view = systemd.unit_view("neo-probe", systemd.DEFAULT_UNIT_DIR)
    assert (view.settings, view.commands) == ({}, {}) and "not one JSON value per property" in view.where, view.where
    _shim(bin_dir, "systemctl", "printf 'LoadState=loaded\\nUser=n\\377o\\nActiveState=Aktiv\\n'; printf 'b\\376d\\n' >&2")
    assert metrics._unit_failed("neo-probe") is None  # no series: not a 0 "not failed" for a word systemd never prints
    _shim(bin_dir, "systemctl", "printf 'act\\377ive\\n'")
    with pytest.raises(systemd.SystemdError, match=r"is-active neo-probe\.service: act"):
        systemd.is_active("neo-probe")
    state = systemd.systemctl_state("neo-probe-enabled.timer")
    assert (state.enabled, state.active) == (False, False), state
