"""The systemd hooks around an engine session.

``session-start`` is ExecStartPre: allocate the session ID, preserve an unclean
previous session, run the gates (fail closed), take the pre-session backup, mark the
session open. ``session-stop`` is ExecStopPost: classify the stop from systemd's
``$SERVICE_RESULT``/``$EXIT_CODE``/``$EXIT_STATUS``, then take the post-session backup
(clean) or preserve what is there (abnormal).

State lives in state_dir:
  current_session.json  the session being started ("starting") or running ("open")
  session_counter.json  the last session number that opened
  session.env           NEO_SESSION_ID=..., read by ExecStart through EnvironmentFile=
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import catalog, fsutil, sqlitedb, systemd
from .. import config as config_mod
from ..config import Config
from ..core import backups, gates, health, retention
from ..core.pipeline import BackupFailed, BackupNotIntact
from ..core.sessions import (
    OPEN,
    REFUSED_START_TRIGGER,
    STARTING,
    boot_id,
    clear_current,
    counter_path,
    current_path,
    format_session,
    highest_used,
    load_current,
    number_of,
    read_counter,
    save_current,
)
from ..errors import GateError, HotJournalError, IntegrityError, NeoDbError, UsageError
from ..locking import state_lock

log = logging.getLogger(__name__)


def next_session(cfg: Config, previous: dict[str, Any] | None = None) -> tuple[str, int, str | None]:
    """The next session ID, its number, and a warning if the counter had to be recovered.

    A missing or damaged counter never restarts the numbering over IDs already used: the next
    number follows the highest one found in the backups and exports. A damaged counter with
    no such evidence is refused (exit 2) rather than guessed.
    """
    path = counter_path(cfg)
    last, damage = read_counter(cfg)
    if last is not None:
        number = max(last + 1, cfg.session_first_number)
        return format_session(cfg, number), number, None
    used = highest_used(cfg, previous)
    if used is None:
        if damage is None:  # a first run: no counter, no session anywhere
            return format_session(cfg, cfg.session_first_number), cfg.session_first_number, None
        example = format_session(cfg, cfg.session_first_number)
        raise UsageError(
            f"the session counter {path} is {damage}, and no backup, exports/sessions/ entry or open session shows "
            "which session IDs were used: refusing to guess (a reused ID would overwrite that session's db_health)",
            hint=f'write the last session number used into it, e.g. {{"last_number": 52}} (the next session is then 53), '
            f"or delete it if no session ever ran on this host (the next session is then {example})",
        )
    number = max(used[0] + 1, cfg.session_first_number)
    session = format_session(cfg, number)
    state = "missing" if damage is None else damage
    warning = (
        f"the session counter {path} is {state}: recovered from the highest session number in use, "
        f"{format_session(cfg, used[0])} ({used[1]}); this session is {session}, and the counter is rewritten when it opens"
    )
    log.warning("%s", warning)
    return session, number, warning


def _commit_counter(cfg: Config, session: str) -> None:
    number = number_of(cfg, session)
    if number is None:
        return
    last, damage = read_counter(cfg)
    if last is None or number > last:
        if damage:
            log.warning("the session counter %s was %s; rewritten with %s", counter_path(cfg), damage, session)
        fsutil.write_json_atomic(counter_path(cfg), {"last_number": number, "session": session})


def _write_env(cfg: Config, session: str) -> None:
    """state/session.env for EnvironmentFile=. A value systemd would split or change is refused, never written."""
    path = cfg.state_dir / "session.env"
    lines = []
    for key, value in (("NEO_SESSION_ID", session), ("NEO_DB_PATH", str(cfg.db_path))):
        unsafe = config_mod.unsafe_chars(value)
        if unsafe:
            raise UsageError(
                f"refusing to write {key}={value!r} into {path}: it has {unsafe}, which systemd's EnvironmentFile= "
                "would read as another line or change",
                hint=f"fix the path in {cfg.source} ('neo-db config validate {cfg.source}' names it)",
            )
        lines.append(f"{key}={value}\n")
    fsutil.write_bytes_atomic(path, "".join(lines).encode(), mode=0o644)


def _first_run(cfg: Config) -> bool:
    return not counter_path(cfg).exists() and not catalog.entries(cfg)


@dataclasses.dataclass
class StartOutcome:
    session: str
    block: dict[str, Any]


def _preserve_unclean(cfg: Config, previous: dict[str, Any], now_session: str) -> None:
    prev = previous.get("session")
    same_boot = previous.get("boot_id") == boot_id()
    stop = {
        "classification": "unclean_previous_session",
        "detail": f"session {prev} was still open when {now_session} started: its ExecStopPost never ran"
        + (" (same boot: the hook was killed)" if same_boot else " (the host rebooted: power loss or kernel panic)"),
        "found_by": now_session,
    }
    log.warning("%s; preserving its files before anything opens the DB", stop["detail"])
    kept, warnings = backups.preserve_abnormal(cfg, prev, "unclean-previous-session", stop)
    if prev and catalog.SESSION_RE.match(str(prev)):
        block = health.load(cfg, str(prev))
        block["stop"] = stop
        block["abnormal_stop_backup"] = kept.get("backup")
        block["abnormal_raw_copy"] = kept.get("raw_copy")
        block["warnings"] = block.get("warnings", []) + warnings
        health.save(cfg, str(prev), block)


def _engine_installed(cfg: Config) -> None:
    """Refuse, before a session ID or a backup is taken, to open a session for an engine that is not
    installed: systemd would fail its ExecStart (203/EXEC) after the pre-session backup. The unit files
    are read, not `systemctl show`: this runs inside the engine's sandbox. No unit file: nothing to say."""
    view = systemd.unit_files_view(cfg.engine_unit, cfg.unit_dir)
    if view.commands.get("ExecStart"):
        problem, _ = systemd.engine_program_problem(cfg.engine_unit, view)
        if problem is not None:
            raise UsageError(problem)


def session_start(cfg: Config, session: str | None, *, allow_missing: bool = False) -> StartOutcome:
    _engine_installed(cfg)
    with state_lock(cfg):
        backups.clean_stale_temps(cfg)
        previous = load_current(cfg)
        notes = [previous["problem"]] if previous and previous.get("problem") else []
        if session is None:
            session, _, recovered = next_session(cfg, previous)
            notes += [recovered] if recovered else []
        catalog.check_session_id(session)
        if previous is not None:
            if previous.get("state") == OPEN:
                _preserve_unclean(cfg, previous, session)
            else:
                log.warning("the start of session %s was interrupted before it opened; no engine ran", previous.get("session"))
            clear_current(cfg)

        started = catalog.utcnow()
        _write_env(cfg, session)
        save_current(
            cfg, {"session": session, "state": STARTING, "boot_id": boot_id(), "started": catalog.iso(started), "pid": os.getpid()}
        )
        block = health.load(cfg, session)
        block.update({"session": session, "db_path": str(cfg.db_path), "started_at": catalog.iso(started)})
        block["stop"] = None
        block["post_session_backup"] = None
        block["warnings"] = [*block.get("warnings", []), *notes]
        attempts = block.setdefault("start_attempts", [])
        log.info("session %s: starting (DB %s)", session, cfg.db_path)

        report = gates.GateReport()
        t0 = time.monotonic()
        timings: dict[str, float] = {}
        try:
            first_run = allow_missing or (not os.path.exists(cfg.db_path) and _first_run(cfg))
            gates.gate_filesystem(cfg, report)
            present = gates.gate_present(cfg, report, first_run)
            if present:
                gates.gate_access(cfg, report)
                gates.gate_holders(cfg, report)
                gates.gate_structure(cfg, report)
                _integrity_and_pre_backup(cfg, session, report, block, timings)
            else:
                block["pre_session_backup"] = None
                block["warnings"].append("no DB yet (first run): no integrity check and no pre-session backup")
        except GateError as exc:
            report.seconds = round(time.monotonic() - t0, 3)
            if getattr(exc, "preserve_raw", False):
                _preserve_refused(cfg, session, block, exc)
            block["integrity_check"] = (
                _summary(report.integrity_check) if isinstance(exc, IntegrityError) else f"not run: {type(exc).__name__}"
            )
            block["gate"] = report.as_dict()
            attempts.append({"at": catalog.iso(started), "result": "refused", "reason": exc.message.splitlines()[0]})
            health.save(cfg, session, block)
            raise
        report.seconds = round(time.monotonic() - t0, 3)
        block["integrity_check"] = _summary(report.integrity_check)
        block["gate"] = report.as_dict()
        block["timings"] = {"gate_and_pre_backup_seconds": report.seconds, **timings}
        attempts.append({"at": catalog.iso(started), "result": "opened"})
        save_current(
            cfg,
            {
                "session": session,
                "state": OPEN,
                "boot_id": boot_id(),
                "started": catalog.iso(started),
                "pre_session_backup": block.get("pre_session_backup_path"),
            },
        )
        _commit_counter(cfg, session)
        health.save(cfg, session, block)
        log.info(
            "session %s: open (integrity %s, pre-session backup %s)",
            session,
            block["integrity_check"],
            block.get("pre_session_backup") or "none",
        )
        return StartOutcome(session, block)


def _fingerprint(cfg: Config) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for path in (cfg.db_path, Path(f"{cfg.db_path}-wal")):
        try:
            st = path.stat()
        except OSError:
            continue
        out[path.name] = [st.st_size, st.st_mtime_ns]
    return out


def _preserve_refused(cfg: Config, session: str, block: dict[str, Any], exc: GateError) -> None:
    """A refusal whose evidence lives only in the raw files (commits after damage in the -wal, or
    the pages a hot rollback -journal holds).

    A read-write open of the live DB (the engine, the sqlite3 shell) would replay the -wal up
    to the damage, checkpoint and delete it, and the later commits with it. So the raw DB,
    -wal and -shm are copied byte for byte into abnormal_stop/ before the start is refused,
    once per state of the files (a retried start does not copy the same files again).
    """
    hot_journal = isinstance(exc, HotJournalError) or sqlitedb.hot_journal_size(cfg.db_path) is not None
    what = "a hot rollback -journal" if hot_journal else "the -wal is damaged in the middle"
    evidence = "the raw -journal holds the pages to roll back" if hot_journal else "the commits after the damage exist only in the raw -wal"
    fingerprint = _fingerprint(cfg)
    kept_in = block.get("refused_start_raw_copy")
    if kept_in and block.get("refused_start_fingerprint") == fingerprint and Path(str(kept_in)).is_dir():
        log.error("the raw DB, -wal and -shm as they are now were preserved by an earlier refused start in %s", kept_in)
        exc.hint = f"{exc.hint + '; ' if exc.hint else ''}the raw files are preserved in {kept_in}; keep them: {evidence}"
        return
    stop = {
        "classification": "refused_start",
        "detail": f"session {session} was refused: {what}; preserving the raw files before anything else",
        "found_by": session,
    }
    kept, warnings = backups.preserve_abnormal(cfg, session, REFUSED_START_TRIGGER, stop)
    block["refused_start_raw_copy"] = kept.get("raw_copy")
    block["refused_start_backup"] = kept.get("backup")
    block["refused_start_fingerprint"] = fingerprint
    block.setdefault("warnings", []).extend(warnings)
    if kept.get("raw_copy"):
        log.error("the raw DB, -wal and -shm are preserved byte for byte in %s", kept["raw_copy"])
        exc.hint = (
            f"{exc.hint + '; ' if exc.hint else ''}the raw files are preserved in {kept['raw_copy']} "
            f"(and what SQLite keeps, in {kept.get('backup') or 'no copy'}); keep them: {evidence}"
        )


def _summary(result: list[str]) -> str:
    return "ok" if result == ["ok"] else "; ".join(result[:5])


def _integrity_and_pre_backup(
    cfg: Config, session: str, report: gates.GateReport, block: dict[str, Any], timings: dict[str, float]
) -> None:
    """Gate 3 and the pre-session backup in one pass where possible.

    A backup-API copy holds exactly the pages the live DB holds, so integrity_check of
    the copy checks the source too, and the live DB is read once instead of twice. If
    the copy cannot be written (disk full), the live DB is checked directly: a backup
    failure never blocks a session, a corrupt DB always does.
    """
    if not cfg.pre_session_backup_enabled:
        block["pre_session_backup"] = None
        if cfg.integrity_check_on_startup:
            gates.gate_integrity(cfg, report)
        else:
            report.integrity_check = ["skipped (integrity_check_on_startup: false)"]
        return
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        # Nothing else holds the DB (gate 2): with an empty -wal, check the live DB on the
        # other core while this one copies it; the copy is then proven by comparison.
        source_check = None
        if cfg.integrity_check_on_startup and sqlitedb.wal_is_empty(cfg.db_path):
            source_check = pool.submit(sqlitedb.check_file, cfg.db_path, cfg.integrity_max_errors)
        try:
            result = backups.take_backup(
                cfg, "pre", session, "session-start", require_intact=cfg.integrity_check_on_startup, source_check=source_check
            )
        except BackupNotIntact as exc:
            raise gates.refusal(cfg, report, exc.errors) from None
        except BackupFailed as exc:
            if exc.source_corrupt:
                report.integrity_check = [exc.message]
                raise IntegrityError([exc.message]) from None
            warning = f"pre-session backup FAILED (session not blocked): {exc.message}"
            log.warning("%s", warning)
            block["warnings"].append(warning)
            block["pre_session_backup"] = None
            block["pre_session_backup_error"] = exc.message
            if source_check is not None:
                report.integrity_check = source_check.result()
                if report.integrity_check != ["ok"]:
                    raise gates.refusal(cfg, report, report.integrity_check) from None
            elif cfg.integrity_check_on_startup:
                gates.gate_integrity(cfg, report)
            else:
                report.integrity_check = ["skipped (integrity_check_on_startup: false)"]
            return
    timings["pre_backup_seconds"] = round(time.monotonic() - t0, 3)
    report.integrity_check = (
        result.manifest["integrity_check"] if cfg.integrity_check_on_startup else ["skipped (integrity_check_on_startup: false)"]
    )
    block["pre_session_backup"] = result.name
    block["pre_session_backup_path"] = str(result.path)
    log.info("pre-session backup: %s", result.path)


@dataclasses.dataclass(frozen=True)
class StopInfo:
    classification: str  # clean | abnormal | start_failed
    service_result: str | None
    exit_code: str | None
    exit_status: str | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def classify(env: Mapping[str, str], clean_statuses: tuple[int, ...]) -> StopInfo:
    result = env.get("SERVICE_RESULT")
    code = env.get("EXIT_CODE")
    status = env.get("EXIT_STATUS")
    if code == "exited" and status is not None and status.isdigit() and int(status) in clean_statuses:
        return StopInfo("clean", result, code, status, f"the engine exited with status {status}")
    if code is None and status is None:
        detail = "no exit information: the engine never ran, or session-stop was run by hand"
    elif code == "exited":
        detail = f"the engine exited with status {status}, not in clean_exit_statuses {list(clean_statuses)}"
    else:
        detail = f"the engine was {code} by signal {status}"
    if result and result != "success":
        detail += f" (systemd result: {result})"
    return StopInfo("abnormal", result, code, status, detail)


def session_stop(cfg: Config, session: str | None, env: Mapping[str, str]) -> dict[str, Any]:
    with state_lock(cfg):
        current = load_current(cfg)
        if current is None:
            log.info("no session is open (nothing recorded in %s); nothing to do", current_path(cfg))
            return {}
        recorded = current.get("session")
        if session is not None and recorded and session != recorded:
            log.warning("--session %s differs from the open session %s; using %s", session, recorded, recorded)
        session = str(recorded) if recorded else session
        if session is not None:
            catalog.check_session_id(session)
        block = health.load(cfg, session) if session else {}

        if current.get("state") == STARTING:
            info = StopInfo(
                "start_failed",
                env.get("SERVICE_RESULT"),
                env.get("EXIT_CODE"),
                env.get("EXIT_STATUS"),
                "the session never opened (refused by a gate, or ExecStartPre failed): no post-session backup",
            )
            log.info("session %s: %s", session, info.detail)
            block["stop"] = info.as_dict()
        else:
            info = classify(env, cfg.clean_exit_statuses)
            block["stop"] = info.as_dict()
            block["stopped_at"] = catalog.iso(catalog.utcnow())
            if info.classification == "clean":
                _post_backup(cfg, session, block)
            else:
                log.warning("session %s: abnormal stop: %s", session, info.detail)
                if cfg.abnormal_stop_backup_enabled:
                    kept, warnings = backups.preserve_abnormal(cfg, session, "session-stop", info.as_dict())
                    block["abnormal_stop_backup"] = kept.get("backup")
                    block["abnormal_raw_copy"] = kept.get("raw_copy")
                    block.setdefault("warnings", []).extend(warnings)
                else:
                    block.setdefault("warnings", []).append("abnormal_stop_backup_enabled is false: nothing preserved")
        if session:
            health.save(cfg, session, block)
        clear_current(cfg)
        if cfg.prune_after_session and info.classification != "start_failed":
            try:
                retention.run(cfg, dry_run=False, trigger="session-stop")
            except (NeoDbError, OSError) as exc:
                log.warning("prune after the session failed: %s", exc)
        return block


def _post_backup(cfg: Config, session: str | None, block: dict[str, Any]) -> None:
    if not cfg.post_session_backup_enabled:
        block["post_session_backup"] = None
        block["post_session_backup_ok"] = None
        log.info("session %s: clean close; post-session backup disabled", session)
        return
    t0 = time.monotonic()
    try:
        result = backups.take_backup(cfg, "post", session, "session-stop")
    except NeoDbError as exc:
        warning = f"post-session backup FAILED: {exc.message}"
        log.error("%s", warning)
        block["post_session_backup"] = None
        block["post_session_backup_ok"] = False
        block.setdefault("warnings", []).append(warning)
        return
    block["post_session_backup"] = result.name
    block["post_session_backup_path"] = str(result.path)
    block["post_session_backup_ok"] = result.intact
    block.setdefault("timings", {})["post_backup_seconds"] = round(time.monotonic() - t0, 3)
    log.info("session %s: clean close; post-session backup %s", session, result.path)
