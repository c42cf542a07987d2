"""Each converted role's converge stamp covers what its tasks write, enable and install (issue 18).

The role's task YAML is parsed and each file-writing task's dest/path (every loop item), each unit it
enables or starts and each package it installs is rendered with the role's defaults and vars, as
Ansible would; all must be in the stamp's paths, units and packages (the check task in main.yml).
A path missing from the stamp would let a rerun skip a role whose file had drifted.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROOT = Path(__file__).resolve().parent.parent
STAMPED = ["neo_engine", "neo_host", "neo_logrotate", "neo_monitoring", "neo_runtime", "neo_safeguards"]
FILE_MODULES = {"template", "copy", "file", "lineinfile", "blockinfile", "replace", "assemble", "get_url", "unarchive"}
UNIT_MODULES = {"systemd_service", "systemd", "service"}
# Everything switched on, so that every conditional path is rendered; the probes' two answers.
OVERRIDES: dict[str, Any] = {"neo_monitoring_webhook_url": "http://127.0.0.1/hook", "inventory_hostname": "box"}
PROBES: list[dict[str, Any]] = [{"_neo_host_ssh_socket": {"stdout": "enabled"}}, {"_neo_host_ssh_socket": {"stdout": "disabled"}}]


def trust(value: Any) -> Any:
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [trust(v) for v in value]
    if isinstance(value, dict):
        return {k: trust(v) for k, v in value.items()}
    return value


# neo_engine runs in neo_safeguards' play and reads its values (one owner each, site.yml).
READS_FROM = {"neo_engine": ["neo_safeguards"]}
# Units a role starts once, not to keep running: the first prune under its own unit (timers.yml).
ONE_SHOTS = {"neo_safeguards": {"neo-db-prune.service"}}


def role_vars(role: str) -> dict[str, Any]:
    loader = DataLoader()
    variables: dict[str, Any] = {}
    for owner in [*READS_FROM.get(role, []), role]:
        for part in ("defaults", "vars"):
            path = ROOT / "roles" / owner / part / "main.yml"
            if path.exists():
                variables.update(trust(loader.load_from_file(str(path))))
    variables["role_path"] = str(ROOT / "roles" / role)
    return {**variables, **OVERRIDES}


def render(variables: dict[str, Any], value: Any, **extra: Any) -> Any:
    return Templar(loader=DataLoader(), variables={**variables, **extra}).template(trust(value))


def module_of(task: dict[str, Any]) -> tuple[str, Any]:
    for key, args in task.items():
        short = key.rsplit(".", 1)[-1]
        if key.startswith(("ansible.builtin.", "ansible.legacy.", "ansible.posix.", "community.general.")) or short in FILE_MODULES | {
            "neo_stamp"
        }:
            return short, args
    return "", None


def tasks_of(role: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(task, the vars of its enclosing blocks) for every task in every task file, blocks and rescues included."""
    found: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def walk(items: list[dict[str, Any]], scope: dict[str, Any]) -> None:
        for task in items or []:
            inner = {**scope, **(task.get("vars") or {})}
            if task.get("delegate_to") == "localhost":
                continue  # runs on the controller (the Cloud Firewall's API calls): nothing on the box
            if "block" in task:
                for part in ("block", "rescue", "always"):
                    walk(task.get(part) or [], inner)
            else:
                found.append((task, inner))

    for path in sorted((ROOT / "roles" / role / "tasks").glob("*.yml")):
        walk(yaml.safe_load(path.read_text()) or [], {})
    return found


def stamp_task(role: str, mode: str) -> dict[str, Any]:
    tasks = [task for task, _ in tasks_of(role) if module_of(task)[0] == "neo_stamp" and module_of(task)[1].get("mode") == mode]
    assert len(tasks) == 1, f"{role}: expected one neo_stamp {mode} task, found {len(tasks)}"
    return tasks[0]


def stamp_args(role: str, mode: str) -> dict[str, Any]:
    return dict(module_of(stamp_task(role, mode))[1])


def written(role: str, variables: dict[str, Any]) -> dict[str, set[str]]:
    """What the role's tasks write (paths), enable or start (units) and install (packages), rendered."""
    out: dict[str, set[str]] = {"paths": set(), "units": set(), "packages": set()}
    for task, scope in tasks_of(role):
        name, args = module_of(task)
        # ansible.builtin.command: ssh-keygen -A, with args: {creates: ...}
        if name in {"command", "shell"} and isinstance(task.get("args"), dict) and "creates" in task["args"]:
            out["paths"].add(render({**variables, **trust(scope)}, task["args"]["creates"]))
        if not isinstance(args, dict):
            continue
        loop = task.get("loop", task.get("with_items"))
        for probe in PROBES:
            context = {**variables, **trust(scope), **probe}
            items = render(context, loop) if loop is not None else [None]
            for item in items:
                extra = {"item": item} if loop is not None else {}
                if name in FILE_MODULES:
                    for key in ("dest", "path"):
                        if key in args:
                            out["paths"].add(render(context, args[key], **extra))
                elif name in {"command", "shell"} and isinstance(args, dict) and "creates" in args:
                    out["paths"].add(render(context, args["creates"], **extra))
                elif name in UNIT_MODULES and (args.get("enabled") is True or args.get("state") == "started"):
                    out["units"].add(render(context, args["name"], **extra))
                elif name == "apt" and "name" in args:
                    packages = render(context, args["name"], **extra)
                    out["packages"].update([packages] if isinstance(packages, str) else packages)
    return out


def uncovered(role: str, variables: dict[str, Any], check: dict[str, Any]) -> dict[str, list[str]]:
    """What the role's tasks converge that the stamp check's arguments do not list, by kind."""
    stamped = {key: set(render(variables, check.get(key, []))) for key in ("paths", "units", "packages")}
    stamped["units"] |= set(render(variables, check.get("enabled_units", [])))
    tasks = written(role, variables)
    assert tasks["paths"], f"{role}: no file-writing task found: the parser is broken"
    tasks["units"] -= ONE_SHOTS.get(role, set())
    return {key: sorted(tasks[key] - stamped[key]) for key in ("paths", "units", "packages") if tasks[key] - stamped[key]}


@pytest.mark.parametrize("role", STAMPED)
def test_the_stamp_covers_every_path_unit_and_package_the_role_converges(role: str) -> None:
    variables = role_vars(role)
    check, record = stamp_args(role, "check"), stamp_args(role, "record")
    assert {k: v for k, v in check.items() if k != "mode"} == {k: v for k, v in record.items() if k != "mode"}, role
    missing = uncovered(role, variables, check)
    assert not missing, f"{role}: the converge stamp lacks {missing}: add them to the role's stamp lists in vars/main.yml"


def test_the_parser_sees_each_kind_of_task() -> None:
    """The positive control: the parser finds a loop item, a block's rescue, a creates:, units and packages."""
    host = written("neo_host", role_vars("neo_host"))
    assert "/etc/systemd/system/neo-host-reboot-guard.timer" in host["paths"]  # a loop item
    assert "/etc/ssh/ssh_host_ed25519_key" in host["paths"]  # creates:
    assert {"ssh.service", "ssh.socket", "nftables.service"} <= host["units"]  # both probe answers
    assert "nftables" in host["packages"]
    monitoring = written("neo_monitoring", role_vars("neo_monitoring"))
    assert "/etc/systemd/system/neo-engine.service.d/20-monitoring.conf" in monitoring["paths"]
    assert {"neo-db-metrics.timer", "prometheus-node-exporter.service"} <= monitoring["units"]


def test_an_uncovered_path_or_unit_is_reported() -> None:
    """The negative check, through the same uncovered() as the test above: a stamp list without one of
    the role's paths or units names it; the role's own lists are the positive control."""
    logrotate = role_vars("neo_logrotate")
    check = stamp_args("neo_logrotate", "check")
    assert uncovered("neo_logrotate", logrotate, check) == {}
    assert uncovered("neo_logrotate", logrotate, {**check, "paths": []}) == {"paths": ["/etc/logrotate.d/neo"]}
    host = role_vars("neo_host")
    check = stamp_args("neo_host", "check")
    assert uncovered("neo_host", host, check) == {}
    without = {**check, "units": "{{ _neo_host_stamp_units | reject('equalto', 'nftables.service') | list }}"}
    assert uncovered("neo_host", host, without) == {"units": ["nftables.service"]}


@pytest.mark.ansible
@pytest.mark.parametrize(
    ("args", "records"),
    [([], True), (["--tags", "runtime"], False), (["--skip-tags", "hetzner"], False), (["--check"], False)],
    ids=["plain", "tags", "skip-tags", "check"],
)
def test_the_stamp_is_recorded_only_by_a_full_untagged_real_run(tmp_path: Path, args: list[str], records: bool) -> None:
    """Each role's record condition, evaluated by ansible-playbook itself (ansible_run_tags is a tuple in
    ansible-core 2.19: a plain `== ['all']` was never true, and no stamp was ever recorded)."""
    conditions = {role: stamp_task(role, "record")["when"] for role in STAMPED}
    assert len(set(conditions.values())) == 1, conditions
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "tags": ["runtime"],
            "tasks": [{"name": "Probe", "ansible.builtin.debug": {"msg": "RECORD={{ " + next(iter(conditions.values())) + " }}"}}],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"), *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"RECORD={records}" in proc.stdout, proc.stdout


def first_full_converge_task(role: str) -> dict[str, Any]:
    """The first task of the first converge file main.yml includes (neo_safeguards includes its controller-side
    checks before it: they only read, on the controller)."""
    main = yaml.safe_load((ROOT / "roles" / role / "tasks" / "main.yml").read_text())
    includes = [task for task in main if str(task.get("ansible.builtin.include_tasks", "")).startswith("converge")]
    assert includes, f"{role}: main.yml includes no converge file"
    first = includes[0]["ansible.builtin.include_tasks"]
    return dict(yaml.safe_load((ROOT / "roles" / role / "tasks" / first).read_text())[0])


@pytest.mark.parametrize("role", STAMPED)
def test_a_full_converge_removes_the_stamp_before_it_changes_anything(role: str) -> None:
    """The invalidate task is the first task of the full converge (neo_host's has two parts around the
    Cloud Firewall: it was the first of the second part, after the packages and nftables)."""
    task = first_full_converge_task(role)
    name, args = module_of(task)
    assert (name, (args or {}).get("mode")) == ("neo_stamp", "invalidate"), f"{role}: the full converge starts with {task}"
    assert task.get("when") == "not ansible_check_mode", task
