"""The repository keeps its promises to the next maintainer: docs match roles, roles follow house style."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ANSIBLE_PLAYBOOK, ROOT, SYSTEM_PYTHON

ROLES = sorted(p.parent.parent for p in ROOT.glob("roles/*/meta/argument_specs.yml"))


def test_readme_variables_table_matches_the_roles() -> None:
    generated = subprocess.run([SYSTEM_PYTHON, str(ROOT / "scripts" / "readme-vars")], capture_output=True, text=True, check=True).stdout
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- vars:begin -->")[1].split("<!-- vars:end -->")[0]
    assert block.strip() == generated.strip(), "README variables table is stale: run scripts/readme-vars --write"


def gen_role_schema(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSTEM_PYTHON, str(root / "scripts" / "gen-role-schema"), *args], capture_output=True, text=True, check=False)


def test_the_safeguards_role_matches_neo_dbs_config_schema() -> None:
    """Issue 17: neo-db's SCHEMA is the one source of the role's config variables (argument_specs, template)."""
    r = gen_role_schema(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("path", "old", "new", "shown"),
    [
        # A range written by hand into argument_specs (README follows it): "1 to 10" -> "1 to 20".
        ("roles/neo_safeguards/meta/argument_specs.yml", "target (1 to 10).", "target (1 to 20).", "+        description: Delivery"),
        (
            "roles/neo_safeguards/meta/argument_specs.yml",
            "choices: [phases, snapshots]",
            "choices: [phases]",
            "+        choices: [phases, snapshots]",
        ),
        ("roles/neo_safeguards/meta/argument_specs.yml", "        type: int\n", "        type: str\n", "+        type: int"),
        ("roles/neo_safeguards/templates/etc/neo/db_safeguards.yml.j2", "_days | int |", "_days |", "+  backup_retention_days:"),
        ("roles/neo_safeguards/defaults/main.yml", "notify_retries: 3", "notify_retries: 4", "schema's default for notify_retries is 3"),
        # The schema changes and the role has not been regenerated.
        ("scripts/neo_db/config.py", 'per notifier target", 3, 1, 10)', 'per notifier target", 3, 1, 20)', "target (1 to 20)."),
    ],
    ids=["range", "choices", "type", "template", "default", "schema"],
)
def test_the_schema_check_fails_on_a_difference(tmp_path: Path, path: str, old: str, new: str, shown: str) -> None:
    """A copy of the sources gen-role-schema reads: unchanged it passes, with one hand edit it fails and shows it."""
    for part in ("scripts/gen-role-schema", "scripts/readme-vars", "scripts/neo_db", "roles/neo_safeguards", "README.md"):
        src, dest = ROOT / part, tmp_path / part
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() else shutil.copy(src, dest)
    r = gen_role_schema(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr  # positive control: the copy matches
    text = (tmp_path / path).read_text()
    assert old in text, old
    (tmp_path / path).write_text(text.replace(old, new, 1))
    r = gen_role_schema(tmp_path)
    assert r.returncode == 1 and shown in r.stdout and "run scripts/gen-role-schema --write" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_specified_and_every_spec_has_a_default_or_is_derived(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options), f"{role.name}: defaults and argument_specs differ"
    assert all(name.startswith(f"{role.name}_") for name in defaults), f"{role.name}: every variable carries the role prefix"


@pytest.mark.parametrize("template", sorted(ROOT.glob("roles/*/templates/**/*.j2")), ids=lambda p: p.name)
def test_templates_start_with_ansible_managed(template: Path) -> None:
    assert template.read_text().startswith("{{ ansible_managed | comment }}")


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().split("## ")[0]
    assert "make demo" in head and "make test" in head
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_installed_package_zip_is_reproducible_and_runs(tmp_path: Path) -> None:
    build = ROOT / "scripts" / "build-pyz"
    subprocess.run([SYSTEM_PYTHON, str(build), str(tmp_path / "a" / "neo_db.pyz")], check=True, capture_output=True)
    subprocess.run([SYSTEM_PYTHON, str(build), str(tmp_path / "b" / "neo_db.pyz")], check=True, capture_output=True)
    assert (tmp_path / "a" / "neo_db.pyz").read_bytes() == (tmp_path / "b" / "neo_db.pyz").read_bytes()
    # The launcher the role installs (its own files/neo-db) runs the zip beside it.
    launcher = tmp_path / "a" / "neo-db"
    launcher.write_bytes((ROOT / "roles" / "neo_safeguards" / "files" / "neo-db").read_bytes())
    launcher.chmod(0o755)
    out = subprocess.run([str(launcher), "--version"], check=True, capture_output=True, text=True).stdout
    assert out.startswith("neo-db ")
    assert not (tmp_path / "a" / "neo_db").exists(), "the launcher ran the package from the zip"
    # The zip runs by itself too: the role's controller-side check (python3 -I neo_db.pyz --version).
    out = subprocess.run([SYSTEM_PYTHON, "-I", str(tmp_path / "b" / "neo_db.pyz"), "--version"], check=True, capture_output=True, text=True)
    assert out.stdout.startswith("neo-db ")
    # Without its zip the launcher says what is missing and how to get it back, with no traceback.
    (tmp_path / "a" / "neo_db.pyz").unlink()
    r = subprocess.run([str(launcher), "--version"], capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "neo_db.pyz is missing: rerun site.yml" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # A truncated, empty or foreign zip beside it (a full disk, a hand copy): named, with the same fix, no traceback.
    good = (tmp_path / "b" / "neo_db.pyz").read_bytes()
    for broken in (good[: len(good) // 2], b"", b"not a zip\n"):
        (tmp_path / "a" / "neo_db.pyz").write_bytes(broken)
        r = subprocess.run([str(launcher), "--version"], capture_output=True, text=True, check=False)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        named = f"neo-db: {tmp_path / 'a' / 'neo_db.pyz'} is not a neo_db.pyz that runs"
        assert named in r.stderr and "rerun site.yml" in r.stderr, r.stderr


def test_concurrent_builds_of_one_pyz_never_share_a_temp_file(tmp_path: Path) -> None:
    """Two site.yml runs from one checkout build the same .cache/neo_db.pyz at once: each build writes its own
    temp file. The old fixed OUT.tmp was truncated by one build while another renamed it into place (a short
    pyz for a moment, then FileNotFoundError and a traceback from the build whose temp file had gone)."""
    build = ROOT / "scripts" / "build-pyz"
    out = tmp_path / "cache" / "neo_db.pyz"
    out.parent.mkdir()
    # Another build's temp file under the old fixed name is left alone (not truncated, not renamed over OUT).
    other = tmp_path / "cache" / "neo_db.tmp"
    other.write_bytes(b"another build's half-written zip")
    r = subprocess.run([SYSTEM_PYTHON, "-I", str(build), str(out)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert other.read_bytes() == b"another build's half-written zip"
    good = out.read_bytes()
    assert subprocess.run([SYSTEM_PYTHON, "-I", str(out), "--version"], capture_output=True, text=True, check=True).stdout.startswith(
        "neo-db "
    )
    assert out.stat().st_mode & 0o777 == 0o644
    # Builds racing on a fresh OUT: every one succeeds, no traceback, and OUT ends whole with no temp left.
    other.unlink()
    for _ in range(3):
        out.unlink()
        procs = [
            subprocess.Popen([SYSTEM_PYTHON, "-I", str(build), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(8)
        ]
        results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
        for p in procs:
            for stream in (p.stdout, p.stderr):
                if stream:
                    stream.close()
        assert all(rc == 0 and "Traceback" not in err for rc, err in results), results
        assert out.read_bytes() == good
        assert sorted(p.name for p in out.parent.iterdir()) == ["neo_db.pyz"]


def test_build_pyz_that_cannot_write_names_the_file_without_a_traceback(tmp_path: Path) -> None:
    """A checkout whose .cache is not a directory (a file, a dangling symlink): the build names OUT and the fix."""
    build = ROOT / "scripts" / "build-pyz"
    (tmp_path / "cache").write_text("not a directory")
    r = subprocess.run(
        [SYSTEM_PYTHON, "-I", str(build), str(tmp_path / "cache" / "neo_db.pyz")], capture_output=True, text=True, check=False
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"cannot write {tmp_path / 'cache' / 'neo_db.pyz'}" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # Positive control: the same build into a directory works.
    (tmp_path / "cache").unlink()
    r = subprocess.run(
        [SYSTEM_PYTHON, "-I", str(build), str(tmp_path / "cache" / "neo_db.pyz")], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0 and "built " in r.stdout, r.stdout + r.stderr


# A role reaches for nothing outside itself (issue 17): what it installs comes in through its variables
# (neo_safeguards_pyz, neo_engine_demo_src), set by group_vars/all.yml. The one known exception: the
# converge stamp's digest template, which every stamped role renders from the project's library/.
_OUT_OF_ROLE = re.compile(r"\.\./|/\.\.(?![.\w])")  # ../ or a path ending in /..
_STAMP_TEMPLATE = "role_path ~ '/../../library/neo_stamp_digest.j2'"


def out_of_role_references(roles: Path) -> list[str]:
    found = []
    for path in sorted(p for p in roles.rglob("*") if p.is_file()):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if _OUT_OF_ROLE.search(line.replace(_STAMP_TEMPLATE, "")):
                found.append(f"{path.relative_to(roles.parent)}:{number}: {line.strip()}")
    return found


def test_no_role_reaches_out_of_itself(tmp_path: Path) -> None:
    assert not out_of_role_references(ROOT / "roles"), "\n".join(out_of_role_references(ROOT / "roles"))
    # Positive control: the old ways out of a role are each found.
    role = tmp_path / "roles" / "r"
    (role / "defaults").mkdir(parents=True)
    (role / "defaults" / "main.yml").write_text(
        'r_code_dir: "{{ role_path }}/../../scripts"\n'
        "r_src: \"{{ role_path ~ '/../../scripts/neo-db' }}\"\n"
        'r_up: "{{ role_path }}/.."  # ... an ellipsis is no way out\n'
        f"r_ok: \"{{{{ lookup('ansible.builtin.template', {_STAMP_TEMPLATE}) }}}}\"\n"
    )
    assert [f.split(":")[1] for f in out_of_role_references(tmp_path / "roles")] == ["1", "2", "3"]


def test_the_unit_never_restarts_through_any_gate_exit_code() -> None:
    """RestartPreventExitStatus= (the role's list) holds every gate code neo-db can fail closed with."""
    from neo_db import errors

    role_vars = yaml.safe_load((ROOT / "roles" / "neo_engine" / "vars" / "main.yml").read_text())
    assert sorted(role_vars["_neo_engine_gate_exit_codes"]) == sorted(errors.GATE_EXIT_CODES)


def test_molecule_converges_the_production_inventorys_host_variables() -> None:
    """The molecule host neo-vps-prod-molecule stands for inventory/hetzner.yml's host: it carries
    every one of its variables (the connection's aside), with the same values, in group neo_vps."""
    inventory = yaml.safe_load((ROOT / "inventory" / "hetzner.yml").read_text())
    [(name, prod)] = inventory["neo_vps"]["hosts"].items()
    wanted = {k: v for k, v in prod.items() if not k.startswith("ansible_")}
    assert wanted, f"{name} in inventory/hetzner.yml has no variables to converge"
    scenario = yaml.safe_load((ROOT / "molecule" / "default" / "molecule.yml").read_text())
    platforms = {p["name"]: p for p in scenario["platforms"]}
    assert "neo-vps-prod-molecule" in platforms, "no molecule platform converges the production inventory"
    assert platforms["neo-vps-prod-molecule"]["groups"] == ["neo_vps"]
    host_vars = scenario["provisioner"]["inventory"]["host_vars"]["neo-vps-prod-molecule"]
    assert {k: host_vars.get(k) for k in wanted} == wanted


def test_no_tracked_symlink_points_outside_the_repository() -> None:
    """A worktree's shared-venv link (.venv -> /work/main/.venv) was committed once: .gitignore's
    '.venv/' matches a directory only, not a link. Every clone got a dangling .venv."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s"], capture_output=True, text=True, check=True).stdout
    links = [line.split("\t", 1)[1] for line in listed.splitlines() if line.startswith("120000 ")]
    assert links, "positive control: the repository does track a symlink (ansible/group_vars)"
    outside = [f"{name} -> {(ROOT / name).readlink()}" for name in links if not (ROOT / name).resolve().is_relative_to(ROOT.resolve())]
    assert not outside, f"tracked symlinks pointing outside the repository: {outside}"
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "-q", ".venv"], check=False)
    assert ignored.returncode == 0, ".venv (a directory or a link to a shared one) must be ignored"


def test_make_pythons_fails_when_an_interpreter_is_missing(tmp_path: Path) -> None:
    """neo-db must run on Python 3.10-3.13: a `make pythons` that finds none of them but the distro's
    must not pass `make test` by printing MISSING. PYTHONS_ALLOW_MISSING=1 says so on purpose."""
    env = {
        "PATH": "/usr/bin:/bin",  # no pyenv shims, no python3.1x but the distro's
        "HOME": str(tmp_path),  # no ~/.pyenv/versions
        "VENV": str(Path(sys.executable).parent.parent),
    }
    missing = subprocess.run(["bash", str(ROOT / "tests" / "pythons.sh")], env=env, capture_output=True, text=True, check=False)
    assert "MISSING" in missing.stdout, missing.stdout + missing.stderr
    assert missing.returncode != 0, f"make pythons passed with interpreters missing:\n{missing.stdout}"
    # positive control: the same run, missing interpreters allowed on purpose, passes and still names them
    allowed = subprocess.run(
        ["bash", str(ROOT / "tests" / "pythons.sh")], env={**env, "PYTHONS_ALLOW_MISSING": "1"}, capture_output=True, text=True, check=False
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "MISSING" in allowed.stdout


def _conditionals(node: object, found: list[object]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("that", "when", "failed_when", "changed_when", "until"):
                found.extend(value if isinstance(value, list) else [value])
            else:
                _conditionals(value, found)
    elif isinstance(node, list):
        for item in node:
            _conditionals(item, found)


def test_every_conditional_in_the_playbooks_is_a_string() -> None:
    """A bare `- x is search('a: b')` is a YAML mapping, not a string: ansible-core 2.19 fails the task
    with "Conditional expressions must be strings", and only when it runs (twice in molecule verify)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "*.yml", "*.yaml"], capture_output=True, text=True, check=True)
    files = listed.stdout.split()
    checked, bad = 0, []
    for name in files:
        found: list[object] = []
        _conditionals(yaml.safe_load((ROOT / name).read_text()), found)
        checked += len(found)
        bad += [f"{name}: {item!r}" for item in found if not isinstance(item, (str, bool))]
    assert checked > 100, f"positive control: the playbooks' conditionals were found ({checked})"
    assert not bad, "conditionals that YAML reads as mappings (quote them):\n" + "\n".join(bad)


_INLINE_MODULES = {"ansible.builtin.shell", "shell", "ansible.builtin.command", "command", "ansible.builtin.raw", "raw"}


def _inline_scripts(text: str, name: str) -> list[str]:
    """Issue 17: the shell/command strings (or argv elements) of 4 or more source lines, and any
    `python3 -c`, in a playbook's text; such code belongs in a script under tests/molecule/."""
    found: list[str] = []

    def scalars(node: yaml.Node) -> list[yaml.ScalarNode]:
        if isinstance(node, yaml.ScalarNode):
            return [node]
        if isinstance(node, yaml.SequenceNode):
            return [s for item in node.value for s in scalars(item)]
        if isinstance(node, yaml.MappingNode):
            return [s for k, v in node.value if k.value in ("cmd", "argv", "_raw_params") for s in scalars(v)]
        return []

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value in _INLINE_MODULES:
                    parts = scalars(value)
                    words = [p.value.strip() for p in parts]
                    for part in parts:
                        source = text[part.start_mark.index : part.end_mark.index].splitlines()
                        if part.style in ("|", ">"):
                            source = source[1:]  # the block's header line, `|` or `>-`
                        lines = len([line for line in source if line.strip()])
                        if lines >= 4 or "python3 -c" in part.value:
                            found.append(f"{name}:{part.start_mark.line + 1}: {key.value} of {lines} lines")
                    if any(w.split("/")[-1].startswith("python3") and nxt == "-c" for w, nxt in itertools.pairwise(words)):
                        found.append(f"{name}:{value.start_mark.line + 1}: {key.value} argv runs python3 -c")
                walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    walk(yaml.compose(text))
    return found


_SYNTHETIC_TASKS = """\
- name: a shell block of four lines
  ansible.builtin.shell: |
    set -eu
    one
    two
    three
- name: a folded command of four lines
  ansible.builtin.command: >-
    one
    two
    three
    four
- name: argv python3 -c
  ansible.builtin.command:
    argv: [python3, -c, "print(1)"]
- name: a one-line python3 -c
  ansible.builtin.shell: neo-db confirm --json | python3 -c 'import sys'
- name: three lines are allowed
  ansible.builtin.shell: |
    one
    two
    three
- name: a script is fine
  ansible.builtin.script: tests/molecule/x.sh
"""


def test_molecule_yaml_holds_no_inline_shell_or_python() -> None:
    """Issue 17: molecule's YAML runs scripts from tests/molecule/, it holds no shell/command string of
    4 or more lines and no `python3 -c`. Positive control: a synthetic task file is flagged."""
    flagged = _inline_scripts(_SYNTHETIC_TASKS, "synthetic.yml")
    assert [f.split(":")[1] for f in flagged] == ["2", "8", "15", "17"], flagged
    files = sorted((ROOT / "molecule").rglob("*.yml"))
    assert len(files) > 10, f"positive control: molecule's YAML was found ({len(files)} files)"
    bad = [f for path in files for f in _inline_scripts(path.read_text(), str(path.relative_to(ROOT)))]
    assert not bad, "inline code in molecule's YAML (move it to a script under tests/molecule/):\n" + "\n".join(bad)


def test_site_yml_builds_the_pyz_in_process_with_build_pyz_s_own_bytes(tmp_path: Path) -> None:
    """site.yml's first play builds the pyz with action_plugins/neo_build_pyz.py (issue 18: no module started
    for it): the same bytes as scripts/build-pyz, an unchanged build leaves OUT alone, and a .cache that is not
    a directory is named with the fix, never a traceback."""
    play = tmp_path / "build.yml"
    out = tmp_path / "cache" / "neo_db.pyz"
    task = {"neo_build_pyz": {"script": str(ROOT / "scripts" / "build-pyz"), "dest": str(out)}, "register": "r"}
    play.write_text(
        yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [task, {"ansible.builtin.debug": {"var": "r"}}]}])
    )
    env = {**os.environ, "ANSIBLE_ACTION_PLUGINS": str(ROOT / "action_plugins"), "ANSIBLE_NOCOLOR": "1"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(play)], capture_output=True, text=True, env=env, check=False
        )

    (tmp_path / "cache").write_text("not a directory")
    r = run()
    assert r.returncode != 0 and f"build-pyz: cannot write {out}" in r.stdout and "writable directory" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    # Positive control: into a directory it builds, byte for byte what the script builds, and says so.
    (tmp_path / "cache").unlink()
    r = run()
    assert r.returncode == 0 and "built: true" in r.stdout and "changed=0" in r.stdout, r.stdout + r.stderr
    subprocess.run(
        [SYSTEM_PYTHON, "-I", str(ROOT / "scripts" / "build-pyz"), str(tmp_path / "script.pyz")], check=True, capture_output=True
    )
    assert out.read_bytes() == (tmp_path / "script.pyz").read_bytes()
    before = out.stat()
    r = run()
    assert r.returncode == 0 and "built: false" in r.stdout, r.stdout + r.stderr
    assert (out.stat().st_ino, out.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "an unchanged build leaves OUT alone"
