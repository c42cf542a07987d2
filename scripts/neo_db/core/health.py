"""The db_health block (FLAG-049) of each session, in exports_dir/sessions/<ID>/db_health.json.

Every phase updates it. If the engine's own session summary exists, the block is
merged into it under ``db_health``, atomically.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .. import __version__, catalog, fsutil, sqlitedb
from ..config import Config

log = logging.getLogger(__name__)


def sessions_dir(cfg: Config) -> Path:
    return cfg.exports_dir / "sessions"


def health_path(cfg: Config, session: str) -> Path:
    return sessions_dir(cfg) / session / "db_health.json"


def load(cfg: Config, session: str) -> dict[str, Any]:
    try:
        doc = fsutil.read_json(health_path(cfg, session))
        block = doc.get("db_health") if isinstance(doc, dict) else None
        if isinstance(block, dict):
            return block
    except (OSError, ValueError):
        pass
    return {
        "session": session,
        "db_path": str(cfg.db_path),
        "integrity_check": None,
        "pre_session_backup": None,
        "post_session_backup": None,
        "warnings": [],
        "neo_db_version": __version__,
        "sqlite_version": sqlitedb.sqlite_version(),
    }


def save(cfg: Config, session: str, block: dict[str, Any]) -> Path:
    path = health_path(cfg, session)
    try:
        os.makedirs(path.parent, mode=0o750, exist_ok=True)
        fsutil.write_json_atomic(path, {"db_health": block})
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc.strerror or exc)
        return path
    summary = cfg.summary_path(session)
    if summary is not None and summary.is_file():
        merge_into_summary(summary, block)
    return path


def merge_into_summary(summary: Path, block: dict[str, Any]) -> None:
    try:
        doc = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("session summary %s is not readable JSON (%s); db_health not merged into it", summary, exc)
        return
    if not isinstance(doc, dict):
        log.warning("session summary %s is not a JSON object; db_health not merged into it", summary)
        return
    doc["db_health"] = block
    mode = summary.stat().st_mode & 0o777
    try:
        fsutil.write_json_atomic(summary, doc, mode=mode)
        log.info("db_health merged into %s", summary)
    except OSError as exc:
        log.warning("could not merge db_health into %s: %s", summary, exc.strerror or exc)


def latest_session(cfg: Config) -> str | None:
    best: tuple[float, str] | None = None
    for item in fsutil.iter_entries(sessions_dir(cfg)):
        name = item.name
        if item.is_dir(follow_symlinks=False) and catalog.SESSION_RE.match(name) and name.lower() not in catalog.RESERVED_SESSION_IDS:
            p = Path(item.path) / "db_health.json"
            try:
                key = (p.stat().st_mtime, item.name)
            except OSError:
                continue
            if best is None or key > best:
                best = key
    return best[1] if best else None
