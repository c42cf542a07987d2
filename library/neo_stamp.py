#!/usr/bin/python3
"""The converge stamp: is a role's last full converge still true on the box? (issue 18)

Runs on the box's python3 (3.10-3.13), standard library plus Ansible's module_utils only.
"""

import contextlib
import grp
import hashlib
import json
import os
import pwd
import stat
import tempfile
from collections.abc import Callable
from typing import TypeVar

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: neo_stamp
short_description: Record a role's converged state on the box, or check that it still holds
description:
  - C(mode=check) reads the role's stamp (C(stamp_dir)/NAME.json) and returns C(current=true) only if it
    exists, its digest equals C(digest), and a fresh snapshot of C(paths) (exists, type, owner, group, mode,
    the sha256 of a regular file, a symlink's target and what it points to), C(units) (load, unit-file and
    active state, one systemctl call), C(packages) (dpkg-query status), C(users) (uid, gid, home, shell,
    supplementary groups) and C(groups) (gid, members) equals the recorded one.
    Otherwise C(current=false) and C(reasons) name each difference. It never changes anything.
  - C(mode=record) writes the snapshot and the digest atomically (temp file, fsync, rename, fsync of the
    directory); changed only when the stamp's content changes. In check mode it writes nothing.
  - C(mode=invalidate) removes the stamp (and fsyncs the directory), the first task of a full converge,
    so that a converge which fails part-way leaves no stamp vouching for the state before it. Changed
    when there was a stamp. In check mode it removes nothing.
  - A unit whose file changed on disk since systemd last loaded it (C(NeedDaemonReload=yes)) is drift too.
  - A stamp directory or file not owned by root, or writable by group or others, is not trusted; nor is a stamp
    that is not a regular file (a FIFO is never opened for a read that would wait) or larger than 16 MiB.
    A symlink in the stamp directory's place is not followed (record replaces it with the directory).
options:
  mode: {type: str, choices: [check, record, invalidate], default: check, description: check, record or remove the stamp}
  name: {type: str, required: true, description: the role}
  digest: {type: str, required: true, description: the controller's sha256 of the role's code and inputs}
  paths: {type: list, elements: str, default: [], description: files and directories the role converges}
  units: {type: list, elements: str, default: [], description: systemd units the role enables or starts}
  enabled_units:
    type: list
    elements: str
    default: []
    description: units whose enablement only the role sets (the engine, which operators start and stop)
  packages: {type: list, elements: str, default: [], description: distro packages the role installs}
  users: {type: list, elements: str, default: [], description: accounts the role creates or adopts}
  groups: {type: list, elements: str, default: [], description: groups the role creates or fills}
  stamp_dir: {type: path, default: /var/lib/neo-ops/stamps, description: where the stamps live (root-only)}
"""

RETURN = r"""
current: {type: bool, description: the stamp holds (check mode only)}
reasons: {type: list, elements: str, description: each difference between the stamp and the box}
stamp: {type: str, description: the stamp file}
"""

FORMAT = 1
T = TypeVar("T")
MISSING = "absent"
MAX_STAMP_BYTES = 16 << 20  # a stamp is a few KiB; a bigger file is not one this module wrote


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def describe(path: str, follow: bool) -> dict[str, object]:
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return {"type": MISSING}
    except OSError as exc:
        return {"type": "unreadable", "error": exc.strerror or str(exc)}
    entry: dict[str, object] = {"type": kind(st.st_mode), "uid": st.st_uid, "gid": st.st_gid, "mode": f"{stat.S_IMODE(st.st_mode):04o}"}
    if stat.S_ISREG(st.st_mode):
        try:
            entry["sha256"] = sha256_file(path)
        except OSError as exc:
            entry["sha256"] = f"unreadable: {exc.strerror or exc}"
    elif stat.S_ISLNK(st.st_mode):
        try:
            entry["target"] = os.readlink(path)
        except OSError as exc:  # removed or replaced between the lstat and here
            entry["target"] = f"unreadable: {exc.strerror or exc}"
        # A managed directory may be a symlink to one (a volume): what it points to counts too.
        entry["to"] = describe(path, follow=True)
        entry.pop("mode")  # a symlink's own mode means nothing on Linux
    return entry


def snapshot_paths(paths: list[str]) -> dict[str, object]:
    return {path: describe(path, follow=False) for path in sorted(set(paths))}


def snapshot_units(module: AnsibleModule, units: list[str], enabled_only: list[str] | None = None) -> tuple[dict[str, object], str]:
    """One systemctl call for every unit; ('', reason) when systemctl cannot answer (fail closed).
    For the enabled_only units the active state is left out: someone else starts and stops them."""
    enabled_only = enabled_only or []
    if not units and not enabled_only:
        return {}, ""
    names = sorted(set(units) | set(enabled_only))
    systemctl = module.get_bin_path("systemctl")
    if not systemctl:
        return {}, "systemctl unavailable: not found on the PATH"
    wanted = "--property=Id,LoadState,UnitFileState,ActiveState,NeedDaemonReload"
    rc, out, err = module.run_command([systemctl, "show", wanted, "--", *names])
    blocks = [block for block in out.strip().split("\n\n") if block.strip()] if rc == 0 else []
    if rc != 0 or len(blocks) != len(names):
        why = (err or out).strip().splitlines()
        return {}, f"systemctl unavailable: systemctl show exited {rc}{(': ' + why[0]) if why else ''}"
    result: dict[str, object] = {}
    for name, block in zip(names, blocks, strict=True):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        keys = (
            ("LoadState", "UnitFileState", "NeedDaemonReload")
            if name in enabled_only and name not in units
            else ("LoadState", "UnitFileState", "ActiveState", "NeedDaemonReload")
        )
        result[name] = {key: props.get(key, "") for key in keys}
    return result, ""


def snapshot_packages(module: AnsibleModule, packages: list[str]) -> tuple[dict[str, object], str]:
    if not packages:
        return {}, ""
    names = sorted(set(packages))
    dpkg_query = module.get_bin_path("dpkg-query")
    if not dpkg_query:
        return {}, "dpkg-query unavailable: not found on the PATH"
    # Exit 1 when a name is unknown to dpkg: that package is simply not installed.
    rc, out, err = module.run_command([dpkg_query, "-W", "-f=${Package}\t${Status}\n", "--", *names])
    if rc not in (0, 1):
        return {}, f"dpkg-query unavailable: exited {rc}: {err.strip()}"
    found = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    return {name: found.get(name, "not installed") for name in names}, ""


def lookup(find: Callable[[str], T], name: str) -> T | None:
    """A passwd or group entry through NSS, or None when there is none of that name."""
    try:
        return find(name)
    except KeyError:
        return None


def snapshot_accounts(users: list[str], groups: list[str]) -> dict[str, object]:
    """Each user's uid, gid, home, shell and supplementary groups; each group's gid and members
    (the passwd and group databases through NSS, as the role's own tasks see them)."""
    every_group = grp.getgrall() if users else []
    accounts: dict[str, object] = {}
    for name in sorted(set(users)):
        pw = lookup(pwd.getpwnam, name)
        accounts[f"user {name}"] = (
            MISSING
            if pw is None
            else {
                "uid": pw.pw_uid,
                "gid": pw.pw_gid,
                "home": pw.pw_dir,
                "shell": pw.pw_shell,
                "groups": sorted(g.gr_name for g in every_group if name in g.gr_mem),
            }
        )
    for name in sorted(set(groups)):
        gr = lookup(grp.getgrnam, name)
        accounts[f"group {name}"] = MISSING if gr is None else {"gid": gr.gr_gid, "members": sorted(gr.gr_mem)}
    return accounts


def take_snapshot(module: AnsibleModule) -> tuple[dict[str, object], list[str]]:
    params = module.params
    units, units_error = snapshot_units(module, params["units"], params["enabled_units"])
    packages, packages_error = snapshot_packages(module, params["packages"])
    snap = {"paths": snapshot_paths(params["paths"]), "units": units, "packages": packages}
    if params["users"] or params["groups"]:  # absent otherwise, so the stamps of roles without accounts keep their bytes
        snap["accounts"] = snapshot_accounts(params["users"], params["groups"])
    return snap, [why for why in (units_error, packages_error) if why]


def fmt(entry: object) -> str:
    if not isinstance(entry, dict):
        return str(entry)
    if entry.get("type") == MISSING:
        return "absent"
    return entry.get("type", "?")


def compare_path(path: str, was: dict[str, object], now: dict[str, object]) -> list[str]:
    if was == now:
        return []
    if was.get("type") != now.get("type"):
        return [f"{path}: {fmt(now)}, was {fmt(was)}"]
    reasons = []
    for key, label in (("mode", "mode"), ("uid", "owner uid"), ("gid", "group gid"), ("target", "symlink target")):
        if was.get(key) != now.get(key):
            reasons.append(f"{path}: {label} {now.get(key)}, was {was.get(key)}")
    if was.get("sha256") != now.get("sha256"):
        # No hash in the reason: the file may hold a secret (the notifier URLs), and reasons are logged.
        reasons.append(f"{path}: content changed")
    if was.get("to") != now.get("to"):
        was_to, now_to = was.get("to"), now.get("to")
        if isinstance(was_to, dict) and isinstance(now_to, dict):
            reasons += compare_path(f"{path} (through the symlink)", was_to, now_to)
        else:
            reasons.append(f"{path}: what the symlink points to changed")
    return reasons or [f"{path}: changed"]


def compare(was: dict[str, object], now: dict[str, object]) -> list[str]:
    reasons: list[str] = []
    was_paths, now_paths = was.get("paths", {}), now.get("paths", {})
    was_units, now_units = was.get("units", {}), now.get("units", {})
    was_pkgs, now_pkgs = was.get("packages", {}), now.get("packages", {})
    if not (isinstance(was_paths, dict) and isinstance(was_units, dict) and isinstance(was_pkgs, dict)):
        return ["stamp is malformed (paths, units or packages is not a mapping)"]
    assert isinstance(now_paths, dict) and isinstance(now_units, dict) and isinstance(now_pkgs, dict)
    was_accounts, now_accounts = was.get("accounts", {}), now.get("accounts", {})
    if not isinstance(was_accounts, dict):
        return ["stamp is malformed (accounts is not a mapping)"]
    assert isinstance(now_accounts, dict)
    if (
        sorted(was_paths) != sorted(now_paths)
        or sorted(was_units) != sorted(now_units)
        or sorted(was_pkgs) != sorted(now_pkgs)
        or sorted(was_accounts) != sorted(now_accounts)
    ):
        reasons.append("the role's paths, units, packages or accounts differ from the recorded ones")
    for path in sorted(set(was_paths) & set(now_paths)):
        if not isinstance(was_paths[path], dict):
            reasons.append(f"stamp is malformed at {path}")
            continue
        reasons += compare_path(path, was_paths[path], now_paths[path])
    for unit in sorted(set(was_units) & set(now_units)):
        w, n = was_units[unit], now_units[unit]
        if not isinstance(w, dict):
            reasons.append(f"stamp is malformed at {unit}")
            continue
        for key, label in (("LoadState", "load state"), ("UnitFileState", "is-enabled"), ("ActiveState", "is-active")):
            if w.get(key) != n.get(key):
                reasons.append(f"{unit}: {label} {n.get(key) or '(none)'}, was {w.get(key) or '(none)'}")
        if n.get("NeedDaemonReload") == "yes":  # its file changed on disk since systemd loaded it
            reasons.append(f"{unit}: changed on disk, systemd has not reloaded it (daemon-reload)")
    for package in sorted(set(was_pkgs) & set(now_pkgs)):
        if was_pkgs[package] != now_pkgs[package]:
            reasons.append(f"package {package}: {now_pkgs[package]}, was {was_pkgs[package]}")
    for account in sorted(set(was_accounts) & set(now_accounts)):
        reasons += compare_account(account, was_accounts[account], now_accounts[account])
    return reasons


def compare_account(account: str, was: object, now: object) -> list[str]:
    if was == now:
        return []
    if not isinstance(was, dict) or not isinstance(now, dict):
        return [f"{account}: {'absent' if now == MISSING else 'present'}, was {'absent' if was == MISSING else 'present'}"]
    return [f"{account}: {key} {now.get(key)}, was {was.get(key)}" for key in sorted(set(was) | set(now)) if was.get(key) != now.get(key)]


def untrusted(path: str, st: os.stat_result, what: str) -> str:
    """'' when root owns it (the module's user) and neither group nor others may write; else the reason."""
    problems = []
    if st.st_uid != os.geteuid():
        problems.append(f"owned by uid {st.st_uid}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.append(f"mode {stat.S_IMODE(st.st_mode):04o} lets group or others write")
    if not problems:
        return ""
    fix = f"chown root:root {path} && chmod 0700 {path}" if what == "directory" else f"rm {path} (the next converge rewrites it)"
    return f"stamp {what} {path} is {' and '.join(problems)}: not trusted; fix: {fix}, or rerun with -e neo_converge_force=true"


def read_stamp(stamp_dir: str, stamp_path: str) -> tuple[dict[str, object] | None, str]:
    try:
        dir_st = os.lstat(stamp_dir)
    except FileNotFoundError:
        return None, "no stamp yet"
    if not stat.S_ISDIR(dir_st.st_mode):  # the module makes it a directory: a symlink put there is not followed
        return None, (
            f"stamp directory {stamp_dir} is a {kind(dir_st.st_mode)}, not the directory this module makes: not trusted; "
            "the next full converge replaces it (a symlink: what it points to is left alone)"
        )
    why = untrusted(stamp_dir, dir_st, "directory")
    if why:
        return None, why
    try:
        # O_NONBLOCK: a FIFO put there must not hang the run waiting for a writer (regular files ignore it)
        fd = os.open(stamp_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, "no stamp yet"
    except OSError as exc:
        return None, f"stamp {stamp_path} cannot be read ({exc.strerror or exc}): rerun with -e neo_converge_force=true"
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        what = "a FIFO" if stat.S_ISFIFO(st.st_mode) else kind(st.st_mode)
        return None, f"stamp {stamp_path} is not a regular file ({what}): not trusted; fix: remove it (the next converge rewrites it)"
    with os.fdopen(fd, "rb") as handle:
        why = untrusted(stamp_path, st, "file")
        if why:
            return None, why
        if st.st_size > MAX_STAMP_BYTES:
            return (
                None,
                f"stamp {stamp_path} is too large ({st.st_size} bytes): not trusted; fix: rm {stamp_path} (the next converge rewrites it)",
            )
        raw = handle.read(MAX_STAMP_BYTES + 1)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"stamp {stamp_path} is not valid JSON ({exc}): the next full converge rewrites it"
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("snapshot"), dict):
        return None, f"stamp {stamp_path} is of another format: the next full converge rewrites it"
    return data, ""


def render(name: str, digest: str, snap: dict[str, object]) -> bytes:
    body = {"format": FORMAT, "name": name, "digest": digest, "snapshot": snap}
    return (json.dumps(body, sort_keys=True, indent=1) + "\n").encode("utf-8")


def fsync_dir(path: str) -> None:
    """Make a rename or an unlink in `path` durable (a power cut after it keeps it)."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomically(module: AnsibleModule, stamp_dir: str, stamp_path: str, content: bytes) -> None:
    # A symlink in the directory's place is replaced, never followed: the chown and chmod below would
    # otherwise land on what it points to (a shared /tmp made 0700).
    if os.path.islink(stamp_dir):
        os.unlink(stamp_dir)
    os.makedirs(stamp_dir, mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(stamp_dir, 0, 0)
    os.chmod(stamp_dir, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".stamp-", dir=stamp_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, stamp_path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        module.fail_json(msg=f"could not write the stamp {stamp_path}: {exc.strerror or exc}", stamp=stamp_path)
    fsync_dir(stamp_dir)


def remove_stamp(module: AnsibleModule, stamp_dir: str, stamp_path: str) -> bool:
    """Remove the stamp before a full converge; True when there was one. Not in check mode."""
    if os.path.islink(stamp_dir) or not os.path.lexists(stamp_path):
        return False  # a symlinked stamp dir is never trusted (read_stamp), and what it points to is not the module's
    if module.check_mode:
        return True
    try:
        os.unlink(stamp_path)
        fsync_dir(stamp_dir)
    except OSError as exc:
        module.fail_json(msg=f"could not remove the stamp {stamp_path}: {exc.strerror or exc}; remove it by hand", stamp=stamp_path)
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "mode": {"type": "str", "choices": ["check", "record", "invalidate"], "default": "check"},
            "name": {"type": "str", "required": True},
            # a hash over inputs that include secrets (the notifier URLs): kept out of the journal's "Invoked with"
            "digest": {"type": "str", "required": True, "no_log": True},
            "paths": {"type": "list", "elements": "str", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
            "packages": {"type": "list", "elements": "str", "default": []},
            "enabled_units": {"type": "list", "elements": "str", "default": []},
            "users": {"type": "list", "elements": "str", "default": []},
            "groups": {"type": "list", "elements": "str", "default": []},
            "stamp_dir": {"type": "path", "default": "/var/lib/neo-ops/stamps"},
        },
        supports_check_mode=True,
    )
    params = module.params
    name = params["name"]
    if not name or "/" in name or name.startswith("."):
        module.fail_json(msg=f"name {name!r} must be a plain role name (no '/', not starting with '.')")
    stamp_dir = params["stamp_dir"]
    stamp_path = os.path.join(stamp_dir, name + ".json")
    if params["mode"] == "invalidate":
        module.exit_json(changed=remove_stamp(module, stamp_dir, stamp_path), stamp=stamp_path)
    snap, unavailable = take_snapshot(module)

    if params["mode"] == "record":
        content = render(name, params["digest"], snap)
        # Changed when the content differs, or when the stamp there is not to be trusted (rewritten).
        # (read_stamp, not a plain open: a FIFO there would hang the run, a huge file fill the memory)
        previous, _ = read_stamp(stamp_dir, stamp_path)
        changed = previous is None or previous != json.loads(content)
        if changed and not module.check_mode:
            write_atomically(module, stamp_dir, stamp_path, content)
        module.exit_json(changed=changed, stamp=stamp_path, reasons=unavailable)

    stamp, why = read_stamp(stamp_dir, stamp_path)
    reasons = list(unavailable)
    if stamp is None:
        reasons.insert(0, why)
    else:
        if stamp.get("digest") != params["digest"]:
            reasons.append("stamp digest differs: role inputs or code changed")
        recorded = stamp["snapshot"]
        assert isinstance(recorded, dict)
        reasons += compare(recorded, snap)
    module.exit_json(changed=False, current=not reasons, reasons=reasons, stamp=stamp_path)


if __name__ == "__main__":
    main()
