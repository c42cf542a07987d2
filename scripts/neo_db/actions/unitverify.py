"""`neo-db unit-verify`: Ansible's `validate:` for systemd unit files and drop-ins.

Ansible hands `validate` a temp file with a random name, but systemd needs the unit's
real name (its suffix says what it is) and a drop-in needs its unit. So the candidate
is laid out in a temp dir under its real name and checked with `systemd-analyze verify`,
which only warns on unknown keys: here every such warning fails the check.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import NeoDbError, UsageError

log = logging.getLogger(__name__)

_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.@-]+\.(service|timer|socket|mount|path|target)\Z")
_BAD = re.compile(r"Unknown (key|section|lvalue)|Failed to parse|Invalid|not executable|Missing|bad-setting", re.IGNORECASE)


def verify(candidate: Path, unit_name: str | None, drop_in_for: Path | None, with_units: Sequence[Path] = ()) -> list[str]:
    """Problems systemd finds in the candidate file (empty: it is fine).

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
        proc = subprocess.run([tool, "verify", str(target)], capture_output=True, text=True, check=False)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    problems = [ln for ln in lines if _BAD.search(ln)]
    if proc.returncode != 0 and not problems:
        problems = lines or [f"systemd-analyze verify exited with {proc.returncode}"]
    return problems
