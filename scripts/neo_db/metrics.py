"""Prometheus metrics for node_exporter's textfile collector: ``<metrics_textfile_dir>/neo_db.prom``.

Every neo-db command that changes something (hooks, backup, prune, drill, snapshot, restore)
and ``neo-db metrics`` (a timer, every 5 minutes) rewrite the file atomically: a ``.tmp-``
file in the same directory, fsynced, then renamed (node_exporter reads only ``*.prom``).

What the file system does not say by itself (when the gate last ran and its exit code, when
a backup of a phase last failed, the last session start and stop) is kept in
``state_dir/metrics_state.json``, updated by ``cli.main`` after each command.

Writing metrics never fails or blocks the command it follows: every error is logged,
counted in the state (``neo_db_metrics_write_errors_total``) and swallowed.
"""

from __future__ import annotations

import configparser
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import catalog, fsutil, systemd

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
PROM_NAME = "neo_db.prom"
STATE_NAME = "metrics_state.json"
LOCK_NAME = "metrics.lock"
# A backup whose name is more than this far in the future is suspect (a wrong clock when it was
# named): retention keeps it forever and it hides real freshness.
FUTURE_SLACK_SECONDS = 300
STATUSES = ("verified", "failed", "incomplete")
# The series neo-db writes: name -> (type, help). The order is the file's order.
SERIES: dict[str, tuple[str, str]] = {
    "neo_db_backup_last_success_timestamp_seconds": ("gauge", "Creation time of the newest verified backup of the phase (0: none)."),
    "neo_db_backup_last_failure_timestamp_seconds": ("gauge", "Time the last backup of the phase failed (0: never)."),
    "neo_db_backups": ("gauge", "Backups on disk, by phase and status (verified, failed integrity_check, incomplete)."),
    "neo_db_backup_bytes": ("gauge", "Bytes used by the backups of the phase."),
    "neo_db_backup_filesystem_avail_bytes": ("gauge", "Bytes available to unprivileged users on the filesystem holding the backups."),
    "neo_db_backup_filesystem_size_bytes": ("gauge", "Size of the filesystem holding the backups."),
    "neo_db_future_dated_backups": ("gauge", "Backups whose name is more than 5 minutes in the future (a wrong clock)."),
    "neo_db_snapshot_last_success_timestamp_seconds": (
        "gauge",
        "Snapshots layout: creation time of the newest verified snapshot (0: none).",
    ),
    "neo_db_snapshots": ("gauge", "Snapshots layout: snapshot directories on disk, by status."),
    "neo_db_gate_last_run_timestamp_seconds": ("gauge", "When the session gate (session-start or check) last ran (0: never)."),
    "neo_db_gate_last_exit_code": ("gauge", "Exit code of the last gate run: 0 pass, 3 integrity, 4 network FS, 5 in use, 6 missing."),
    "neo_db_session_open": ("gauge", "1 while an engine session is open."),
    "neo_db_session_last_start_timestamp_seconds": ("gauge", "When the last session opened (0: never)."),
    "neo_db_session_last_stop_timestamp_seconds": ("gauge", "When the last session stopped (0: never)."),
    "neo_db_session_last_stop_abnormal": ("gauge", "1 if the last session stop was abnormal (signal, timeout, non-clean exit status)."),
    "neo_db_drill_last_run_timestamp_seconds": ("gauge", "When the restore drill last ran (0: never)."),
    "neo_db_drill_last_success_timestamp_seconds": ("gauge", "When the restore drill last passed (0: never)."),
    "neo_db_drill_last_result": ("gauge", "The last drill's outcome: 1 pass, 0 fail (absent: never run)."),
    "neo_db_live_db_bytes": ("gauge", "Size of the live DB file (0: missing)."),
    "neo_db_wal_bytes": ("gauge", "Size of the live DB's -wal file (0: none)."),
    "neo_db_hetzner_backups_enabled": ("gauge", "1 if the hetzner_backups role recorded backups as enabled, else 0."),
    "neo_db_engine_unit_failed": ("gauge", "1 if systemd reports the engine unit as failed."),
    "neo_db_notify_last_success_timestamp_seconds": ("gauge", "When a notification or ping was last delivered (0: never)."),
    "neo_db_notify_last_failure_timestamp_seconds": ("gauge", "When a notification or ping last failed to deliver (0: never)."),
    "neo_db_notify_failures_total": ("counter", "Notifications or pings that could not be delivered after their retries."),
    "neo_db_metrics_write_errors_total": ("counter", "Times neo-db could not write this file (logged in the journal)."),
    "neo_db_metrics_last_write_timestamp_seconds": ("gauge", "When neo-db last wrote this file."),
}


def _ts(value: dt.datetime) -> int:
    return int(value.timestamp())


def parse_iso(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def write_shared(final: Path, data: bytes) -> None:
    """Crash-safe write of a file others must read (0644 whatever the umask: the hooks run with
    UMask=0027, node_exporter and root or the service user read it): a .tmp- file in the same
    directory, fsynced, renamed, the directory fsynced."""
    tmp = fsutil.tmp_path_for(final)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        fsutil.remove_quietly(tmp)
        raise
    fsutil.fsync_dir(final.parent)


# ---- persisted state ----


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_NAME


def load_state(state_dir: Path) -> dict[str, Any]:
    try:
        doc = fsutil.read_json(state_path(state_dir))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


@contextlib.contextmanager
def _state_lock(state_dir: Path, wait: float = 5.0) -> Iterator[bool]:
    """A short flock of its own (never the state lock a session holds); yields whether it was taken.

    Opened read-only with mode 0644, so root (restore) and the service user share it."""
    fd = -1
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o644)  # whatever the umask: root and the service user share it
    except OSError as exc:
        log.warning("metrics: cannot open %s: %s", state_dir / LOCK_NAME, exc.strerror)
        yield False
        return
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning("metrics: %s is held by another run; state not updated this time", state_dir / LOCK_NAME)
                    yield False
                    return
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)


def update_state(state_dir: Path, changes: dict[str, Any]) -> None:
    """Merge `changes` into the metrics state (nested dicts merge one level deep). Raises OSError."""
    with _state_lock(state_dir) as locked:
        if not locked:
            log.warning("metrics: not recorded (%s)", ", ".join(sorted(changes)))  # _state_lock said why
            return
        doc = load_state(state_dir)
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(doc.get(key), dict):
                doc[key] = {**doc[key], **value}
            elif key.endswith("_total") and isinstance(value, int):
                doc[key] = int(doc.get(key) or 0) + value
            else:
                doc[key] = value
        # 0644: the service user and root both read it; state_dir itself is 0750.
        write_shared(state_path(state_dir), (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


# ---- collection ----


def _section(state: dict[str, Any], key: str) -> dict[str, Any]:
    value = state.get(key)
    return value if isinstance(value, dict) else {}


def _backup_series(cfg: Any, now: dt.datetime, out: list[tuple[str, dict[str, str], float]], state: dict[str, Any]) -> None:
    phases = ["timed"] if cfg.layout == "snapshots" else ["pre", "post", "abnormal", "manual"]
    entries = catalog.entries(cfg, phases)
    failures = _section(state, "backup_last_failure")
    future = 0
    for phase in phases:
        mine = [e for e in entries if e.phase == phase and e.session != "quarantine"]
        counts = dict.fromkeys(STATUSES, 0)
        newest_ok = 0
        size = 0
        for e in mine:
            status = e.status
            key = "verified" if status == "verified" else "failed" if status == "FAILED check" else "incomplete"
            counts[key] += 1
            size += e.size
            if e.age_seconds(now) < -FUTURE_SLACK_SECONDS:
                future += 1
            elif key == "verified":
                newest_ok = max(newest_ok, _ts(e.created))
        labels = {"phase": phase}
        out.append(("neo_db_backup_last_success_timestamp_seconds", labels, newest_ok))
        out.append(("neo_db_backup_last_failure_timestamp_seconds", labels, float(failures.get(phase) or 0)))
        for status in STATUSES:
            out.append(("neo_db_backups", {"phase": phase, "status": status}, counts[status]))
        out.append(("neo_db_backup_bytes", labels, size))
        if phase == "timed":
            out.append(("neo_db_snapshot_last_success_timestamp_seconds", {}, newest_ok))
            for status in STATUSES:
                out.append(("neo_db_snapshots", {"status": status}, counts[status]))
    out.append(("neo_db_future_dated_backups", {}, future))
    seen: set[int] = set()
    for directory in [cfg.backup_dir, *(catalog.phase_dir(cfg, p) for p in phases)]:
        try:
            st = os.stat(directory)
            vfs = os.statvfs(directory)
        except OSError:
            continue
        if st.st_dev in seen:
            continue
        seen.add(st.st_dev)
        labels = {"path": str(directory)}
        out.append(("neo_db_backup_filesystem_avail_bytes", labels, vfs.f_bavail * vfs.f_frsize))
        out.append(("neo_db_backup_filesystem_size_bytes", labels, vfs.f_blocks * vfs.f_frsize))


def _session_series(cfg: Any, out: list[tuple[str, dict[str, str], float]], state: dict[str, Any]) -> None:
    current = None
    with contextlib.suppress(OSError, ValueError):
        current = fsutil.read_json(cfg.state_dir / "current_session.json")
    is_open = isinstance(current, dict) and current.get("state") == "open"
    session = _section(state, "session")
    out.append(("neo_db_session_open", {}, 1 if is_open else 0))
    out.append(("neo_db_session_last_start_timestamp_seconds", {}, float(session.get("last_start") or 0)))
    out.append(("neo_db_session_last_stop_timestamp_seconds", {}, float(session.get("last_stop") or 0)))
    out.append(("neo_db_session_last_stop_abnormal", {}, 1 if session.get("last_stop_abnormal") else 0))


def _drill_series(cfg: Any, out: list[tuple[str, dict[str, str], float]], state: dict[str, Any]) -> None:
    last = None
    with contextlib.suppress(OSError, ValueError):
        last = fsutil.read_json(cfg.state_dir / "last_drill.json")
    at = parse_iso(last.get("at")) if isinstance(last, dict) else None
    success = float(state.get("drill_last_success") or 0)
    if at is not None and isinstance(last, dict):
        if last.get("result") == "pass":
            success = max(success, _ts(at))
        out.append(("neo_db_drill_last_run_timestamp_seconds", {}, _ts(at)))
        out.append(("neo_db_drill_last_result", {}, 1 if last.get("result") == "pass" else 0))
    else:
        out.append(("neo_db_drill_last_run_timestamp_seconds", {}, 0))
    out.append(("neo_db_drill_last_success_timestamp_seconds", {}, success))


def _hetzner_enabled(path: Path) -> int:
    cp = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as fh:
            cp.read_file(fh)
        b = cp["backups"]
    except (OSError, configparser.Error, KeyError):
        return 0
    return 1 if b.get("enabled") == "true" and bool(b.get("backup_window")) else 0


# systemd's ActiveState= words (systemd.unit(5); "refreshing" since 257).
_ACTIVE_STATES = frozenset({"active", "reloading", "inactive", "failed", "activating", "deactivating", "maintenance", "refreshing"})


def _unit_failed(unit: str) -> int | None:
    if not systemd.running():
        return None
    try:
        props = systemd.show(systemd.full_name(unit), "ActiveState", "LoadState")
    except systemd.SystemdError:
        return None  # no series: neo_db_metrics_last_write says the rest is fresh, not this
    if props.get("LoadState") != "loaded" or props.get("ActiveState") not in _ACTIVE_STATES:
        return None  # a state word systemd never prints is not a 0 "not failed"
    return 1 if props.get("ActiveState") == "failed" else 0


def collect(cfg: Any, *, now: dt.datetime | None = None, check_unit: bool = True) -> list[tuple[str, dict[str, str], float]]:
    """Every series as (name, labels, value)."""
    moment = now or dt.datetime.now(UTC)
    state = load_state(cfg.state_dir)
    out: list[tuple[str, dict[str, str], float]] = []
    _backup_series(cfg, moment, out, state)
    gate = _section(state, "gate")
    out.append(("neo_db_gate_last_run_timestamp_seconds", {}, float(gate.get("last_run") or 0)))
    if isinstance(gate.get("last_exit_code"), int):
        out.append(("neo_db_gate_last_exit_code", {}, gate["last_exit_code"]))
    if cfg.layout == "phases":
        _session_series(cfg, out, state)
    _drill_series(cfg, out, state)
    for name, path in (("neo_db_live_db_bytes", cfg.db_path), ("neo_db_wal_bytes", Path(f"{cfg.db_path}-wal"))):
        try:
            out.append((name, {}, os.stat(path).st_size))
        except OSError:
            out.append((name, {}, 0))
    if cfg.hetzner_fact_path is not None:
        out.append(("neo_db_hetzner_backups_enabled", {}, _hetzner_enabled(cfg.hetzner_fact_path)))
    if check_unit:
        failed = _unit_failed(cfg.engine_unit)
        if failed is not None:
            out.append(("neo_db_engine_unit_failed", {"unit": f"{cfg.engine_unit}.service"}, failed))
    notify = _section(state, "notify")
    out.append(("neo_db_notify_last_success_timestamp_seconds", {}, float(notify.get("last_success") or 0)))
    out.append(("neo_db_notify_last_failure_timestamp_seconds", {}, float(notify.get("last_failure") or 0)))
    out.append(("neo_db_notify_failures_total", {}, int(state.get("notify_failures_total") or 0)))
    out.append(("neo_db_metrics_write_errors_total", {}, int(state.get("metrics_write_errors_total") or 0)))
    out.append(("neo_db_metrics_last_write_timestamp_seconds", {}, _ts(moment)))
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(samples: list[tuple[str, dict[str, str], float]]) -> str:
    """The text exposition format: HELP and TYPE once per family, families in SERIES order."""
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for name, labels, value in samples:
        if name not in SERIES:
            raise ValueError(f"undeclared series {name}")
        by_name.setdefault(name, []).append((labels, value))
    lines = []
    for name, (kind, help_) in SERIES.items():
        if name not in by_name:
            continue
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in by_name[name]:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def write_samples(cfg: Any, samples: list[tuple[str, dict[str, str], float]]) -> Path:
    """Render and write the textfile atomically (a .tmp- file in the same directory, then a rename)."""
    if cfg.metrics_textfile_dir is None:
        raise ValueError("metrics_textfile_dir is null")
    final = Path(cfg.metrics_textfile_dir) / PROM_NAME
    write_shared(final, render(samples).encode("utf-8"))  # node_exporter runs as its own user
    return final
