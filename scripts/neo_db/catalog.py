"""What is in backup_dir: names, phases, manifests.

File names follow the FLAG-023 convention, in the phase's subdirectory::

    pre_session/neo_live_stage1_pre_S053_2026-04-22T19-15-00Z.db   (+ .json manifest)
    post_session/neo_live_stage1_post_S053_2026-04-22T21-16-00Z.db
    abnormal_stop/neo_live_stage1_abnormal_S053_2026-04-22T20-02-11Z.db
    abnormal_stop/neo_live_stage1_abnormal_S053_2026-04-22T20-02-11Z.raw/  (raw db, -wal, -shm, stop.json)
    imported/neo_live_stage1_imported_2026-11-23T10-00-00Z.db   (neo-db import: + a provenance manifest)
    legacy/neo_live_stage1_legacy_2026-04-21T16-52-23Z.db       (neo_live_stage1.db.bak.20260421T165223Z)

In the ``snapshots`` layout (AtoCore), a timed backup is a directory::

    snapshots/2026-04-22T19-15-00Z/db/atocore.db
    snapshots/2026-04-22T19-15-00Z/config/project-registry.json     (extra_files)
    snapshots/2026-04-22T19-15-00Z/backup-metadata.json             (the manifest)

Ages come from the UTC time in the name, so copying a backup keeps its age. A name more
than FUTURE_TOLERANCE ahead of now was made under a clock that ran ahead (or copied in from
one): such a backup is suspect. It is listed and kept, but never counts as the newest of its
phase and never takes a retention slot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

from .config import Config
from .errors import UsageError
from .fsutil import TMP_PREFIX, iter_entries

PHASE_DIRS = {
    "pre": "pre_session",
    "post": "post_session",
    "abnormal": "abnormal_stop",
    "manual": "manual",
    "timed": "snapshots",
    # issue 14: the DB brought onto the box (neo-db import), and the Windows-era FLAG-049 backups.
    "imported": "imported",
    "legacy": "legacy",
}
METADATA = "backup-metadata.json"
# How far ahead of now a backup's name may be before it counts as future-dated (clock skew
# between the one-second names and a clock that NTP nudges is far below this).
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
TS_FORMAT = "%Y-%m-%dT%H-%M-%SZ"
SESSION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}\Z")  # \Z: "$" also matches before a final newline
_NAME_RE = re.compile(
    r"^(?P<stem>.+)_(?P<phase>pre|post|abnormal|manual|imported|legacy)"
    r"(?:_(?P<session>[A-Za-z][A-Za-z0-9-]{0,31}))?"
    r"_(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)\Z"
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# Words that name a phase in backup file names (and restore's quarantine): as a session ID
# they make a name parse as another phase, so the backup
# would be invisible to list, restore, prune and drill. Refused in any case (PRE, Quarantine):
# nothing needs them, and a name that differs from a phase word only in case misleads a reader.
RESERVED_SESSION_IDS = frozenset({*PHASE_DIRS, "quarantine"})


def check_session_id(session: str) -> str:
    shown = session if len(session) <= 40 else session[:37] + "..."
    if not SESSION_RE.match(session):
        raise UsageError(
            f"invalid session ID {shown!r}: expected a letter followed by up to 31 letters, digits or '-' "
            "(e.g. S053); IDs become part of file names"
        )
    if session.lower() in RESERVED_SESSION_IDS:
        raise UsageError(
            f"invalid session ID {shown!r}: it is reserved ({', '.join(sorted(RESERVED_SESSION_IDS))} name backup phases "
            "in file names, in any case), so its backups would be invisible to list, restore, prune and drill; "
            "use an ID such as S053"
        )
    return session


def base_name(stem: str, phase: str, session: str | None, ts: dt.datetime) -> str:
    parts = [stem, phase] + ([session] if session else []) + [ts.strftime(TS_FORMAT)]
    return "_".join(parts)


@dataclasses.dataclass
class Entry:
    """One backup: its .db copy, its .json manifest and (abnormal stops) its .raw directory."""

    phase: str
    session: str | None
    created: dt.datetime
    base: str
    directory: Path
    db: Path | None = None
    manifest_path: Path | None = None
    raw_dir: Path | None = None
    snapshot_dir: Path | None = None
    _manifest: dict[str, Any] | None = dataclasses.field(default=None, repr=False)

    @property
    def manifest(self) -> dict[str, Any] | None:
        if self._manifest is None and self.manifest_path is not None:
            try:
                loaded = json.loads(self.manifest_path.read_text(encoding="utf-8"))
                self._manifest = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self._manifest = {}
        return self._manifest

    @property
    def size(self) -> int:
        total = 0
        if self.snapshot_dir is not None:
            for root, _dirs, names in os.walk(self.snapshot_dir):
                for n in names:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(root, n)).st_size
            return total
        for p in (self.db, self.manifest_path):
            if p is not None:
                with contextlib.suppress(OSError):
                    total += p.stat().st_size
        if self.raw_dir is not None:
            for f in iter_entries(self.raw_dir):
                with contextlib.suppress(OSError):
                    total += f.stat(follow_symlinks=False).st_size
        return total

    @property
    def verified(self) -> bool:
        """The copy passed integrity_check when it was made, and its size still matches the manifest."""
        m = self.manifest
        if self.db is None or not m:
            return False
        try:
            size_ok = self.db.stat().st_size == m.get("size")
        except OSError:
            return False
        return size_ok and m.get("integrity_check") == ["ok"]

    @property
    def status(self) -> str:
        if self.db is None:
            return "raw only" if self.raw_dir else "manifest only"
        if self.manifest_path is None:
            return "no manifest"
        return "verified" if self.verified else "FAILED check"

    def age_seconds(self, now: dt.datetime) -> float:
        return (now - self.created).total_seconds()

    def future_dated(self, now: dt.datetime) -> bool:
        """Named more than FUTURE_TOLERANCE ahead of now: suspect, never the newest of its phase."""
        return self.created - now > FUTURE_TOLERANCE

    def paths(self) -> list[Path]:
        if self.snapshot_dir is not None:
            return [self.snapshot_dir]
        return [p for p in (self.db, self.manifest_path, self.raw_dir) if p is not None]


def phase_dir(cfg: Config, phase: str) -> Path:
    return cfg.backup_dir / PHASE_DIRS[phase]


def parse(name: str) -> tuple[str, str, str | None, dt.datetime] | None:
    m = _NAME_RE.match(name)
    if not m:
        return None
    try:
        ts = dt.datetime.strptime(m["ts"], TS_FORMAT).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None
    return m["stem"], m["phase"], m["session"], ts


def snapshot_entries(cfg: Config) -> list[Entry]:
    """The snapshots layout: snapshots/<timestamp>/ directories holding backup-metadata.json."""
    directory = phase_dir(cfg, "timed")
    found = []
    for item in iter_entries(directory):
        if item.name.startswith(TMP_PREFIX) or not item.is_dir(follow_symlinks=False):
            continue
        try:
            ts = dt.datetime.strptime(item.name, TS_FORMAT).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
        snap = Path(item.path)
        db = snap / "db" / cfg.db_name
        meta = snap / METADATA
        entry = Entry("timed", None, ts, item.name, directory, snapshot_dir=snap)
        if db.is_file() and not db.is_symlink():
            entry.db = db
        if meta.is_file() and not meta.is_symlink():
            entry.manifest_path = meta
        found.append(entry)
    return found


def entries(cfg: Config, phases: list[str] | None = None) -> list[Entry]:
    """Every backup of this DB, oldest first. Temp files and symlinks are not backups."""
    found: dict[tuple[str, str], Entry] = {}
    snapshots: list[Entry] = []
    for phase in phases or list(PHASE_DIRS):
        if phase == "timed":
            snapshots = snapshot_entries(cfg)
            continue
        directory = phase_dir(cfg, phase)
        for item in iter_entries(directory):
            if item.name.startswith(TMP_PREFIX):
                continue
            name = item.name
            kind = None
            for suffix, k in ((".db", "db"), (".json", "manifest"), (".raw", "raw")):
                if name.endswith(suffix):
                    name, kind = name[: -len(suffix)], k
                    break
            if kind is None:
                continue
            parsed = parse(name)
            if parsed is None:
                continue
            stem, file_phase, session, ts = parsed
            if stem != cfg.db_stem or file_phase != phase:
                continue
            if (kind == "raw") != item.is_dir(follow_symlinks=False):
                continue
            entry = found.setdefault((phase, name), Entry(phase, session, ts, name, directory))
            path = Path(item.path)
            if kind == "db":
                entry.db = path
            elif kind == "manifest":
                entry.manifest_path = path
            else:
                entry.raw_dir = path
    return sorted([*found.values(), *snapshots], key=lambda e: (e.created, e.phase, e.base))


def find(cfg: Config, name: str) -> Entry | None:
    """The entry whose .db, .json or base name is `name` (a bare file name, not a path)."""
    for entry in entries(cfg):
        if name in (entry.base, f"{entry.base}.db", f"{entry.base}.json", f"{entry.base}.raw") and (
            entry.snapshot_dir is None or name == entry.base
        ):
            return entry
    return None
