"""`neo-db drill`: the restore test. Restore the newest verified backup of each phase into a
temp dir, check its sha256 and row counts against the manifest, run integrity_check, and
report how old each phase's newest good backup is. The result is kept for `health` and `confirm`."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import catalog, fsutil, sqlitedb
from ..config import Config
from . import timed

log = logging.getLogger(__name__)


def result_path(cfg: Config) -> Path:
    return cfg.state_dir / "last_drill.json"


def _restore_and_check(cfg: Config, entry: catalog.Entry, scratch: Path) -> tuple[bool, str]:
    assert entry.db is not None
    m = entry.manifest or {}
    target = scratch / entry.db.name
    fsutil.copy_raw(entry.db, target)
    sha = fsutil.sha256_file(target)
    if sha != m.get("sha256"):
        return False, f"sha256 {sha[:16]}… differs from the manifest's {str(m.get('sha256'))[:16]}…"
    result = sqlitedb.check_file(target, cfg.integrity_max_errors)
    if result != ["ok"]:
        return False, "integrity_check: " + "; ".join(result[:3])
    counts = sqlitedb.file_row_counts(target)
    if counts != m.get("row_counts"):
        return False, f"row counts {counts} differ from the manifest's {m.get('row_counts')}"
    extra = ""
    if entry.snapshot_dir is not None:
        problems = timed.check_files(entry)
        if problems:
            return False, "snapshot files: " + "; ".join(problems[:3])
        extra = f", the sha256 of all {len(m.get('files', {}))} files in {catalog.METADATA} match"
    return True, f"restored, sha256 and {sum(counts.values())} rows in {len(counts)} tables match, integrity ok{extra}"


def run(cfg: Config) -> dict[str, Any]:
    now = catalog.utcnow()
    t0 = time.monotonic()
    phases: dict[str, Any] = {}
    all_entries = catalog.entries(cfg)
    with tempfile.TemporaryDirectory(prefix="neo-db-drill-") as tmp:
        for phase in catalog.PHASE_DIRS:
            verified = [e for e in all_entries if e.phase == phase and e.verified and e.session != "quarantine"]
            candidates = [e for e in verified if not e.future_dated(now)]  # a future-dated backup is never the newest
            if not candidates:
                skipped = len(verified) - len(candidates)
                phases[phase] = {
                    "result": "none",
                    "detail": f"no verified {phase} backup" + (f" ({skipped} dated in the future skipped)" if skipped else ""),
                }
                continue
            newest = max(candidates, key=lambda e: (e.created, e.base))
            ok, detail = _restore_and_check(cfg, newest, Path(tmp))
            phases[phase] = {
                "result": "pass" if ok else "fail",
                "backup": newest.base,
                "age_seconds": int(newest.age_seconds(now)),
                "detail": detail,
            }
            log.log(logging.INFO if ok else logging.ERROR, "drill %s: %s — %s", phase, newest.base, detail)
    tested = [p for p in phases.values() if p["result"] != "none"]
    overall = "pass" if tested and all(p["result"] == "pass" for p in tested) else "fail"
    doc = {"result": overall, "at": catalog.iso(now), "seconds": round(time.monotonic() - t0, 3), "phases": phases}
    if not tested:
        doc["detail"] = "no verified backup to drill"
    try:
        fsutil.write_json_atomic(result_path(cfg), doc)
    except OSError as exc:
        log.warning("could not record the drill result in %s: %s", result_path(cfg), exc)
    return doc


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
