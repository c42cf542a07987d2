"""`neo-db backup`: one backup now, outside the session hooks.

A phase backup (manual unless --phase says otherwise; core/backups.py) or, in the snapshots
layout, a timed snapshot directory (core/timed.py); both through the verified-copy pipeline.
"""

from __future__ import annotations

from ..config import Config
from ..core import backups, timed
from ..core.pipeline import BackupResult
from ..errors import UsageError
from ..locking import state_lock


def run(cfg: Config, phase: str | None, session: str | None, trigger: str) -> BackupResult:
    with state_lock(cfg):
        backups.clean_stale_temps(cfg)
        phase = phase or ("timed" if cfg.layout == "snapshots" else "manual")
        if phase != "timed":
            return backups.take_backup(cfg, phase, session, trigger)
        if session:
            raise UsageError("--session does not apply to a timed snapshot (the snapshots layout has no sessions)")
        return timed.take_snapshot(cfg, trigger)
