"""The session gates, in order: local filesystem, no other holder, integrity."""

from __future__ import annotations

import dataclasses
import logging
import time

from .. import fsutil, holders, sqlitedb
from ..config import Config
from ..errors import DbInUseError, DbMissingError, IntegrityError, NetworkFilesystemError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class GateReport:
    filesystem: str = "not checked"
    holders: str = "not checked"
    integrity_check: list[str] = dataclasses.field(default_factory=lambda: ["not run"])
    db_present: bool = True
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def gate_filesystem(cfg: Config, report: GateReport) -> None:
    where = cfg.db_path if cfg.db_path.exists() else cfg.db_path.parent
    probe = where
    while not probe.exists() and probe != probe.parent:
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
    if cfg.db_path.is_file():
        return True
    if cfg.db_path.exists():
        raise DbMissingError(f"{cfg.db_path} exists but is not a regular file")
    report.db_present = False
    if allow_missing:
        log.info("no DB at %s yet: allowed (first run); the engine will create it", cfg.db_path)
        report.integrity_check = ["skipped: no DB yet (first run)"]
        return False
    raise DbMissingError(
        f"the DB {cfg.db_path} does not exist — session aborted",
        hint="restore the last known-good backup ('neo-db list', then 'neo-db restore NAME'), "
        "or pass --allow-missing for the very first run",
    )


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


def gate_structure(cfg: Config, report: GateReport) -> None:
    problems = sqlitedb.structural_problems(cfg.db_path)
    if problems:
        report.integrity_check = problems
        raise IntegrityError(problems)


def gate_integrity(cfg: Config, report: GateReport) -> None:
    result = sqlitedb.check_file(cfg.db_path, cfg.integrity_max_errors)
    report.integrity_check = result
    if result != ["ok"]:
        raise IntegrityError(result)


def run_gates(cfg: Config, *, allow_missing: bool, integrity: bool = True) -> GateReport:
    """`neo-db check`: every gate on the live DB itself (no copy is made)."""
    report = GateReport()
    t0 = time.monotonic()
    try:
        gate_filesystem(cfg, report)
        if not gate_present(cfg, report, allow_missing):
            return report
        gate_holders(cfg, report)
        gate_structure(cfg, report)
        if integrity:
            gate_integrity(cfg, report)
        else:
            report.integrity_check = ["skipped (integrity_check_on_startup: false)"]
        return report
    finally:
        report.seconds = round(time.monotonic() - t0, 3)
