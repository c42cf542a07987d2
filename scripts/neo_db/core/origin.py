"""Where the live DB came from (state_dir/origin.json, written by `neo-db import`), the session counter an
import sets, and the pending record that finishes or rolls back an import killed half-way."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from .. import catalog, fsutil
from ..config import Config
from ..errors import NeoDbError
from .sessions import counter_path, format_session, read_counter

log = logging.getLogger(__name__)


ORIGIN = "origin.json"


def origin_path(cfg: Config) -> Path:
    return cfg.state_dir / ORIGIN


def load_origin(cfg: Config) -> dict[str, Any] | None:
    path = origin_path(cfg)
    try:
        doc = fsutil.read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise NeoDbError(f"the origin record {path} is unreadable ({exc})", hint="look at it; 'neo-db import' rewrites it") from None
    if not isinstance(doc, dict):
        raise NeoDbError(f"the origin record {path} is not a JSON object", hint="look at it; 'neo-db import' rewrites it")
    return doc


def counter_doc(cfg: Config, next_number: int) -> dict[str, Any]:
    last = next_number - 1
    return {
        "last_number": last,
        "session": format_session(cfg, last) if last > 0 else None,
        "set_by": f"neo-db import --next-session {format_session(cfg, next_number)}",
        "at": catalog.iso(catalog.utcnow()),
    }


def set_counter(cfg: Config, number: int | None, *, forward_only: bool = False) -> bool:
    """Make `number` the next session. True if the counter changed.

    forward_only: never move it back (an interrupted import finished after sessions have run)."""
    if number is None:
        return False
    last, _damage = read_counter(cfg)
    if last == number - 1 or (forward_only and last is not None and last >= number - 1):
        return False
    fsutil.write_json_atomic(counter_path(cfg), counter_doc(cfg, number))
    log.info("the session counter now gives %s next", format_session(cfg, number))
    return True


def imported_entry(cfg: Config, origin: dict[str, Any] | None) -> catalog.Entry | None:
    name = origin.get("imported_backup") if origin else None
    if not isinstance(name, str) or not name:
        return None
    entry = catalog.find(cfg, name)
    return entry if entry is not None and entry.phase == "imported" and entry.db is not None else None


PENDING = "import-pending.json"


def pending_path(cfg: Config) -> Path:
    return cfg.state_dir / PENDING


def own_backups(cfg: Config, origin: dict[str, Any]) -> list[catalog.Entry]:
    """The imported backups a run took for this origin record (matched by installed sha256 and time)."""
    found = []
    for e in catalog.entries(cfg, ["imported"]):
        manifest = e.manifest or {}
        if e.db is not None and all(manifest.get(k) == origin.get(k) for k in ("installed_sha256", "imported_at", "source_sha256")):
            found.append(e)
    return found


def finish_pending(cfg: Config, *, installed_only: bool = False) -> None:
    """Finish or roll back an import killed after it wrote its pending record. Call under the state lock,
    after restore.recover (which completes or rolls back the install itself).

    The new DB is live: origin.json and the session counter are written as the killed run would have.
    It is not: the killed run's imported backup (a DB never installed) goes; the live DB is as it was.
    installed_only: a restore still in its staging dir is not over; write origin and counter if the new
    DB is already live, touch nothing else and keep the record for the run that completes the restore."""
    path = pending_path(cfg)
    try:
        doc = fsutil.read_json(path)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        log.error("the pending import record %s is unreadable (%s): look at it, then remove it", path, exc)
        return
    origin = doc.get("origin") if isinstance(doc, dict) else None
    if not isinstance(origin, dict):
        log.error("the pending import record %s holds no origin: look at it, then remove it", path)
        return
    own = own_backups(cfg, origin)
    # Once a run saw the new DB live, it stays "installed": sessions may change it since.
    seen = doc.get("installed_seen") is True
    live_is_new = seen or (cfg.db_path.is_file() and fsutil.sha256_file(cfg.db_path) == origin.get("installed_sha256"))
    installed = bool(own) and live_is_new
    number = doc.get("next_number")
    number = number if isinstance(number, int) and not isinstance(number, bool) else None
    if live_is_new and not own:
        # The new DB is live (its sha256 is this run's build), but its imported backup is out of sight
        # (backup_dir not mounted, unreadable): not a roll back. The counter now; origin when it is seen.
        set_counter(cfg, number, forward_only=True)
        if not seen:
            fsutil.write_json_atomic(path, {**doc, "installed_seen": True})
        log.error(
            "the interrupted import of %s installed %s, but its imported backup is not found in %s: keeping %s "
            "until a run sees it (is backup_dir mounted and readable?)",
            origin.get("source_path"),
            cfg.db_path,
            cfg.backup_dir,
            path,
        )
        return
    if installed_only and not installed:
        return
    if installed:
        record = {**origin, "imported_backup": own[-1].db.name if own[-1].db else None, "installed_path": str(cfg.db_path)}
        fsutil.write_json_atomic(origin_path(cfg), record)
        set_counter(cfg, number, forward_only=True)
        log.warning("finished the interrupted import of %s: origin recorded in %s", origin.get("source_path"), origin_path(cfg))
    else:
        current = None
        with contextlib.suppress(NeoDbError):
            current = (load_origin(cfg) or {}).get("imported_backup")
        for e in own:
            if e.db is not None and e.db.name != current:
                for file in (e.db, e.db.with_suffix(".json")):
                    fsutil.remove_quietly(file)
                log.info("removed %s: the interrupted import that took it never installed it", e.db.name)
        log.warning("an interrupted import of %s was rolled back: the live DB %s is as it was", origin.get("source_path"), cfg.db_path)
    if not installed_only:
        fsutil.remove_quietly(path)


def origin_check(cfg: Config) -> tuple[bool, list[str]]:
    """confirm's item: origin.json exists, and its imported backup exists and verifies by sha256."""
    fix = "run ansible/migrate.yml (or 'neo-db import SOURCE' on the box; 'neo-db import --adopt' for a DB the engine made here)"
    path = origin_path(cfg)
    try:
        origin = load_origin(cfg)
    except NeoDbError as exc:
        return False, [exc.message, fix]
    if origin is None:
        return False, [f"no origin record {path}: where the live DB came from is not recorded", fix]
    name = origin.get("imported_backup")
    entry = imported_entry(cfg, origin)
    where = f"{origin.get('source_host') or '?'}:{origin.get('source_path') or '?'}"
    head = f"{path}: from {where}, source sha256 {str(origin.get('source_sha256'))[:16]}…, imported {origin.get('imported_at')}"
    if entry is None or entry.db is None:
        return False, [head, f"its imported backup {name!r} is not in {catalog.phase_dir(cfg, 'imported')}", fix]
    expected = (entry.manifest or {}).get("sha256")
    actual = fsutil.sha256_file(entry.db)
    if actual != expected:
        return False, [head, f"{entry.db}: sha256 {actual[:16]}… does not match its manifest's {str(expected)[:16]}…", fix]
    return True, [head, f"imported backup {entry.db.name}: sha256 verified"]
