"""The Prometheus alert rules the neo_monitoring role ships: `promtool test rules` covers every
alert firing and not firing, and each alert carries the annotations an operator needs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from conftest import ROOT

RULES = ROOT / "roles" / "neo_monitoring" / "files" / "neo_db_alerts.yml"
RULE_TESTS = ROOT / "tests" / "promtool" / "neo_db_alerts_test.yml"
HOST_RULES = ROOT / "roles" / "neo_monitoring" / "files" / "neo_host_alerts.yml"
HOST_RULE_TESTS = ROOT / "tests" / "promtool" / "neo_host_alerts_test.yml"
ALL_RULE_TESTS = sorted((ROOT / "tests" / "promtool").glob("*_test.yml"))
PROMTOOL = shutil.which("promtool")


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is missing: install the distro's prometheus package (make deps)"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, check=False)


def alerts(*files: Path) -> list[dict]:
    docs = [yaml.safe_load(f.read_text()) for f in files or (RULES, HOST_RULES)]
    return [r for doc in docs for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_the_rule_file_is_valid() -> None:
    r = promtool("check", "rules", str(RULES), str(HOST_RULES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_pass() -> None:
    assert len(ALL_RULE_TESTS) == 3
    r = promtool("test", "rules", *[p.name for p in ALL_RULE_TESTS], cwd=RULE_TESTS.parent)
    assert r.returncode == 0 and r.stdout.count("SUCCESS") == len(ALL_RULE_TESTS), r.stdout + r.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests = [t for p in ALL_RULE_TESTS for t in yaml.safe_load(p.read_text())["tests"]]
    firing: set[str] = set()
    silent: set[str] = set()
    for t in tests:
        for a in t["alert_rule_test"]:
            (firing if a["exp_alerts"] else silent).add(a["alertname"])
    names = {a["alert"] for a in alerts()}
    assert len(names) >= 10
    assert names - firing == set(), f"never tested firing: {names - firing}"
    assert names - silent == set(), f"never tested silent: {names - silent}"


def test_every_alert_has_a_summary_a_description_and_a_runbook_anchor() -> None:
    for a in alerts():
        ann = a.get("annotations", {})
        assert {"summary", "description", "runbook"} <= set(ann), a["alert"]
        assert ann["runbook"] == f"README.md#{a['alert'].lower()}", a["alert"]
        assert a["labels"]["severity"] in ("critical", "warning"), a["alert"]


def test_a_broken_rule_is_caught_by_the_rule_tests(tmp_path: Path) -> None:
    """The unit tests have teeth: the same tests fail against a rule file with one rule weakened."""
    broken = RULES.read_text().replace("neo_db_gate_last_exit_code > 0", "neo_db_gate_last_exit_code > 3")
    assert broken != RULES.read_text()
    (tmp_path / "roles" / "neo_monitoring" / "files").mkdir(parents=True)
    (tmp_path / "roles" / "neo_monitoring" / "files" / RULES.name).write_text(broken)
    (tmp_path / "tests" / "promtool").mkdir(parents=True)
    shutil.copy(RULE_TESTS, tmp_path / "tests" / "promtool" / RULE_TESTS.name)
    r = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path / "tests" / "promtool")
    assert r.returncode != 0 and "NeoDbGateRefusedStart" in r.stdout + r.stderr, r.stdout + r.stderr
    # Positive control: the real file in the same layout passes.
    (tmp_path / "roles" / "neo_monitoring" / "files" / RULES.name).write_text(RULES.read_text())
    r = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path / "tests" / "promtool")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_rules_only_use_series_neo_db_writes() -> None:
    """A typo in a series name makes an alert that can never fire: each neo_db_* name is in metrics.SERIES."""
    from neo_db import metrics

    used = {name for a in alerts(RULES) for name in re.findall(r"\bneo_db_[a-z_]+\b", a["expr"])}
    assert len(used) >= 15
    assert used - set(metrics.SERIES) == set()


def test_the_host_rules_only_use_series_the_reboot_guard_writes_or_node_exporter_has() -> None:
    import datetime as dt

    from neo_db.actions import rebootguard

    text = rebootguard.render(True, 1, "busy", dt.datetime.now(dt.timezone.utc))
    written = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    used = {name for a in alerts(HOST_RULES) for name in re.findall(r"\b(?:neo_host|node)_[a-z_]+\b", a["expr"])}
    assert used == {"neo_host_reboot_required", "neo_host_reboot_required_since_timestamp_seconds", "node_timex_sync_status"}
    assert used - written == {"node_timex_sync_status"}


def test_a_weakened_host_rule_is_caught_by_its_rule_tests(tmp_path: Path) -> None:
    broken = HOST_RULES.read_text().replace("> 3 * 86400", "> 5 * 86400")
    assert broken != HOST_RULES.read_text()
    (tmp_path / "roles" / "neo_monitoring" / "files").mkdir(parents=True)
    (tmp_path / "roles" / "neo_monitoring" / "files" / HOST_RULES.name).write_text(broken)
    (tmp_path / "tests" / "promtool").mkdir(parents=True)
    shutil.copy(HOST_RULE_TESTS, tmp_path / "tests" / "promtool" / HOST_RULE_TESTS.name)
    r = promtool("test", "rules", HOST_RULE_TESTS.name, cwd=tmp_path / "tests" / "promtool")
    assert r.returncode != 0 and "NeoHostRebootPendingTooLong" in r.stdout + r.stderr, r.stdout + r.stderr
    # Positive control: the real file in the same layout passes.
    (tmp_path / "roles" / "neo_monitoring" / "files" / HOST_RULES.name).write_text(HOST_RULES.read_text())
    r = promtool("test", "rules", HOST_RULE_TESTS.name, cwd=tmp_path / "tests" / "promtool")
    assert r.returncode == 0, r.stdout + r.stderr
