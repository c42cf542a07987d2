"""Who else has the live DB open.

Two independent looks, because each alone has blind spots:

* ``/proc/*/fd``: every process whose file descriptors we may read that has the DB,
  ``-wal``, ``-shm`` or ``-journal`` open, with its command line and user.
* SQLite's own locks, probed with ``fcntl(F_GETLK)``: every open SQLite connection
  holds a shared lock on the ``-shm`` "dead man switch" byte, and readers and writers
  of a rollback-journal DB hold locks on the DB's lock bytes. ``F_GETLK`` names the
  holder's PID even for a process whose ``/proc`` entry we cannot read.

The probe only asks; it takes no lock. It must run before this process opens the DB
with SQLite: closing a descriptor drops every POSIX lock the process holds on that file.

Reading another user's ``/proc/PID/fd`` takes CAP_SYS_PTRACE, so the engine's user
(the hooks run as ``neo``) cannot see a root process that holds the DB without a SQLite
lock (an ``open()``, a ``tail -f``, a backup agent). A scan that could not read every
process therefore asks the privileged scanner: ``neo-db-holders.socket`` (root, group
neo, 0660; ``Accept=yes``) starts ``neo-db holders --serve`` as root for each connection,
with systemd's clean environment, read-only, with only CAP_SYS_PTRACE and
CAP_DAC_READ_SEARCH. It scans the DB its own config names (the client cannot choose a
path), leaves out its client (``SO_PEERCRED``) as a scan leaves out itself, and answers
in JSON. It writes nothing.

Why not ``ExecStartPre=+neo-db …`` in the engine's unit: systemd applies the unit's
``EnvironmentFile=`` (``state/session.env``, written by ``neo``) to ``+`` commands too, so
an ``LD_PRELOAD=`` line in it would run ``neo``'s code as root at the next start.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import stat
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import sqlitedb
from .errors import NeoDbError, UsageError

_FLOCK = "hhqqi4x"  # struct flock on Linux x86_64 / aarch64: type, whence, start, len, pid
_SHM_DMS_BYTE = 128  # UNIX_SHM_BASE (120) + SQLITE_SHM_NLOCK (8)
_PENDING_BYTE = 0x40000000  # PENDING, RESERVED and the SHARED range follow it
_DB_LOCK_SPAN = 512 + 2

ENV_SOCKET = "NEO_DB_HOLDERS_SOCKET"  # where the privileged scanner listens (the role sets it)
DEFAULT_SOCKET = "/run/neo-db-holders.sock"
ASK_TIMEOUT_SECONDS = 60.0
_ANSWER_LIMIT = 4 << 20
SCANNER_HINT = (
    "see 'journalctl -u neo-db-holders.socket -u \"neo-db-holders@*\"' and 'systemctl status neo-db-holders.socket'; "
    "the gate does not pass while it cannot see every process"
)


@dataclasses.dataclass(frozen=True)
class Holder:
    pid: int
    command: str
    path: str
    how: str  # "open file" or "sqlite lock"
    user: str = "?"

    def describe(self) -> str:
        return f"PID {self.pid} ({self.command}) of user {self.user} has {self.path} open [{self.how}]"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Scan:
    holders: list[Holder]
    uninspected: list[int]  # PIDs whose open files this scan could not read (other users' processes)
    by: str  # who looked
    note: str = ""  # why some processes stayed uninspected

    @property
    def complete(self) -> bool:
        return not self.uninspected

    def as_dict(self, db_path: Path) -> dict[str, Any]:
        return {
            "db_path": str(db_path),
            "holders": [h.as_dict() for h in self.holders],
            "uninspected": self.uninspected,
            "complete": self.complete,
            "inspected_by": self.by,
            "note": self.note,
        }


class ScannerFailed(NeoDbError):
    """The privileged scanner is there but gave no usable answer: the gate cannot vouch."""


class _ScannerAbsent(Exception):
    """No privileged scanner for this caller: the scan stays what this process could see."""


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


def _user(pid: int) -> str:
    """The process's effective user, from /proc/PID/status (readable for every process)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return sqlitedb.user_name(int(line.split()[2]))
    except (OSError, ValueError, IndexError):
        pass
    return "?"


def _identities(paths: list[Path]) -> dict[tuple[int, int], str]:
    ids: dict[tuple[int, int], str] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except PermissionError as exc:
            # Not knowing the files' identities would make "no holder" a guess.
            raise NeoDbError(
                f"cannot look at {p}: {exc.strerror}: holders cannot be identified", hint="run as the DB's owner or as root"
            ) from None
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = str(p)
    return ids


def _scan_proc(ids: dict[tuple[int, int], str], exclude: set[int]) -> tuple[list[Holder], list[int]]:
    found: list[Holder] = []
    uninspected: list[int] = []
    try:
        pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    except OSError:
        return found, uninspected
    for pid in pids:
        if pid in exclude:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            uninspected.append(pid)  # another user's process: the lock probe and the scanner cover it
            continue
        except OSError:
            continue  # gone
        for fd in fds:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in ids:
                found.append(Holder(pid, _command(pid), ids[key], "open file", _user(pid)))
    return found, uninspected


def _lock_owner(path: Path, start: int, length: int) -> int | None:
    try:
        # Non-blocking and not a controlling tty: this may run as root on a path in neo's tree.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        l_type, _, _, _, pid = struct.unpack(_FLOCK, answer)
    except OSError:
        return None
    finally:
        os.close(fd)
    if l_type == fcntl.F_UNLCK:
        return None
    return pid if pid > 0 else -1


def _files(db_path: Path) -> list[Path]:
    return [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"), Path(f"{db_path}-journal")]


def scan(db_path: Path, exclude: Iterable[int] = ()) -> Scan:
    """What this process can see: holders other than itself (and `exclude`), and whom it could not inspect."""
    skip = {os.getpid(), *exclude}
    holders, uninspected = _scan_proc(_identities(_files(db_path)), skip)
    seen = {h.pid for h in holders}
    for path, start, length in (
        (Path(f"{db_path}-shm"), _SHM_DMS_BYTE, 1),
        (db_path, _PENDING_BYTE, _DB_LOCK_SPAN),
    ):
        pid = _lock_owner(path, start, length)
        if pid is not None and pid not in seen and pid not in skip:
            seen.add(pid)
            if pid > 0:
                holders.append(Holder(pid, _command(pid), str(path), "sqlite lock", _user(pid)))
            else:
                holders.append(Holder(pid, "a process in another PID namespace", str(path), "sqlite lock"))
    by = f"uid {os.geteuid()} ({sqlitedb.user_name(os.geteuid())})"
    return Scan(sorted(holders, key=lambda h: (h.pid, h.path)), uninspected, by)


def socket_path() -> str:
    return os.environ.get(ENV_SOCKET) or DEFAULT_SOCKET


def _holder(item: Any) -> Holder:
    if not isinstance(item, dict):
        raise ValueError(f"a holder is not an object: {item!r:.80}")
    pid, command, path, how, user = (item.get(k) for k in ("pid", "command", "path", "how", "user"))
    if not isinstance(pid, int) or not all(isinstance(v, str) for v in (command, path, how, user)):
        raise ValueError(f"a holder has wrong types: {item!r:.200}")
    return Holder(pid, str(command), str(path), str(how), str(user))


def _parse_answer(data: bytes, db_path: Path, where: str) -> Scan:
    doc = json.loads(data.decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("db_path"), str):
        raise ValueError("not a holders answer")
    if Path(doc["db_path"]) != db_path:
        raise _ScannerAbsent(f"the privileged scanner at {where} watches {doc['db_path']}, not {db_path}")
    raw_holders, uninspected = doc.get("holders"), doc.get("uninspected")
    if not isinstance(raw_holders, list) or not isinstance(uninspected, list) or not all(isinstance(p, int) for p in uninspected):
        raise ValueError("holders and uninspected must be lists")
    return Scan([_holder(h) for h in raw_holders], uninspected, f"the privileged scanner at {where} ({doc.get('inspected_by', '?')})")


def _failed(where: str, what: str) -> ScannerFailed:
    return ScannerFailed(f"the privileged holders scanner at {where} {what}", hint=SCANNER_HINT)


def ask(db_path: Path, where: str, timeout: float = ASK_TIMEOUT_SECONDS) -> Scan:
    """The privileged scanner's view. _ScannerAbsent: none for this caller; ScannerFailed: it is broken."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(where)
        except FileNotFoundError:
            raise _ScannerAbsent(f"no privileged scanner at {where}") from None
        except PermissionError:
            raise _ScannerAbsent(f"{where}: permission denied (the scanner answers the service user's group)") from None
        except OSError as exc:
            raise _failed(where, f"does not answer: {exc.strerror or exc}") from None
        data = b""
        try:
            while len(data) <= _ANSWER_LIMIT:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise _failed(where, f"gave no answer within {timeout:.0f}s") from None
        except OSError as exc:
            raise _failed(where, f"broke off its answer: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not data:
        raise _failed(where, "closed without an answer")
    try:
        return _parse_answer(data, db_path, where)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _failed(where, f"gave an unusable answer ({exc})") from None


def inspect(db_path: Path) -> Scan:
    """Every holder this process can find, asking the privileged scanner when it cannot see everyone."""
    local = scan(db_path)
    if local.complete:
        return local
    where = socket_path()
    try:
        remote = ask(db_path, where)
    except _ScannerAbsent as exc:
        local.note = (
            f"{len(local.uninspected)} processes of other users could not be inspected for open files ({exc}); "
            "those holding a SQLite lock are still found"
        )
        return local
    merged = {(h.pid, h.path): h for h in local.holders}
    for h in remote.holders:
        merged.setdefault((h.pid, h.path), h)
    remote.holders = sorted(merged.values(), key=lambda h: (h.pid, h.path))
    # Uninspected only if neither could read it: a scanner short of CAP_SYS_PTRACE (a container)
    # still reads root's processes, and this process reads its own user's.
    remote.uninspected = sorted(set(remote.uninspected) & set(local.uninspected))
    remote.by = f"{local.by}, and {remote.by}"
    if remote.uninspected:
        remote.note = f"{len(remote.uninspected)} processes could not be inspected for open files even by the privileged scanner"
    return remote


def find_holders(db_path: Path) -> list[Holder]:
    """Processes other than this one holding the DB, its -wal, -shm or -journal."""
    return inspect(db_path).holders


def peer_pid(fd: int) -> int:
    """The PID of the process at the other end of the unix socket `fd` (SO_PEERCRED)."""
    dup = os.dup(fd)
    try:
        sock = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        raise UsageError(
            "holders --serve answers one client on the unix socket passed as its stdin "
            "(neo-db-holders@.service, started by neo-db-holders.socket); stdin is not a socket",
            hint="run 'neo-db holders' to scan from a terminal",
        ) from None
    with sock:
        if sock.family != socket.AF_UNIX:
            raise UsageError(f"holders --serve: stdin is a {sock.family.name} socket, not a unix socket")
        cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _, _ = struct.unpack("3i", cred)
    return int(pid)


def serve(db_path: Path, fd: int = 0) -> dict[str, Any]:
    """The scanner's answer to the client on `fd`: a read-only scan that leaves out the client."""
    return scan(db_path, exclude={peer_pid(fd)}).as_dict(db_path)
