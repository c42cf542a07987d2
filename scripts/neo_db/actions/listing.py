"""`neo-db list`: the backups, with phase, session, age, size and verified status."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from .. import catalog
from ..config import Config
from ..core.formatting import human_age

log = logging.getLogger(__name__)


def rows(cfg: Config, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    moment = now or catalog.utcnow()
    out = []
    for e in catalog.entries(cfg):
        m = e.manifest or {}
        ahead = e.future_dated(moment)
        if ahead:
            log.warning(
                "%s backup %s is dated in the future (%s, %s ahead of now: a clock that ran ahead?): suspect; "
                "it is never counted as the newest and prune keeps it; check it, then remove it by hand",
                e.phase,
                e.base,
                catalog.iso(e.created),
                human_age(-e.age_seconds(moment)).removeprefix("in "),
            )
        out.append(
            {
                "name": e.base,
                "phase": e.phase,
                "session": e.session,
                "created": catalog.iso(e.created),
                "age_seconds": int(e.age_seconds(moment)),
                "size": e.size,
                "status": e.status,
                "verified": e.verified,
                "future_dated": ahead,
                "sha256": m.get("sha256"),
                "db": str(e.db) if e.db else None,
                "raw_dir": str(e.raw_dir) if e.raw_dir else None,
                "snapshot_dir": str(e.snapshot_dir) if e.snapshot_dir else None,
            }
        )
    return out
