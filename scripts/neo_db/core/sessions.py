"""Session IDs and the open-session marker.

State lives in state_dir:
  current_session.json  the session being started ("starting") or running ("open")
  session_counter.json  the last session number that opened
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .. import catalog, fsutil
from ..config import Config
from ..errors import UsageError
from . import health

log = logging.getLogger(__name__)


STARTING = "starting"


REFUSED_START_TRIGGER = "session-start-refused"


OPEN = "open"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def current_path(cfg: Config) -> Path:
    return cfg.state_dir / "current_session.json"


def load_current(cfg: Config) -> dict[str, Any] | None:
    """The open-session marker, or None. A marker that is unreadable or has wrong types is reported (the
    warning is under the key "problem") and read as an unclean previous session of unknown ID: its raw
    files get preserved, which costs a copy, while ignoring it could cost a crashed session's -wal."""
    path = current_path(cfg)
    try:
        doc = fsutil.read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problem = f"{path} is unreadable ({exc}): treating the previous session as unclean"
        log.warning("%s", problem)
        return {"session": None, "state": OPEN, "problem": problem}
    wrong = []
    if not isinstance(doc, dict):
        wrong.append(f"it holds {_show(doc)}, not a JSON object")
        doc = {}
    session = doc.get("session")
    if session is not None and not (isinstance(session, str) and _valid_session(session)):
        wrong.append(f"'session' is {_show(session)}, not a session ID such as S053")
        session = None
    state = doc.get("state")
    if state not in (STARTING, OPEN):
        wrong.append(f"'state' is {_show(state)}, not {STARTING!r} or {OPEN!r}")
        state = OPEN
    if not wrong:
        return doc
    problem = f"{path} has wrong types ({'; '.join(wrong)}): treating the previous session as unclean"
    log.warning("%s", problem)
    return {**doc, "session": session, "state": state, "problem": problem}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _valid_session(session: str) -> bool:
    try:
        catalog.check_session_id(session)
    except UsageError:
        return False
    return True


def save_current(cfg: Config, doc: dict[str, Any]) -> None:
    fsutil.write_json_atomic(current_path(cfg), doc)


def clear_current(cfg: Config) -> None:
    fsutil.remove_quietly(current_path(cfg))
    fsutil.fsync_dir(cfg.state_dir)


def counter_path(cfg: Config) -> Path:
    return cfg.state_dir / "session_counter.json"


def read_counter(cfg: Config) -> tuple[int | None, str | None]:
    """(the last session number, None); (None, None) if there is no counter yet; (None, what is wrong) if it is damaged."""
    try:
        doc = fsutil.read_json(counter_path(cfg))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({exc})"
    value = doc.get("last_number") if isinstance(doc, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        where = f"'last_number' is {_show(value)}" if isinstance(doc, dict) else f"it holds {_show(doc)}"
        return None, f'damaged ({where}; expected {{"last_number": <the last session number>}})'
    return value, None


def format_session(cfg: Config, number: int) -> str:
    return f"{cfg.session_prefix}{number:0{cfg.session_number_width}d}"


def number_of(cfg: Config, session: str) -> int | None:
    rest = session[len(cfg.session_prefix) :] if session.startswith(cfg.session_prefix) else ""
    return int(rest) if rest.isascii() and rest.isdigit() else None


def _session_dir_used(path: Path) -> bool:
    """exports/sessions/<ID> belongs to a session that ran, unless all it holds is a db_health of refused starts."""
    try:
        if set(os.listdir(path)) - {"db_health.json"}:
            return True  # the engine's summary, or anything else: the ID was used
        block = fsutil.read_json(path / "db_health.json")["db_health"]
        attempts = block["start_attempts"]
        return not attempts or any(not isinstance(a, dict) or a.get("result") != "refused" for a in attempts)
    except FileNotFoundError:
        return False  # an empty directory
    except (OSError, ValueError, KeyError, TypeError):
        return True  # cannot tell: count it


def _kept_by_a_refused_start(entry: catalog.Entry) -> bool:
    """An abnormal_stop copy made by a refused start (_preserve_refused): its session never opened,
    so its ID was not used (a retried start keeps it, and finds its earlier copy)."""
    if entry.phase != "abnormal":
        return False
    try:
        stop_doc = fsutil.read_json(entry.raw_dir / "stop.json") if entry.raw_dir is not None else entry.manifest
    except (OSError, ValueError):
        return False
    return isinstance(stop_doc, dict) and stop_doc.get("trigger") == REFUSED_START_TRIGGER


def highest_used(cfg: Config, previous: dict[str, Any] | None) -> tuple[int, str] | None:
    """The highest session number (of this prefix) that was used, and where it was found: backup names,
    exports/sessions/<ID>/ of sessions that ran, and the open-session marker."""
    found: list[tuple[int, str]] = []
    for e in catalog.entries(cfg):
        number = number_of(cfg, e.session) if e.session else None
        if number is not None and not _kept_by_a_refused_start(e):
            found.append((number, f"backup {e.base}"))
    for item in fsutil.iter_entries(health.sessions_dir(cfg)):
        number = number_of(cfg, item.name)
        if number is not None and item.is_dir(follow_symlinks=False) and _session_dir_used(Path(item.path)):
            found.append((number, f"{item.path}/"))
    if previous and previous.get("state") == OPEN and isinstance(previous.get("session"), str):
        number = number_of(cfg, previous["session"])
        if number is not None:
            found.append((number, f"the open session in {current_path(cfg)}"))
    return max(found) if found else None
