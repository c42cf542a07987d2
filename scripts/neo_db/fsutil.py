"""Crash-safe file operations and filesystem facts.

A crash-safe file is written to a temp name in its final directory, fsynced,
renamed over the final name, and then the directory is fsynced. Temp names start
with ``.tmp-`` so a later run can recognise and remove what an interrupted run
left behind. Nothing here follows a symlink it did not expect.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import math
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"

# Filesystems SQLite's WAL cannot trust: network and userspace filesystems.
# Names as in /proc/self/mountinfo; f_type magic numbers as statfs(2) reports them.
NETWORK_FS_TYPES = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smb3", "smbfs", "ncpfs", "afs", "coda", "9p",
        "ceph", "glusterfs", "lustre", "gpfs", "ocfs2", "gfs2", "beegfs", "davfs",
        "fuse", "fuseblk", "sshfs", "virtiofs",
    }
)  # fmt: skip
NETWORK_FS_MAGIC = {
    0x6969: "nfs",
    0x517B: "smb",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x65735546: "fuse",
    0x01021997: "9p",
    0x00C36400: "ceph",
    0x5346414F: "afs",
    0x0BD00BD0: "lustre",
}
ENV_MOUNTINFO = "NEO_DB_MOUNTINFO"  # test seam: read this file instead of /proc/self/mountinfo


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an OSError that names no file (os.write, os.fsync: ENOSPC, EIO) the path it was about."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with naming(path):
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        with naming(path):
            os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive(path: Path, mode: int = 0o640) -> None:
    """Create an empty file that did not exist, never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    os.close(fd)


def tmp_path_for(final: Path) -> Path:
    return final.with_name(f"{TMP_PREFIX}{final.name}.{os.getpid()}")


def chown_like_parent(path: Path) -> None:
    """Run as root (an operator's command, the playbooks), a file neo-db writes takes the owner
    of its directory, as its neighbours have: the service user, who must read it later (the
    session counter, a backup and its manifest). A root-owned directory keeps root's files."""
    if os.geteuid() == 0:
        parent = os.stat(path.parent)
        os.chown(path, parent.st_uid, parent.st_gid, follow_symlinks=False)


def write_new_file(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Create path (never over anything, never through a symlink), write all of data, fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(final: Path, data: bytes, mode: int = 0o640) -> None:
    tmp = tmp_path_for(final)
    try:
        with naming(final):
            write_new_file(tmp, data, mode)
            chown_like_parent(tmp)
            os.replace(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(final.parent)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(doc: Any, indent: int | None = 2) -> str:
    """The one way neo-db writes JSON (files and --json output). NaN and Infinity are not JSON
    (strict parsers reject them); one read back from a damaged file is written as null."""
    return json.dumps(_finite(doc), indent=indent, sort_keys=True, allow_nan=False)


def write_json_atomic(final: Path, doc: Any, mode: int = 0o640) -> None:
    write_bytes_atomic(final, (to_json(doc) + "\n").encode("utf-8"), mode)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def remove_quietly(path: Path) -> None:
    """Remove a file or directory tree; a path that is not there is fine (even where the
    filesystem answers EROFS or ENOTDIR rather than ENOENT for it)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        if os.path.lexists(path):
            raise


def sha256_file(path: Path, bufsize: int = 4 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(bufsize)
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def copy_raw(src: Path, dst: Path) -> int:
    """Byte-for-byte copy of src to a new file dst (never following a symlink at dst); returns bytes copied."""
    fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    total = 0
    try:
        with open(src, "rb", buffering=0) as fin:
            while True:
                with naming(src):
                    chunk = fin.read(4 << 20)
                if not chunk:
                    break
                view = memoryview(chunk)
                with naming(dst):
                    while view:
                        written = os.write(fd_out, view)
                        view = view[written:]
                total += len(chunk)
        with naming(dst):
            os.fsync(fd_out)
    finally:
        os.close(fd_out)
    return total


def ensure_real_dir(path: Path, mode: int = 0o750) -> None:
    """Make sure path is a directory and not a symlink (a planted link must not redirect writes)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.makedirs(path, mode=mode, exist_ok=True)
        return
    if stat.S_ISLNK(st.st_mode):
        raise NotADirectoryError(f"{path} is a symlink; refusing to follow it (replace it with a real directory)")
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{path} exists but is not a directory")


def iter_entries(directory: Path, expected_links: frozenset[str] = frozenset()) -> Iterator[os.DirEntry[str]]:
    """Entries of a directory, skipping symlinks, which are never followed (and reported, unless expected)."""
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.is_symlink():
                    if entry.name not in expected_links:
                        log.warning("ignoring symlink %s (backup dirs hold real files only; remove it)", entry.path)
                    continue
                yield entry
    except FileNotFoundError:
        return


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# ---- filesystem type ----


def _unescape_mount(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_fstype(path: Path, mountinfo: str | None = None) -> tuple[str, str]:
    """(fstype, mount point) of the mount holding path, from /proc/self/mountinfo."""
    source = mountinfo or os.environ.get(ENV_MOUNTINFO) or "/proc/self/mountinfo"
    real = os.path.realpath(path)
    best: tuple[str, str] = ("unknown", "/")
    best_len = -1
    with open(source, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            left, sep, right = line.partition(" - ")
            if not sep:
                continue
            fields = left.split()
            if len(fields) < 5:
                continue
            mnt = _unescape_mount(fields[4])
            fstype = right.split()[0] if right.split() else "unknown"
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            # Later lines win on equal length: they are mounted on top.
            if inside and len(mnt) >= best_len:
                best, best_len = (fstype, mnt), len(mnt)
    return best


class _StatFs(ctypes.Structure):
    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


def statfs_magic(path: Path) -> int | None:
    """f_type from statfs(2), or None where it cannot be read (non-Linux, no libc)."""
    libname = ctypes.util.find_library("c")
    if not libname:
        return None
    try:
        libc = ctypes.CDLL(libname, use_errno=True)
        buf = _StatFs()
        if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
            return None
        return int(buf.f_type) & 0xFFFFFFFF
    except (OSError, AttributeError):
        return None


def network_filesystem(path: Path) -> str | None:
    """The name of the network filesystem holding path, or None if it is local."""
    fstype, mnt = mount_fstype(path)
    base = fstype.split(".")[0]
    if fstype in NETWORK_FS_TYPES or base in NETWORK_FS_TYPES:
        return f"{fstype} (mounted at {mnt})"
    magic = statfs_magic(path)
    if magic is not None and magic in NETWORK_FS_MAGIC:
        return f"{NETWORK_FS_MAGIC[magic]} (statfs f_type 0x{magic:X})"
    return None
