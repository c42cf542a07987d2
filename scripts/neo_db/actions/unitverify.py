"""`neo-db unit-verify`: Ansible's `validate:` for systemd unit files and drop-ins.

Ansible hands `validate` a temp file with a random name, but systemd needs the unit's
real name (its suffix says what it is) and a drop-in needs its unit. So the candidate
is laid out in a temp dir under its real name and checked with `systemd-analyze verify`,
which only warns on unknown keys: here every such warning fails the check.

Only the candidate's own lines count: systemd-analyze also loads the units the candidate
names (Wants=, After=, a socket's service) and prints their warnings, which are not the
candidate's to fix; they are counted in a notice. With `allow_absent_engine`, ExecStart's
program being absent ("not executable: No such file or directory") is a notice too: a
production host is provisioned before its engine is installed, and the session gate
(`session-start`) and `confirm` refuse while it is still missing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .. import systemd
from ..errors import NeoDbError, UsageError

log = logging.getLogger(__name__)

_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.@-]+\.(service|timer|socket|mount|path|target)\Z")
_BAD = re.compile(r"Unknown (key|section|lvalue)|Failed to parse|Invalid|not executable|Missing|bad-setting", re.IGNORECASE)
# "<file>:<line>: ..." or "<unit>: ...": whom a line of systemd-analyze is about.
_ABOUT = re.compile(r"^(?P<who>[^\s:]+\.(?:service|timer|socket|mount|path|target|slice|scope|conf|automount|swap|device))(?::\d+)?: ")
_ABSENT = re.compile(r": Command (?P<path>\S+) is not executable: No such file or directory$")


@dataclasses.dataclass
class Verdict:
    problems: list[str]  # the candidate's own: each fails the check
    notices: list[str]  # printed, not failing


def _exec_start_programs(root: Path, unit: str) -> set[str]:
    """The programs ExecStart= runs: the unit laid out in root, its drop-ins merged as systemd merges them."""
    return {cmd.path for cmd in systemd.unit_files_view(unit, root).commands.get("ExecStart", [])}


def verify(
    candidate: Path,
    unit_name: str | None,
    drop_in_for: Path | None,
    with_units: Sequence[Path] = (),
    *,
    allow_absent_engine: bool = False,
) -> Verdict:
    """What systemd finds in the candidate file (no problems: it is fine).

    `with_units` are installed unit files laid out beside it, e.g. the service a socket starts."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        raise NeoDbError("systemd-analyze is not installed: unit files cannot be verified on this host")
    if not candidate.is_file():
        raise UsageError(f"{candidate} is not a file")
    with tempfile.TemporaryDirectory(prefix="neo-unit-verify-") as tmp:
        root = Path(tmp)
        for unit in with_units:
            if not unit.is_file():
                raise UsageError(f"--with {unit}: the unit does not exist yet; install it first")
            shutil.copyfile(unit, root / unit.name)
        if drop_in_for is not None:
            if not drop_in_for.is_file():
                raise UsageError(f"--drop-in-for {drop_in_for}: the unit does not exist yet; install it first")
            target = root / drop_in_for.name
            shutil.copyfile(drop_in_for, target)
            (root / f"{drop_in_for.name}.d").mkdir()
            shutil.copyfile(candidate, root / f"{drop_in_for.name}.d" / "candidate.conf")
        else:
            if not unit_name or not _UNIT_NAME.match(unit_name):
                raise UsageError(f"--as {unit_name!r}: give the unit's file name, e.g. neo-engine.service")
            target = root / unit_name
            shutil.copyfile(candidate, target)
        own = {str(target), target.name}
        if drop_in_for is not None:
            own.add(str(root / f"{drop_in_for.name}.d" / "candidate.conf"))
        engine = _exec_start_programs(root, target.name) if allow_absent_engine and target.suffix == ".service" else set()
        proc = subprocess.run([tool, "verify", str(target)], capture_output=True, text=True, check=False)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    others = [ln for ln in lines if (m := _ABOUT.match(ln)) and m.group("who") not in own]
    mine = [ln for ln in lines if ln not in others]
    notices: list[str] = []
    if others:
        notices.append(
            f"{len(others)} line{'s' if len(others) != 1 else ''} about other units ignored (not this unit's to fix): "
            + " | ".join(ln.replace(str(root) + "/", "") for ln in others)
        )
    problems: list[str] = []
    judged = False  # a line of the candidate's own was judged (a problem, or the excused absent engine)
    for ln in mine:
        absent = _ABSENT.search(ln)
        if absent and absent.group("path") in engine and not os.path.lexists(absent.group("path")):
            notices.append(
                f"the engine {absent.group('path')} (ExecStart) is not installed yet: install it before the first session "
                "(session-start and confirm refuse while it is missing)"
            )
            judged = True
        elif _BAD.search(ln):
            problems.append(ln)
            judged = True
    # A failed run with nothing judged: its lines, or its exit status, are the problem (another
    # unit's warnings alone do not make a failure of the candidate).
    if proc.returncode != 0 and not judged and not others:
        problems = mine or [f"systemd-analyze verify exited with {proc.returncode}"]
    return Verdict(problems, notices)
