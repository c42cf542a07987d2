"""`neo-db drill`: the restore test. Restore the newest verified backup of each phase into a
temp dir, check its sha256 and row counts against the manifest, run integrity_check, and
report how old each phase's newest good backup is. The result is kept for `health` and `confirm`."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import catalog, fsutil, sqlitedb
from ..config import Config
from ..core import timed
from ..core.drills import result_path

log = logging.getLogger(__name__)


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
