"""`neo-db prune`: apply the retention policy (core/retention.py) under the state lock."""

from __future__ import annotations

from ..config import Config
from ..core.retention import Decision, run
from ..locking import state_lock


def run_locked(cfg: Config, *, dry_run: bool) -> list[Decision]:
    if dry_run:
        return run(cfg, dry_run=True)
    with state_lock(cfg):
        return run(cfg, dry_run=False)
