"""The one place where neo-db commands feed monitoring: ``after_command`` runs in ``cli.main``
after every command returns or fails, knowing the command and its exit code.

It records what the files do not say (gate runs, backup failures, session starts and stops)
in the metrics state, queues the events that do not fail a unit for the root notifier, and
rewrites ``neo_db.prom``. Nothing here can change a command's exit code or raise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import time
from collections.abc import Sequence
from typing import Any

from . import config as config_mod
from . import metrics, notify
from .errors import FAILURE, GATE_EXIT_CODES, OK, USAGE, UsageError

log = logging.getLogger(__name__)

# Commands after which neo_db.prom is rewritten ('metrics' writes it itself).
WRITERS = frozenset({"check", "session-start", "session-stop", "backup", "prune", "drill", "snapshot", "restore", "notify"})
GATE_CODES = frozenset({0, *GATE_EXIT_CODES})

_outcome: dict[str, Any] = {}


def note_block(block: dict[str, Any] | None) -> None:
    """Called by the session commands with their db_health block."""
    _outcome["block"] = block or {}


def _epoch(text: Any) -> int | None:
    parsed = metrics.parse_iso(text)
    return int(parsed.timestamp()) if parsed else None


def record(cfg: Any, command: str, args: argparse.Namespace, rc: int, now: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(state changes, events to notify) for one finished command."""
    changes: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    block = _outcome.get("block") or {}
    session = block.get("session")
    unit = f"{cfg.engine_unit}.service"
    if command in ("check", "session-start") and rc in GATE_CODES:
        changes["gate"] = {"last_run": now, "last_exit_code": rc}
    if command == "session-start" and rc == OK:
        changes["session"] = {"last_start": _epoch(block.get("started_at")) or now}
        error = block.get("pre_session_backup_error")
        if error:
            changes["backup_last_failure"] = {"pre": now}
            events.append({"event": "pre_backup_failed", "session": session, "detail": str(error), "unit": unit})
    if command == "session-stop" and rc == OK and block:
        stop = block.get("stop") or {}
        kind = stop.get("classification")
        if kind in ("clean", "abnormal"):
            changes["session"] = {"last_stop": _epoch(block.get("stopped_at")) or now, "last_stop_abnormal": kind == "abnormal"}
        if kind == "clean":
            if block.get("post_session_backup_ok") is False:
                changes["backup_last_failure"] = {"post": now}
                warning = next((w for w in block.get("warnings", []) if "post-session" in str(w)), "post-session backup failed")
                events.append({"event": "post_backup_failed", "session": session, "detail": str(warning), "unit": unit})
            else:
                detail = f"post-session backup {block.get('post_session_backup')}"
                events.append({"event": "session_ok", "session": session, "detail": detail})
        elif kind == "abnormal":
            if cfg.abnormal_stop_backup_enabled and not block.get("abnormal_stop_backup"):
                changes["backup_last_failure"] = {"abnormal": now}
            events.append({"event": "abnormal_stop", "session": session, "detail": str(stop.get("detail")), "unit": unit})
    if command == "backup" and rc in (FAILURE, 3):
        phase = getattr(args, "phase", None) or ("timed" if cfg.layout == "snapshots" else "manual")
        changes["backup_last_failure"] = {phase: now}
    if command == "drill" and rc == OK:
        changes["drill_last_success"] = now
        events.append({"event": "drill_ok", "detail": "restore drill passed"})
    return changes, events


def _future_event(cfg: Any, samples: list[tuple[str, dict[str, str], float]]) -> None:
    future = int(next((v for n, _, v in samples if n == "neo_db_future_dated_backups"), 0))
    known = int(metrics.load_state(cfg.state_dir).get("future_dated_notified") or 0)
    if future != known:
        metrics.update_state(cfg.state_dir, {"future_dated_notified": future})
    if future > known:
        notify.enqueue(
            cfg,
            {
                "event": "future_dated_backups",
                "detail": f"{future} backup(s) have a name more than {metrics.FUTURE_SLACK_SECONDS // 60} minutes in the future",
            },
        )


def refresh(cfg: Any, *, check_unit: bool) -> list[tuple[str, dict[str, str], float]]:
    """Write neo_db.prom (raises on failure) and raise the future-dated event when the count grows."""
    samples = metrics.collect(cfg, check_unit=check_unit)
    metrics.write_samples(cfg, samples)
    _future_event(cfg, samples)
    return samples


def after_command(argv: Sequence[str], rc: int) -> None:
    try:
        _after(argv, rc)
    finally:
        _outcome.clear()


def _after(argv: Sequence[str], rc: int) -> None:
    if rc == USAGE:  # bad arguments or config: the command did nothing to record
        return
    try:
        from .cli import build_parser  # noqa: PLC0415 (cli imports this module)

        # Parsed again, silently: --help and --version must not print twice.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = build_parser().parse_args(list(argv))
    except (SystemExit, UsageError, Exception):
        return
    command = str(getattr(args, "command", ""))
    if command not in WRITERS:
        return
    try:
        cfg = config_mod.load(config_mod.resolve_path(getattr(args, "config", None)))
    except Exception:  # the command has already reported a bad config
        return
    try:
        changes, events = record(cfg, command, args, rc, int(time.time()))
        if changes:
            metrics.update_state(cfg.state_dir, changes)
        for event in events:
            if notify.enqueue(cfg, event) is not None and event["event"] == "abnormal_stop":
                # The engine's OnFailure= fires for the same run (systemd >= 254 passes through
                # "failed" before an automatic restart): notify --unit reads this and stays quiet.
                notify.record_abnormal_queued(cfg, event.get("session"))
    except Exception as exc:  # never let monitoring change what the command did
        log.warning("metrics: could not record %s (exit %d): %s: %s", command, rc, type(exc).__name__, exc)
    if cfg.metrics_textfile_dir is None:
        return
    try:
        refresh(cfg, check_unit=False)
    except Exception as exc:
        log.warning(
            "metrics: could not write %s/%s: %s: %s (the %s itself is not affected)",
            cfg.metrics_textfile_dir,
            metrics.PROM_NAME,
            type(exc).__name__,
            exc,
            command,
        )
        try:
            metrics.update_state(cfg.state_dir, {"metrics_write_errors_total": 1})
        except Exception as exc2:
            log.warning("metrics: could not count the write error either: %s", exc2)
