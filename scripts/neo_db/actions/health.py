"""`neo-db health`: show a session's db_health block (FLAG-049); core/health.py keeps the records."""

from __future__ import annotations

from typing import Any

from .. import catalog
from ..config import Config
from ..core.health import health_path, latest_session, load, sessions_dir
from ..errors import UsageError


def show(cfg: Config, session: str | None) -> dict[str, Any]:
    if session is None:
        session = latest_session(cfg)
        if session is None:
            raise UsageError(f"no session has a db_health.json under {sessions_dir(cfg)} yet")
    catalog.check_session_id(session)
    path = health_path(cfg, session)
    if not path.is_file():
        raise UsageError(
            f"no db_health for session {session} ({path} does not exist)", hint="'neo-db list' shows the sessions that have backups"
        )
    return load(cfg, session)
