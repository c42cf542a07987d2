"""Who else has the live DB open.

Two independent looks, because each alone has blind spots:

* ``/proc/*/fd``: every process whose file descriptors we may read (our own
  user's, or all as root) that has the DB, ``-wal`` or ``-shm`` open, with its
  command line.
* SQLite's own locks, probed with ``fcntl(F_GETLK)``: every open SQLite connection
  holds a shared lock on the ``-shm`` "dead man switch" byte, and readers and writers
  of a rollback-journal DB hold locks on the DB's lock bytes. ``F_GETLK`` names the
  holder's PID even for a process whose ``/proc`` entry we cannot read.

The probe only asks; it takes no lock. It must run before this process opens the DB
with SQLite: closing a descriptor drops every POSIX lock the process holds on that file.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import struct
from pathlib import Path

_FLOCK = "hhqqi4x"  # struct flock on Linux x86_64 / aarch64: type, whence, start, len, pid
_SHM_DMS_BYTE = 128  # UNIX_SHM_BASE (120) + SQLITE_SHM_NLOCK (8)
_PENDING_BYTE = 0x40000000  # PENDING, RESERVED and the SHARED range follow it
_DB_LOCK_SPAN = 512 + 2


@dataclasses.dataclass(frozen=True)
class Holder:
    pid: int
    command: str
    path: str
    how: str  # "open file" or "sqlite lock"

    def describe(self) -> str:
        return f"PID {self.pid} ({self.command}) has {self.path} open [{self.how}]"


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        text = raw.replace(b"\x00", b" ").decode("utf-8", "replace").strip()
        if text:
            return text if len(text) <= 160 else text[:157] + "..."
    except OSError:
        pass
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or "?"
    except OSError:
        return "?"


def _identities(paths: list[Path]) -> dict[tuple[int, int], str]:
    ids: dict[tuple[int, int], str] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = str(p)
    return ids


def _scan_proc(ids: dict[tuple[int, int], str]) -> list[Holder]:
    found: list[Holder] = []
    me = os.getpid()
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if pid == me:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or another user's process: the lock probe covers it
        for fd in fds:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in ids:
                found.append(Holder(pid, _command(pid), ids[key], "open file"))
    return found


def _lock_owner(path: Path, start: int, length: int) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        l_type, _, _, _, pid = struct.unpack(_FLOCK, answer)
    except OSError:
        return None
    finally:
        os.close(fd)
    if l_type == fcntl.F_UNLCK or pid == os.getpid():
        return None
    return pid if pid > 0 else -1


def find_holders(db_path: Path) -> list[Holder]:
    """Processes other than this one holding the DB, its -wal or -shm."""
    paths = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"), Path(f"{db_path}-journal")]
    holders = _scan_proc(_identities(paths))
    seen = {h.pid for h in holders}
    for path, start, length in (
        (Path(f"{db_path}-shm"), _SHM_DMS_BYTE, 1),
        (db_path, _PENDING_BYTE, _DB_LOCK_SPAN),
    ):
        if not path.exists():
            continue
        pid = _lock_owner(path, start, length)
        if pid is not None and pid not in seen:
            seen.add(pid)
            command = _command(pid) if pid > 0 else "a process in another PID namespace"
            holders.append(Holder(pid, command, str(path), "sqlite lock"))
    return sorted(holders, key=lambda h: (h.pid, h.path))
