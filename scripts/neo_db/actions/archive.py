"""`neo-db archive-dir`: a cold archive of a directory (AtoCore's Chroma store), with its record.

The order makes every failure leave no orphan: the archive is written under a temp name in
the destination, fsynced, renamed to its final name and the directory fsynced; only then is
its ``.json`` record written (atomically). A failure before the record removes the temp file
or the archive; a record never exists without its archive. Retention keeps the newest
``--keep`` archives (at least 1: this one) and removes a record before its archive.

The caller stops whatever writes the directory first (ansible/atocore-chroma-snapshot.yml).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import stat
import tarfile
from pathlib import Path
from typing import Any

from .. import catalog, fsutil
from ..errors import NeoDbError, UsageError

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z")


@dataclasses.dataclass
class Result:
    archive: Path
    record: Path
    doc: dict[str, Any]
    removed: list[str]


def _real_dir(path: Path, what: str) -> None:
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}", hint=f"give an existing directory as {what}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{what} {path}: not a real directory (a symlink or a file)", hint=f"give the directory itself as {what}")


def _stamp_of(name: str, prefix: str) -> str | None:
    m = re.fullmatch(rf"{re.escape(prefix)}-(\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}-\d{{2}}-\d{{2}}Z)\.tar\.gz", name)
    return m[1] if m else None


def archive_dir(src: Path, dest: Path, *, keep: int, prefix: str, meta: dict[str, str], now: dt.datetime | None = None) -> Result:
    if keep < 1:
        raise UsageError(
            f"--keep {keep}: at least 1 (this archive); 0 would remove every archive, the new one included",
            hint="give --keep N, the number of newest archives to keep (atocore_chroma_keep)",
        )
    if not NAME_RE.match(prefix):
        raise UsageError(f"--name {prefix!r}: expected lower-case letters, digits and '-', starting with a letter")
    _real_dir(src, "SRC")
    _real_dir(dest, "--dest")
    if Path(os.path.realpath(dest)).is_relative_to(os.path.realpath(src)):
        raise UsageError(f"--dest {dest} lies inside SRC {src}: the archive would hold itself", hint="archive into another directory")
    stamp = (now or catalog.utcnow()).astimezone(dt.timezone.utc).strftime(catalog.TS_FORMAT)
    final = dest / f"{prefix}-{stamp}.tar.gz"
    record = dest / f"{prefix}-{stamp}.json"
    for path in (final, record):
        if os.path.lexists(path):
            raise NeoDbError(f"{path} exists already: not overwritten", hint="wait a second and run it again")
    tmp = fsutil.tmp_path_for(final)
    try:
        fsutil.create_exclusive(tmp)
        with fsutil.naming(tmp), tarfile.open(tmp, "w:gz") as tar:
            tar.add(src, arcname=src.name)
        fsutil.fsync_file(tmp)
        sha256 = fsutil.sha256_file(tmp)
        size = tmp.stat().st_size
        os.rename(tmp, final)
    except BaseException:
        fsutil.remove_quietly(tmp)
        raise
    doc: dict[str, Any] = {
        "timestamp": stamp,
        "source": str(src),
        "archive": final.name,
        "sha256": sha256,
        "size": size,
        **meta,
    }
    try:
        fsutil.fsync_dir(dest)
        fsutil.write_json_atomic(record, doc)
    except BaseException:
        fsutil.remove_quietly(final)  # no half snapshot: an archive without its record is removed too
        raise
    log.info("archived %s as %s (%d bytes, sha256 %s)", src, final, size, sha256)
    return Result(final, record, doc, prune_archives(dest, prefix, keep))


def prune_archives(dest: Path, prefix: str, keep: int) -> list[str]:
    """Keep the newest `keep` archives; remove the others, each record before its archive."""
    stamps = sorted({s for e in fsutil.iter_entries(dest) if (s := _stamp_of(e.name, prefix))}, reverse=True)
    removed = []
    for stamp in stamps[keep:]:
        for path in (dest / f"{prefix}-{stamp}.json", dest / f"{prefix}-{stamp}.tar.gz"):
            if os.path.lexists(path):
                fsutil.remove_quietly(path)
                removed.append(path.name)
                log.info("removed %s (beyond the newest %d)", path, keep)
    if removed:
        fsutil.fsync_dir(dest)
    return removed
