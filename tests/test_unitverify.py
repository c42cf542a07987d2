"""`neo-db unit-verify`, Ansible's `validate:` for the engine unit and its drop-in: what it
refuses (an unknown key, an unparsable value, a broken drop-in) next to what it accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import NEO_DB, SYSTEM_PYTHON

GOOD_UNIT = "[Unit]\nDescription=neo test\n\n[Service]\nExecStart=/bin/true\n"


def unit_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSTEM_PYTHON, str(NEO_DB), "unit-verify", *args], capture_output=True, text=True, check=False, timeout=60)


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
