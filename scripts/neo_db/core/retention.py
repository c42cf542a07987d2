"""Retention: remove old backups with discipline, not aggressively (FLAG-023 §7).

A backup is removed only if ALL hold:
* it is outside the newest ``backup_retention_count`` of its phase;
* it is older than ``backup_retention_days`` (abnormal stops: ``abnormal_retention_days``);
* it is not the newest verified backup of its phase;
* it is not one half of a session's pre/post pair whose other half is kept.

A backup dated in the future (more than catalog.FUTURE_TOLERANCE ahead: a clock that ran
ahead) is suspect: it is kept and named, never removed automatically, and it neither takes
one of the newest ``backup_retention_count`` slots nor counts as the newest verified backup.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import Any

from .. import catalog, fsutil, metrics
from ..config import Config
from ..errors import NeoDbError
from .formatting import human_age

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Decision:
    entry: catalog.Entry
    keep: bool
    reason: str
    future_dated: bool = False

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        e = self.entry
        return {
            "name": e.base,
            "phase": e.phase,
            "session": e.session,
            "created": catalog.iso(e.created),
            "age_days": round(e.age_seconds(now) / 86400, 2),
            "status": e.status,
            "keep": self.keep,
            "reason": self.reason,
            "future_dated": self.future_dated,
            "paths": [str(p) for p in e.paths()],
        }


def plan(cfg: Config, entries: list[catalog.Entry], now: dt.datetime) -> list[Decision]:
    decisions: dict[str, Decision] = {}
    by_phase: dict[str, list[catalog.Entry]] = {}
    for e in entries:
        by_phase.setdefault(e.phase, []).append(e)
    for phase, items in by_phase.items():
        days = cfg.abnormal_retention_days if phase == "abnormal" else cfg.backup_retention_days
        newest_first = sorted(items, key=lambda e: (e.created, e.base), reverse=True)
        genuine = [e for e in newest_first if not e.future_dated(now)]
        for e in newest_first:
            if e.future_dated(now):
                decisions[e.base] = Decision(e, True, future_reason(e, now), future_dated=True)
        newest_verified = next((e for e in genuine if e.verified), None)
        for rank, e in enumerate(genuine):
            if e.session == "quarantine":
                d = Decision(e, True, "a restore quarantine: removed by hand only")
            elif rank < cfg.backup_retention_count:
                d = Decision(e, True, f"among the newest {cfg.backup_retention_count} {phase} backups")
            elif e.age_seconds(now) < days * 86400:
                d = Decision(e, True, f"younger than {days} days")
            elif e is newest_verified:
                d = Decision(e, True, f"newest verified {phase} backup")
            else:
                d = Decision(e, False, f"beyond the newest {cfg.backup_retention_count} and older than {days} days")
            decisions[e.base] = d
    # Pairs: a session's pre and post go together.
    kept_sessions = {(d.entry.session) for d in decisions.values() if d.keep and d.entry.phase in ("pre", "post") and d.entry.session}
    for d in decisions.values():
        if not d.keep and d.entry.phase in ("pre", "post") and d.entry.session in kept_sessions:
            d.keep, d.reason = True, f"pairs with a kept backup of session {d.entry.session}"
    return sorted(decisions.values(), key=lambda d: (d.entry.created, d.entry.base))


def future_reason(e: catalog.Entry, now: dt.datetime) -> str:
    ahead = human_age(-e.age_seconds(now)).removeprefix("in ")
    return (
        f"dated in the future ({catalog.iso(e.created)}, {ahead} ahead of now: a clock that ran ahead?): "
        "suspect, kept, and never counted as the newest; check it, then remove it by hand"
    )


def run(cfg: Config, *, dry_run: bool, now: dt.datetime | None = None, trigger: str = "neo-db prune") -> list[Decision]:
    """Apply the policy. With dry_run, only say what would go. Holds the state lock unless nested.

    A real prune records its outcome in the metrics state ("prune": when, by what, ok or the error),
    which `neo-db confirm` reads to say whether retention actually runs."""
    if dry_run:
        return _apply(cfg, dry_run=True, now=now)
    try:
        decisions = _apply(cfg, dry_run=False, now=now)
    except (NeoDbError, OSError) as exc:
        _record(cfg, ok=False, trigger=trigger, detail=str(exc))
        raise
    removed = sum(1 for d in decisions if not d.keep)
    _record(cfg, ok=True, trigger=trigger, detail=f"{len(decisions) - removed} kept, {removed} removed")
    return decisions


def last_record(cfg: Config) -> dict[str, Any] | None:
    """The last real prune's record (None: none recorded)."""
    doc = metrics.load_state(cfg.state_dir).get("prune")
    return doc if isinstance(doc, dict) and isinstance(doc.get("last_run"), int) else None


def _record(cfg: Config, *, ok: bool, trigger: str, detail: str) -> None:
    try:
        metrics.update_state(cfg.state_dir, {"prune": {"last_run": int(time.time()), "ok": ok, "trigger": trigger, "detail": detail}})
    except OSError as exc:  # the prune itself is done (or has failed on its own): say so, do not fail it
        log.warning("prune: could not record this run in %s: %s", metrics.state_path(cfg.state_dir), exc)


def _apply(cfg: Config, *, dry_run: bool, now: dt.datetime | None) -> list[Decision]:
    moment = now or catalog.utcnow()
    decisions = plan(cfg, catalog.entries(cfg), moment)
    for d in decisions:
        if d.future_dated:
            log.warning("%s backup %s is %s", d.entry.phase, d.entry.base, d.reason)
    doomed = [d for d in decisions if not d.keep]
    for d in doomed:
        for path in d.entry.paths():
            if dry_run:
                log.info("would remove %s (%s)", path, d.reason)
            else:
                fsutil.remove_quietly(path)
                log.info("removed %s (%s)", path, d.reason)
    if not dry_run and doomed:
        for phase in {d.entry.phase for d in doomed}:
            fsutil.fsync_dir(catalog.phase_dir(cfg, phase))
    log.info(
        "prune%s: %d backups, %d kept, %d %s",
        " (dry run)" if dry_run else "",
        len(decisions),
        len(decisions) - len(doomed),
        len(doomed),
        "would be removed" if dry_run else "removed",
    )
    return decisions
