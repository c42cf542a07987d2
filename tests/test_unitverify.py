"""`neo-db unit-verify`, Ansible's `validate:` for the engine unit and its drop-in: what it
refuses (an unknown key, an unparsable value, a broken drop-in) next to what it accepts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import NEO_DB, SYSTEM_PYTHON

GOOD_UNIT = "[Unit]\nDescription=neo test\n\n[Service]\nExecStart=/bin/true\n"


def unit_verify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSTEM_PYTHON, str(NEO_DB), "unit-verify", *args], capture_output=True, text=True, check=False, timeout=60, env=env
    )


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("Frobnicate=yes\n", "Unknown key 'Frobnicate'"),
        ("Type=bogus\n", "Failed to parse service type"),
    ],
)
def test_a_unit_with_an_unknown_key_or_a_bad_value_is_refused(tmp_path: Path, extra: str, named: str) -> None:
    good = tmp_path / "good.service"
    good.write_text(GOOD_UNIT)
    ok = unit_verify(str(good), "--as", "neo-test.service")
    assert ok.returncode == 0, ok.stderr  # positive control: the same unit without the bad line passes
    assert "passes systemd-analyze verify" in ok.stdout

    bad = tmp_path / "bad.service"
    bad.write_text(GOOD_UNIT + extra)
    refused = unit_verify(str(bad), "--as", "neo-test.service")
    assert refused.returncode == 2
    assert named in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_drop_in_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    unit = tmp_path / "neo-test.service"
    unit.write_text(GOOD_UNIT)
    good = tmp_path / "good.conf"
    good.write_text("[Service]\nRestartSec=3\n")
    ok = unit_verify(str(good), "--drop-in-for", str(unit))
    assert ok.returncode == 0, ok.stderr

    bad = tmp_path / "bad.conf"
    bad.write_text("[Service]\nRestartSec=3\nRestartPreventExitStatuses=3\n")
    refused = unit_verify(str(bad), "--drop-in-for", str(unit))
    assert refused.returncode == 2
    assert "RestartPreventExitStatuses" in refused.stderr


def test_a_drop_in_for_a_unit_not_installed_yet_is_a_usage_error(tmp_path: Path) -> None:
    conf = tmp_path / "x.conf"
    conf.write_text("[Service]\nRestartSec=3\n")
    result = unit_verify(str(conf), "--drop-in-for", str(tmp_path / "missing.service"))
    assert result.returncode == 2
    assert "does not exist yet" in result.stderr


OTHER_BAD_UNIT = "[Unit]\nDescription=another unit on the host\n\n[Service]\nFrobnicate=1\nExecStart=/bin/true\n"


def test_warnings_about_other_units_are_ignored_but_the_candidates_own_are_not(tmp_path: Path) -> None:
    """systemd-analyze verify also loads the units the candidate names (Wants=, After=) and prints
    their warnings: a broken unit elsewhere on the host must not fail the candidate's check."""
    system = tmp_path / "system"
    system.mkdir()
    (system / "other-bad.service").write_text(OTHER_BAD_UNIT)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{system}:"}  # the trailing ':' keeps the default path too
    cand = tmp_path / "cand.service"
    cand.write_text(GOOD_UNIT.replace("[Service]", "Wants=other-bad.service\nAfter=other-bad.service\n\n[Service]"))

    # The probe reaches the other unit: systemd-analyze itself prints its warning.
    raw = subprocess.run(["systemd-analyze", "verify", str(cand)], capture_output=True, text=True, check=False, env=env)
    assert "other-bad.service:5: Unknown key" in raw.stdout + raw.stderr, raw

    ok = unit_verify(str(cand), "--as", "neo-test.service", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "passes systemd-analyze verify" in ok.stdout
    assert "1 line about other units ignored" in ok.stderr, ok.stderr

    # Positive control: the candidate's own unknown key, beside the other unit's, is still refused.
    cand.write_text(cand.read_text() + "Frob=2\n")
    refused = unit_verify(str(cand), "--as", "neo-test.service", env=env)
    assert refused.returncode == 2, refused.stderr
    assert "Unknown key 'Frob'" in refused.stderr
    errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]
    assert errors and not any("Frobnicate" in ln for ln in errors), refused.stderr  # not blamed on the candidate
    assert "Traceback" not in refused.stderr


def test_a_socket_is_not_failed_by_a_warning_in_the_service_beside_it(tmp_path: Path) -> None:
    service = tmp_path / "neo-test@.service"
    service.write_text(OTHER_BAD_UNIT)
    sock = tmp_path / "sock"
    sock.write_text("[Socket]\nListenStream=/run/neo-test.sock\nAccept=yes\n")
    ok = unit_verify(str(sock), "--as", "neo-test.socket", "--with", str(service))
    assert ok.returncode == 0, ok.stderr
    sock.write_text("[Socket]\nListenStream=/run/neo-test.sock\nAccept=yes\nBacklogg=4\n")
    refused = unit_verify(str(sock), "--as", "neo-test.socket", "--with", str(service))
    assert refused.returncode == 2 and "Backlogg" in refused.stderr, refused.stderr


ENGINE_UNIT = "[Unit]\nDescription=neo test engine\n\n[Service]\nExecStart={exe} --config /etc/neo/engine.yml\n"


def test_an_engine_not_installed_yet_is_a_notice_only_where_allowed(tmp_path: Path) -> None:
    """The production inventory is converged before the engine is installed: with
    --allow-absent-engine, ExecStart's program being absent is printed as a notice, not a failure.
    Only that: a present program that is not executable, or another command that is missing, still fails."""
    exe = tmp_path / "opt" / "engine" / "bin" / "neo-engine"
    unit = tmp_path / "unit"
    unit.write_text(ENGINE_UNIT.format(exe=exe))

    strict = unit_verify(str(unit), "--as", "neo-test.service")
    assert strict.returncode == 2 and "is not executable" in strict.stderr, strict.stderr

    allowed = unit_verify(str(unit), "--as", "neo-test.service", "--allow-absent-engine")
    assert allowed.returncode == 0, allowed.stderr
    assert f"notice: the engine {exe} (ExecStart) is not installed yet" in allowed.stderr, allowed.stderr
    assert "install it before the first session" in allowed.stderr

    # Present but not executable: refused even when allowed.
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o644)
    refused = unit_verify(str(unit), "--as", "neo-test.service", "--allow-absent-engine")
    assert refused.returncode == 2 and "Permission denied" in refused.stderr, refused.stderr
    # Installed: passes with no notice.
    exe.chmod(0o755)
    ok = unit_verify(str(unit), "--as", "neo-test.service", "--allow-absent-engine")
    assert ok.returncode == 0 and "notice" not in ok.stderr, ok.stderr

    # Another command missing (a hook, not the engine) is never excused.
    missing_hook = tmp_path / "missing-hook"
    unit.write_text(ENGINE_UNIT.format(exe=exe) + f"ExecStartPre={missing_hook}\n")
    hook = unit_verify(str(unit), "--as", "neo-test.service", "--allow-absent-engine")
    assert hook.returncode == 2 and str(missing_hook) in hook.stderr, hook.stderr


def test_a_drop_in_for_an_engine_not_installed_yet_is_a_notice_only_where_allowed(tmp_path: Path) -> None:
    exe = tmp_path / "neo-engine"
    unit = tmp_path / "neo-test.service"
    unit.write_text(ENGINE_UNIT.format(exe=exe))
    conf = tmp_path / "x.conf"
    conf.write_text("[Service]\nRestartSec=3\n")
    strict = unit_verify(str(conf), "--drop-in-for", str(unit))
    assert strict.returncode == 2 and "is not executable" in strict.stderr, strict.stderr
    allowed = unit_verify(str(conf), "--drop-in-for", str(unit), "--allow-absent-engine")
    assert allowed.returncode == 0, allowed.stderr
    assert f"the engine {exe} (ExecStart) is not installed yet" in allowed.stderr
