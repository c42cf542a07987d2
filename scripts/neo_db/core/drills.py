"""The recorded result of the last restore drill (state_dir/last_drill.json), for `health` and `confirm`."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from .. import catalog, fsutil
from ..config import Config

log = logging.getLogger(__name__)


def result_path(cfg: Config) -> Path:
    return cfg.state_dir / "last_drill.json"


def last(cfg: Config) -> dict[str, Any] | None:
    """The recorded result of the last drill, or None if there is none or it is unreadable (which is reported)."""
    path = result_path(cfg)
    try:
        doc = fsutil.read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): no drill result; run 'neo-db drill' to record a new one", path, exc)
        return None
    wrong = _wrong_types(doc)
    if wrong or not isinstance(doc, dict):
        log.warning("%s has wrong types (%s): no drill result; run 'neo-db drill' to record a new one", path, wrong)
        return None
    try:
        at = dt.datetime.strptime(str(doc.get("at")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        doc["age_seconds"] = int((catalog.utcnow() - at).total_seconds())
    except ValueError:
        doc["age_seconds"] = None
    return doc


def _wrong_types(doc: Any) -> str | None:
    """What in a last_drill.json does not have the shape run() writes, or None."""
    if not isinstance(doc, dict):
        return f"it holds {type(doc).__name__}, not a JSON object"
    if not isinstance(doc.get("result"), str):
        return f"'result' is {doc.get('result')!r:.60}, not a string"
    if not isinstance(doc.get("at"), str):
        return f"'at' is {doc.get('at')!r:.60}, not a time such as 2026-04-22T19:15:00Z"
    phases = doc.get("phases")
    if not isinstance(phases, dict) or not all(isinstance(p, dict) and isinstance(p.get("result"), str) for p in phases.values()):
        return f"'phases' is {phases!r:.60}, not a mapping of phase to {{result: ...}}"
    return None
