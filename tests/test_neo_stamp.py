"""library/neo_stamp.py, run the way Ansible runs it (a JSON args file), on real files in a temp dir."""
# ruff: noqa: S103  (the modes are set on purpose: they are what the stamp must notice)

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "library" / "neo_stamp.py"
NOBODY = 65534


def run(tmp_path: Path, mode: str, check_mode: bool = False, timeout: int = 60, **args: Any) -> dict[str, Any]:
    params = {"mode": mode, "name": "neo_test", "digest": "d" * 64, "stamp_dir": str(tmp_path / "stamps"), **args}
    if check_mode:
        params["_ansible_check_mode"] = True
    args_file = tmp_path / f"args-{mode}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    proc = subprocess.run([sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, timeout=timeout, check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert not result.get("failed"), result
    return result


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Any]:
    """A managed dir, a file in it, a symlinked dir; the args that name them."""
    managed = tmp_path / "managed"
    managed.mkdir(mode=0o750)
    os.chmod(managed, 0o750)
    conf = managed / "app.conf"
    conf.write_text("key = 1\n")
    os.chmod(conf, 0o644)
    (tmp_path / "volume").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "volume")
    return {"paths": [str(managed), str(conf), str(tmp_path / "linked"), str(tmp_path / "absent")]}


def check(tmp_path: Path, tree: dict[str, Any], **over: Any) -> dict[str, Any]:
    result = run(tmp_path, "check", **{**tree, **over})
    assert result["changed"] is False
    return result


def test_record_then_check_is_current_and_record_again_changes_nothing(tmp_path: Path, tree: dict[str, Any]) -> None:
    assert check(tmp_path, tree)["reasons"] == ["no stamp yet"]
    assert run(tmp_path, "record", **tree)["changed"] is True
    stamp = tmp_path / "stamps" / "neo_test.json"
    assert (stamp.stat().st_mode & 0o777, (tmp_path / "stamps").stat().st_mode & 0o777) == (0o600, 0o700)
    result = check(tmp_path, tree)
    assert (result["current"], result["reasons"], result["stamp"]) == (True, [], str(stamp))
    assert run(tmp_path, "record", **tree)["changed"] is False
    # no leftover temp file from the atomic write
    assert sorted(p.name for p in (tmp_path / "stamps").iterdir()) == ["neo_test.json"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: os.chmod(t / "managed", 0o755), "managed: mode 0755, was 0750"),
        (lambda t: (t / "managed" / "app.conf").write_text("key = 2\n"), "app.conf: content changed"),
        (lambda t: os.chown(t / "managed" / "app.conf", NOBODY, -1), f"app.conf: owner uid {NOBODY}, was 0"),
        (lambda t: os.chown(t / "managed" / "app.conf", -1, NOBODY), f"app.conf: group gid {NOBODY}, was 0"),
        (lambda t: (t / "managed" / "app.conf").unlink(), "app.conf: absent, was file"),
        (lambda t: shutil.rmtree(t / "managed"), "managed: absent, was directory"),
        (
            lambda t: ((t / "managed" / "app.conf").unlink(), (t / "managed" / "app.conf").symlink_to("/etc/hostname")),
            "app.conf: symlink, was file",
        ),
        (lambda t: (t / "absent").mkdir(), "absent: directory, was absent"),
        (lambda t: os.chmod(t / "volume", 0o700), "linked (through the symlink): mode 0700, was 0755"),
        (lambda t: ((t / "linked").unlink(), (t / "linked").symlink_to(t / "managed")), "linked: symlink target"),
    ],
    ids=["mode", "content", "owner", "group", "deleted", "dir-deleted", "now-symlink", "appeared", "through-link", "retargeted"],
)
def test_each_drift_is_named_and_not_current(tmp_path: Path, tree: dict[str, Any], change: Any, reason: str) -> None:
    os.chmod(tmp_path / "volume", 0o755)
    run(tmp_path, "record", **tree)
    assert check(tmp_path, tree)["current"] is True  # the positive control, same tree
    change(tmp_path)
    result = check(tmp_path, tree)
    assert result["current"] is False
    assert any(reason in r for r in result["reasons"]), result["reasons"]
    # a new record makes it current again
    run(tmp_path, "record", **tree)
    assert check(tmp_path, tree)["current"] is True


def test_a_different_digest_or_path_list_is_not_current(tmp_path: Path, tree: dict[str, Any]) -> None:
    run(tmp_path, "record", **tree)
    assert check(tmp_path, tree)["current"] is True
    assert check(tmp_path, tree, digest="e" * 64)["reasons"] == ["stamp digest differs: role inputs or code changed"]
    fewer = check(tmp_path, {"paths": tree["paths"][:-1]})
    assert fewer["current"] is False
    assert fewer["reasons"] == ["the role's paths, units, packages or accounts differ from the recorded ones"]


def test_check_mode_records_nothing(tmp_path: Path, tree: dict[str, Any]) -> None:
    result = run(tmp_path, "record", check_mode=True, **tree)
    assert result["changed"] is True
    assert not (tmp_path / "stamps").exists()
    run(tmp_path, "record", **tree)
    before = (tmp_path / "stamps" / "neo_test.json").read_bytes()
    os.chmod(tmp_path / "managed", 0o700)
    assert run(tmp_path, "record", check_mode=True, **tree)["changed"] is True
    assert (tmp_path / "stamps" / "neo_test.json").read_bytes() == before
    assert check(tmp_path, tree)["current"] is False
    # check mode of the check itself: read only, same answer
    os.chmod(tmp_path / "managed", 0o750)
    assert run(tmp_path, "check", check_mode=True, **tree)["current"] is True


def test_invalidate_removes_the_stamp_so_a_failed_converge_leaves_none(tmp_path: Path, tree: dict[str, Any]) -> None:
    """converge.yml's first task: after it, the check is not current until the converge records anew."""
    run(tmp_path, "record", **tree)
    stamp = tmp_path / "stamps" / "neo_test.json"
    assert check(tmp_path, tree)["current"] is True  # the positive control: a recorded stamp holds
    # check mode removes nothing, but says it would
    assert run(tmp_path, "invalidate", check_mode=True)["changed"] is True
    assert stamp.exists() and check(tmp_path, tree)["current"] is True
    assert run(tmp_path, "invalidate")["changed"] is True
    assert not stamp.exists()
    assert check(tmp_path, tree)["reasons"] == ["no stamp yet"]
    # nothing to remove: not changed, and no stamp directory needed
    assert run(tmp_path, "invalidate")["changed"] is False
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run(elsewhere, "invalidate")["changed"] is False
    assert not (elsewhere / "stamps").exists()
    run(tmp_path, "record", **tree)
    assert check(tmp_path, tree)["current"] is True


@pytest.mark.parametrize(
    "content", [b'{"format": 1, "name": "neo_test", "digest": "dd', b"", b"[1, 2]", b'{"format": 1, "snapshot": {"paths": 3}}', b"\xff\xfe"]
)
def test_a_corrupt_stamp_is_not_current_with_a_reason(tmp_path: Path, tree: dict[str, Any], content: bytes) -> None:
    run(tmp_path, "record", **tree)
    stamp = tmp_path / "stamps" / "neo_test.json"
    good = stamp.read_bytes()
    assert check(tmp_path, tree)["current"] is True
    stamp.write_bytes(content)
    result = check(tmp_path, tree)
    assert result["current"] is False
    assert result["reasons"] and all("stamp" in r for r in result["reasons"]), result["reasons"]
    stamp.write_bytes(good)
    assert check(tmp_path, tree)["current"] is True


@pytest.mark.parametrize("spoil", ["fifo", "huge", "directory"])
def test_a_stamp_that_is_no_regular_file_is_not_current_and_never_hangs(tmp_path: Path, tree: dict[str, Any], spoil: str) -> None:
    """A FIFO at the stamp's path hung check and record for good (open() waits for a writer); a huge file was read
    whole into memory. Each is named, check says not current, and the next record replaces it."""
    run(tmp_path, "record", **tree)
    stamp = tmp_path / "stamps" / "neo_test.json"
    assert check(tmp_path, tree)["current"] is True  # positive control
    stamp.unlink()
    if spoil == "fifo":
        os.mkfifo(stamp, 0o600)
    elif spoil == "huge":
        with stamp.open("wb") as handle:
            handle.truncate(1 << 36)  # 64 GiB, sparse
        os.chmod(stamp, 0o600)
    else:
        stamp.mkdir(mode=0o700)
    result = run(tmp_path, "check", timeout=20, **tree)
    assert result["current"] is False
    assert len(result["reasons"]) == 1 and str(stamp) in result["reasons"][0], result["reasons"]
    assert "not a regular file" in result["reasons"][0] or "too large" in result["reasons"][0], result["reasons"]
    if spoil == "directory":
        stamp.rmdir()  # record renames over a file, not a directory: that one is the operator's to remove
    assert run(tmp_path, "record", timeout=20, **tree)["changed"] is True
    assert check(tmp_path, tree)["current"] is True


@pytest.mark.parametrize(
    ("target", "spoil", "fix"),
    [
        ("stamps", lambda p: os.chown(p, NOBODY, -1), "chown root:root"),
        ("stamps", lambda p: os.chmod(p, 0o770), "chmod 0700"),
        ("stamps", lambda p: os.chmod(p, 0o702), "chmod 0700"),
        ("stamps/neo_test.json", lambda p: os.chmod(p, 0o620), "rm "),
        ("stamps/neo_test.json", lambda p: os.chown(p, NOBODY, -1), "rm "),
    ],
)
def test_an_untrusted_stamp_dir_or_file_is_refused(tmp_path: Path, tree: dict[str, Any], target: str, spoil: Any, fix: str) -> None:
    run(tmp_path, "record", **tree)
    assert check(tmp_path, tree)["current"] is True
    spoil(tmp_path / target)
    result = check(tmp_path, tree)
    assert result["current"] is False
    assert len(result["reasons"]) == 1 and "not trusted" in result["reasons"][0] and fix in result["reasons"][0], result
    # a record (the next full converge) puts the directory right and rewrites the file
    run(tmp_path, "record", **tree)
    assert check(tmp_path, tree)["current"] is True


def test_packages_by_dpkg_query(tmp_path: Path, tree: dict[str, Any]) -> None:
    if not shutil.which("dpkg-query"):
        pytest.skip("no dpkg-query here")
    installed = "python3"
    assert subprocess.run(["dpkg-query", "-W", installed], capture_output=True, check=False).returncode == 0
    packages = [installed, "neo-no-such-package"]
    run(tmp_path, "record", packages=packages, **tree)
    assert check(tmp_path, tree, packages=packages)["current"] is True
    stamp = tmp_path / "stamps" / "neo_test.json"
    data = json.loads(stamp.read_text())
    assert data["snapshot"]["packages"] == {installed: "install ok installed", "neo-no-such-package": "not installed"}
    # as if python3 had been removed since the record: the recorded status differs from the box's
    data["snapshot"]["packages"][installed] = "deinstall ok config-files"
    stamp.write_text(json.dumps(data))
    result = check(tmp_path, tree, packages=packages)
    assert result["reasons"] == [f"package {installed}: install ok installed, was deinstall ok config-files"]


def test_units_fail_closed_when_systemctl_cannot_answer(tmp_path: Path, tree: dict[str, Any]) -> None:
    booted = Path("/run/systemd/system").is_dir()
    run(tmp_path, "record", units=["ssh.service"], **tree)
    result = check(tmp_path, tree, units=["ssh.service"])
    if booted:
        assert result["current"] is True, result
        pytest.skip("systemd runs here: fail-closed path not reachable without breaking systemctl")
    assert result["current"] is False
    assert [r for r in result["reasons"] if r.startswith("systemctl unavailable")], result["reasons"]
    # the positive control: the same stamp without units is current
    run(tmp_path, "record", **tree)
    assert check(tmp_path, tree)["current"] is True
    # and with systemctl missing from the PATH altogether
    env_path = os.environ["PATH"]
    try:
        os.environ["PATH"] = str(tmp_path / "empty")
        run(tmp_path, "record", units=["ssh.service"], **tree)
        missing = check(tmp_path, tree, units=["ssh.service"])
    finally:
        os.environ["PATH"] = env_path
    assert missing["reasons"][0].startswith("systemctl unavailable"), missing


def test_users_and_groups_are_part_of_the_stamp(tmp_path: Path, tree: dict[str, Any]) -> None:
    """A deleted user, a changed shell or home, a lost group membership: each is drift, named. The box's
    own accounts are never changed here; the recorded stamp is edited to be the 'before'."""
    import grp
    import pwd

    me = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(me.pw_gid).gr_name
    accounts = {"users": [me.pw_name, "neo-no-such-user"], "groups": [group]}
    run(tmp_path, "record", **tree, **accounts)
    # Positive control: nothing changed since the record.
    assert check(tmp_path, tree, **accounts)["current"] is True
    stamp = tmp_path / "stamps" / "neo_test.json"
    data = json.loads(stamp.read_text())
    recorded = data["snapshot"]["accounts"]
    assert recorded["user neo-no-such-user"] == "absent"
    assert recorded[f"user {me.pw_name}"]["shell"] == me.pw_shell
    assert recorded[f"group {group}"]["gid"] == me.pw_gid
    # As if, since the record: the shell and home were changed, a supplementary group was lost, the
    # user that is absent now had existed, and the group had another member.
    recorded[f"user {me.pw_name}"].update({"shell": "/usr/sbin/nologin-was", "home": "/srv/was", "groups": ["neo-readers"]})
    recorded["user neo-no-such-user"] = {"uid": 990, "gid": 990, "home": "/", "shell": "/bin/sh", "groups": []}
    recorded[f"group {group}"]["members"] = ["neo-was-a-member"]
    stamp.write_text(json.dumps(data))
    reasons = check(tmp_path, tree, **accounts)["reasons"]
    now_groups = sorted(g.gr_name for g in grp.getgrall() if me.pw_name in g.gr_mem)
    now_members = sorted(grp.getgrnam(group).gr_mem)
    assert reasons == [
        f"group {group}: members {now_members}, was ['neo-was-a-member']",
        "user neo-no-such-user: absent, was present",
        f"user {me.pw_name}: groups {now_groups}, was ['neo-readers']",
        f"user {me.pw_name}: home {me.pw_dir}, was /srv/was",
        f"user {me.pw_name}: shell {me.pw_shell}, was /usr/sbin/nologin-was",
    ], reasons
    # A stamp recorded without accounts, checked with them: the lists differ, so a full converge.
    run(tmp_path, "record", **tree)
    assert check(tmp_path, tree, **accounts)["reasons"] == ["the role's paths, units, packages or accounts differ from the recorded ones"]


def test_the_digest_stays_out_of_the_logged_invocation(tmp_path: Path) -> None:
    """The digest hashes inputs that include secrets (the notifier URLs): Ansible logs a module's
    arguments to the journal ("Invoked with") and returns them at -vvv, so the digest is no_log."""
    secret_digest = "5ecre7" * 10
    result = run(tmp_path, "check", digest=secret_digest)
    args = result["invocation"]["module_args"]
    assert args["name"] == "neo_test"  # the positive control: the other arguments are there
    assert secret_digest not in json.dumps(result)
    assert args["digest"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def test_the_module_documents_itself_and_every_option() -> None:
    """ansible-doc reads DOCUMENTATION as YAML: a ': ' in a plain description line made it unparsable (the invalidate
    paragraph), so `ansible-doc -M library neo_stamp` failed. Its options are the module's arguments."""
    ansible_doc = Path(sys.executable).parent / "ansible-doc"
    r = subprocess.run(
        [str(ansible_doc), "-M", str(ROOT / "library"), "-t", "module", "neo_stamp", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
    )
    assert r.returncode == 0 and "ERROR" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)["neo_stamp"]["doc"]
    spec = MODULE.read_text().split("argument_spec={")[1].split("},\n        supports_check_mode")[0]
    assert sorted(doc["options"]) == sorted(re.findall(r'^\s+"(\w+)": \{"type"', spec, re.MULTILINE))
    assert any("invalidate" in line for line in doc["description"])


def test_a_symlinked_stamp_dir_is_refused_and_what_it_points_to_left_alone(tmp_path: Path, tree: dict[str, Any]) -> None:
    """The module makes the stamp dir itself (root, 0700). A symlink put in its place (to a shared dir, /tmp say) was
    followed: check trusted what it pointed to, and record chowned it to root and chmodded it 0700 (a 1777 /tmp would
    lock every user out) before writing the stamp there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    (tmp_path / "stamps").symlink_to(shared)
    (shared / "neo_test.json").write_text("{}")  # not the module's: left alone
    reasons = check(tmp_path, tree)["reasons"]
    assert len(reasons) == 1 and f"stamp directory {tmp_path / 'stamps'} is a symlink" in reasons[0] and "not trusted" in reasons[0], (
        reasons
    )
    assert run(tmp_path, "invalidate")["changed"] is False
    # the next full converge's record replaces the symlink with the module's own directory
    assert run(tmp_path, "record", **tree)["changed"] is True
    assert (shared.stat().st_mode & 0o7777, [p.name for p in shared.iterdir()]) == (0o1777, ["neo_test.json"])
    assert not (tmp_path / "stamps").is_symlink() and (tmp_path / "stamps").stat().st_mode & 0o777 == 0o700
    assert check(tmp_path, tree)["current"] is True  # positive control: the module's own directory


FAKE_SYSTEMCTL = """#!/usr/bin/python3
# `systemctl show --property=... -- UNIT...` as systemd prints it (one block a unit, a blank line
# between), from a JSON file of unit -> properties: systemd does not run here.
import json, os, sys
units = json.load(open(os.environ["NEO_FAKE_UNITS"]))
names = sys.argv[sys.argv.index("--") + 1 :]
print("\\n\\n".join("\\n".join([f"Id={n}"] + [f"{k}={v}" for k, v in units[n].items()]) for n in names))
"""


def test_a_unit_changed_on_disk_without_daemon_reload_is_drift_and_an_enabled_only_units_state_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NeedDaemonReload=yes is drift, named; for an enabled_units unit (the engine, which operators start and
    stop) the active state is not part of the stamp. systemd does not run here: systemctl is a stand-in that
    prints `systemctl show`'s format; the module's parsing and comparison are the real ones."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    state = tmp_path / "units.json"
    loaded = {"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "active", "NeedDaemonReload": "no"}
    units = {"neo-db-prune.timer": dict(loaded), "neo-engine.service": dict(loaded)}
    state.write_text(json.dumps(units))
    args = {"units": ["neo-db-prune.timer"], "enabled_units": ["neo-engine.service"]}
    monkeypatch.setenv("NEO_FAKE_UNITS", str(state))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    run(tmp_path, "record", **args)
    # Positive control: the same answers are current.
    assert run(tmp_path, "check", **args)["current"] is True
    # The engine stopped by an operator: not drift (its enablement only is stamped).
    units["neo-engine.service"]["ActiveState"] = "inactive"
    state.write_text(json.dumps(units))
    assert run(tmp_path, "check", **args)["current"] is True
    # The timer's file changed on disk with no daemon-reload: drift, named.
    units["neo-db-prune.timer"]["NeedDaemonReload"] = "yes"
    state.write_text(json.dumps(units))
    result = run(tmp_path, "check", **args)
    assert result["reasons"] == ["neo-db-prune.timer: changed on disk, systemd has not reloaded it (daemon-reload)"], result
    # The engine disabled by hand: drift, named.
    units["neo-db-prune.timer"]["NeedDaemonReload"] = "no"
    units["neo-engine.service"]["UnitFileState"] = "disabled"
    state.write_text(json.dumps(units))
    assert run(tmp_path, "check", **args)["reasons"] == ["neo-engine.service: is-enabled disabled, was enabled"]
