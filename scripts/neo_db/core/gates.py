"""The session gates, in order: local filesystem, no other holder, integrity."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from .. import fsutil, holders, sqlitedb
from ..config import Config
from ..errors import (
    DbInUseError,
    DbMissingError,
    GateError,
    HotJournalError,
    IntegrityError,
    NetworkFilesystemError,
    PermissionProblemError,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class GateReport:
    filesystem: str = "not checked"
    access: str = "not checked"
    holders: str = "not checked"
    integrity_check: list[str] = dataclasses.field(default_factory=lambda: ["not run"])
    structure_notes: list[str] = dataclasses.field(default_factory=list)
    db_present: bool = True
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def gate_filesystem(cfg: Config, report: GateReport) -> None:
    where = cfg.db_path if os.path.exists(cfg.db_path) else cfg.db_path.parent
    probe = where
    while not os.path.exists(probe) and probe != probe.parent:
        probe = probe.parent
    remote = fsutil.network_filesystem(probe)
    if remote:
        report.filesystem = f"REFUSED: {remote}"
        raise NetworkFilesystemError(
            f"the DB {cfg.db_path} is on a network filesystem: {remote}. SQLite's WAL is not safe there (the cause of the S49/S50 loss)",
            hint="move the DB to a local disk (ext4/xfs on the VPS's SSD) and point db_path at it",
        )
    fstype, mnt = fsutil.mount_fstype(probe)
    report.filesystem = f"local ({fstype} at {mnt})"


def gate_present(cfg: Config, report: GateReport, allow_missing: bool) -> bool:
    try:
        mode: int | None = os.stat(cfg.db_path).st_mode
    except PermissionError:  # a directory on the way may not be entered: that is not "missing"
        raise access_refusal(cfg, report, sqlitedb.access_problems(cfg.db_path) or [f"{cfg.db_path}: permission denied"]) from None
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is not None and stat.S_ISREG(mode):
        return True
    if mode is not None:
        raise DbMissingError(f"{cfg.db_path} exists but is not a regular file")
    report.db_present = False
    if allow_missing:
        log.info("no DB at %s yet: allowed (first run); the engine will create it", cfg.db_path)
        report.integrity_check = ["skipped: no DB yet (first run)"]
        return False
    raise DbMissingError(
        f"the DB {cfg.db_label} does not exist — session aborted",
        hint="restore the last known-good backup ('neo-db list', then 'neo-db restore NAME'), "
        "or pass --allow-missing for the very first run",
    )


def access_refusal(cfg: Config, report: GateReport, problems: list[str]) -> PermissionProblemError:
    """Exit 8, naming each path and the permission it lacks: not the FLAG-049 message (that sends to restore)."""
    user = sqlitedb.user_name()
    report.access = "REFUSED: " + "; ".join(problems)
    lines = "\n".join(f"  {p}" for p in problems)
    return PermissionProblemError(
        f"neo-db, running as {user}, may not read the live DB {cfg.db_label} as SQLite must — session aborted. "
        f"This is a permission problem, not corruption: the DB was not checked, and a restore would not help:\n{lines}",
        hint=f"give {user} the permission named above, or run neo-db as the engine's user (who owns the DB directory); then start again",
    )


def gate_access(cfg: Config, report: GateReport) -> None:
    """Before anything opens the DB: may this user read it the way SQLite must? (exit 8, not 3)"""
    problems = sqlitedb.access_problems(cfg.db_path)
    if problems:
        raise access_refusal(cfg, report, problems)
    report.access = "ok"


def refusal(cfg: Config, report: GateReport, result: list[str]) -> GateError:
    """The error for a failed integrity_check of the live DB: SQLite's access errors are exit 8, the rest exit 3."""
    report.integrity_check = result
    denied = sqlitedb.access_error(result)
    if denied:
        return access_refusal(cfg, report, [*sqlitedb.access_problems(cfg.db_path), f"{cfg.db_path}: SQLite: {denied}"])
    return IntegrityError(result)


def refuse_holders(found: list[holders.Holder]) -> None:
    """The gate's refusal (exit 5), naming every holder: PID, command, user, file."""
    if found:
        lines = "\n".join(f"  {h.describe()}" for h in found)
        raise DbInUseError(
            f"another process has the live DB open — session aborted (the engine must be the sole writer):\n{lines}",
            hint="stop that process (analysis reads snapshots: 'neo-db snapshot'), then start the session again",
        )


def gate_holders(cfg: Config, report: GateReport) -> None:
    scan = holders.inspect(cfg.db_path)
    if scan.holders:
        report.holders = "; ".join(h.describe() for h in scan.holders)
        refuse_holders(scan.holders)
    if scan.complete:
        report.holders = "none"
    else:
        report.holders = f"none found; {scan.note}"
        log.info("holders: %s", scan.note)


def gate_hot_journal(cfg: Config, report: GateReport) -> None:
    """A hot rollback -journal: recoverable, not corrupt (exit 9), or corrupt once rolled back (exit 3).

    SQLite rolls the journal back on the first read-write open; the gate only opens the live DB
    read-only, which cannot. So it rolls back a copy (in state_dir) and checks that instead."""
    size = sqlitedb.hot_journal_size(cfg.db_path)
    if size is None:
        return
    journal = f"{cfg.db_path}-journal"
    try:
        os.makedirs(cfg.state_dir, mode=0o750, exist_ok=True)  # neo-db's own, beside the DB's filesystem
        with tempfile.TemporaryDirectory(prefix=".neo-db-rollback-", dir=cfg.state_dir) as tmp:
            result, counts = sqlitedb.rolled_back_check(cfg.db_path, Path(tmp), cfg.integrity_max_errors)
    except OSError as exc:
        result, counts = [f"not checked: the copy could not be made in {cfg.state_dir}: {exc.strerror or exc}"], {}
    if result != ["ok"] and not result[0].startswith("not checked"):
        report.integrity_check = [f"hot rollback journal {journal}; a copy rolled back fails integrity_check:", *result]
        raise IntegrityError(report.integrity_check, preserve_raw=True)
    seen = "integrity_check ok, rows " + ", ".join(f"{t} {n}" for t, n in counts.items()) if result == ["ok"] else result[0]
    report.integrity_check = [f"hot rollback journal ({size} bytes); a copy rolled back: {seen}"]
    raise HotJournalError(
        f"the live DB {cfg.db_label} has a hot rollback journal ({journal}, {size} bytes): a writer in rollback-journal "
        "mode was interrupted mid-transaction — session aborted. This is not corruption: SQLite rolls the journal back "
        f"on the first read-write open, which this read-only gate must not do. A copy rolled back here: {seen}.",
        hint=f"with the engine stopped, let SQLite roll it back as the service user: sqlite3 {cfg.db_path} 'PRAGMA integrity_check' "
        "(a read-write open), then start again; the raw DB and -journal are preserved in abnormal_stop/ by session-start",
    )


def gate_structure(cfg: Config, report: GateReport) -> None:
    gate_hot_journal(cfg, report)
    structure = sqlitedb.check_structure(cfg.db_path)
    for note in structure.notes:
        log.warning("%s", note)
    report.structure_notes = structure.notes
    if structure.problems:
        report.integrity_check = structure.problems
        raise IntegrityError(structure.problems, preserve_raw=structure.wal_damaged)


def gate_integrity(cfg: Config, report: GateReport) -> None:
    result = sqlitedb.check_file(cfg.db_path, cfg.integrity_max_errors)
    report.integrity_check = result
    if result != ["ok"]:
        raise refusal(cfg, report, result)


def run_gates(cfg: Config, *, allow_missing: bool, integrity: bool = True) -> GateReport:
    """`neo-db check`: every gate on the live DB itself (no copy is made)."""
    report = GateReport()
    t0 = time.monotonic()
    try:
        gate_filesystem(cfg, report)
        if not gate_present(cfg, report, allow_missing):
            return report
        gate_access(cfg, report)
        gate_holders(cfg, report)
        gate_structure(cfg, report)
        if integrity:
            gate_integrity(cfg, report)
        else:
            report.integrity_check = ["skipped (integrity_check_on_startup: false)"]
        return report
    finally:
        report.seconds = round(time.monotonic() - t0, 3)
