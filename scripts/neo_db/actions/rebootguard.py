"""``neo-db reboot-guard``: reboot for a pending update only between sessions, inside the window.

Run by neo-host-reboot-guard.timer (the neo_host role) as root. One run is one decision:

  none            /var/run/reboot-required is absent: nothing to do
  outside_window  a reboot is pending, but now (UTC) is outside the maintenance window: wait
  session_open    an engine session is starting or open (state_dir/current_session.json): wait
  engine_active   the engine unit is running (phases layout) though no session is recorded: wait
  busy            another neo-db run (a backup, a restore) holds state_dir/neo-db.lock: wait
  rebooting       the reboot command ran and succeeded
  reboot_failed   the reboot command failed (exit 1)

Waiting is not a failure (exit 0): the timer retries. The decision goes to the journal (stderr)
and to ``<metrics_textfile_dir>/neo_host.prom`` (neo_host_reboot_required, the decision).

The reboot command runs while the guard holds neo-db.lock, so no session can start between the
decision and the command. The lock file is opened read-only and never created: root must not
create a file the service user then cannot open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import metrics, systemd
from ..config import Config
from ..core import sessions
from ..errors import UsageError

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
PROM_NAME = "neo_host.prom"
DEFAULT_FLAG = Path("/var/run/reboot-required")
DEFAULT_COMMAND = "systemctl reboot"
DECISIONS = ("none", "outside_window", "session_open", "engine_active", "busy", "rebooting", "reboot_failed")
_WINDOW_RE = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")
# ActiveState= words (systemd.unit(5)): only these two let a reboot go; one not listed is an unread state.
_IDLE_STATES = ("inactive", "failed")
_BUSY_STATES = ("active", "activating", "deactivating", "reloading", "refreshing", "maintenance")


@dataclasses.dataclass(frozen=True)
class Window:
    """A daily window in UTC, [start, end) in minutes of the day; it may wrap past midnight."""

    start: int
    end: int
    text: str

    def contains(self, moment: dt.datetime) -> bool:
        minute = moment.hour * 60 + moment.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def parse_window(text: str) -> Window:
    m = _WINDOW_RE.match(text)
    start = end = -1
    if m:
        start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    if not m or start > 24 * 60 or end > 24 * 60 or start == end:
        raise UsageError(
            f"--window {text!r}: expected HH:MM-HH:MM in UTC, start and end different (e.g. 02:00-05:00; 23:00-02:00 wraps past midnight)",
            hint="set neo_host_reboot_window to a window such as 02:00-05:00",
        )
    return Window(start % (24 * 60), end if end == 24 * 60 else end % (24 * 60), text)


def parse_command(text: str) -> list[str]:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"--reboot-command {text!r}: {exc}", hint="e.g. 'systemctl reboot'") from None
    if not argv:
        raise UsageError("--reboot-command is empty", hint="e.g. 'systemctl reboot'")
    return argv


@contextlib.contextmanager
def _try_state_lock(cfg: Config) -> Iterator[bool]:
    """Yields False if another neo-db run holds state_dir/neo-db.lock. A missing lock file means no
    neo-db run has ever taken it: nothing to wait for (and root does not create it)."""
    lock = Path(cfg.state_dir) / "neo-db.lock"
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _session_open(cfg: Config) -> str | None:
    """Why a session counts as open, or None."""
    current = sessions.load_current(cfg)
    if current is None:
        return None
    return (
        f"session {current.get('session') or '(unknown ID)'} is {current.get('state')} "
        f"({sessions.current_path(cfg)}{'; ' + current['problem'] if current.get('problem') else ''})"
    )


def _engine_state(cfg: Config) -> str | None:
    if cfg.layout != "phases" or not systemd.running():
        return None
    try:
        state = systemd.show_value(systemd.full_name(cfg.engine_unit), "ActiveState")
    except systemd.SystemdError as exc:
        # Fail closed: an engine whose state cannot be read may be mid-session.
        return f"of unknown state ({exc})"
    if state in _IDLE_STATES:
        return None
    return state if state in _BUSY_STATES else f"of unknown state (ActiveState={state!r})"


def _pending_since(flag: Path) -> int | None:
    try:
        return int(flag.stat().st_mtime)
    except FileNotFoundError:
        return None


def render(required: bool, since: int | None, decision: str, now: dt.datetime) -> str:
    lines = [
        "# HELP neo_host_reboot_required 1 while /var/run/reboot-required exists (a reboot is pending).",
        "# TYPE neo_host_reboot_required gauge",
        f"neo_host_reboot_required {1 if required else 0}",
        "# HELP neo_host_reboot_required_since_timestamp_seconds mtime of /var/run/reboot-required (0: no reboot pending).",
        "# TYPE neo_host_reboot_required_since_timestamp_seconds gauge",
        f"neo_host_reboot_required_since_timestamp_seconds {since or 0}",
        "# HELP neo_host_reboot_guard_last_decision The reboot guard's last decision: 1 for it, 0 for the others.",
        "# TYPE neo_host_reboot_guard_last_decision gauge",
        *(f'neo_host_reboot_guard_last_decision{{decision="{d}"}} {1 if d == decision else 0}' for d in DECISIONS),
        "# HELP neo_host_reboot_guard_last_run_timestamp_seconds When the reboot guard last decided.",
        "# TYPE neo_host_reboot_guard_last_run_timestamp_seconds gauge",
        f"neo_host_reboot_guard_last_run_timestamp_seconds {int(now.timestamp())}",
    ]
    return "\n".join(lines) + "\n"


def _write_metrics(cfg: Config, text: str) -> None:
    """Best effort, like neo_db.prom: a metrics problem never changes the decision."""
    if cfg.metrics_textfile_dir is None:
        return
    final = Path(cfg.metrics_textfile_dir) / PROM_NAME
    try:
        metrics.write_shared(final, text.encode("utf-8"))
    except OSError as exc:
        log.warning("reboot-guard: cannot write %s: %s", final, exc.strerror or exc)


def run(cfg: Config, window: Window, flag: Path, command: list[str], *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Decide, act, record. Returns {"decision", "reason", ...}."""
    moment = now or dt.datetime.now(UTC)
    since = _pending_since(flag)
    doc: dict[str, Any] = {
        "reboot_required": since is not None,
        "reboot_required_file": str(flag),
        "window_utc": window.text,
        "now_utc": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }

    def decide(decision: str, reason: str) -> dict[str, Any]:
        doc.update(decision=decision, reason=reason)
        _write_metrics(cfg, render(since is not None, since, decision, moment))
        return doc

    if since is None:
        return decide("none", f"no reboot pending ({flag} is absent)")
    if not window.contains(moment):
        return decide("outside_window", f"reboot pending, waiting: {moment:%H:%M} UTC is outside the maintenance window {window.text} UTC")
    with _try_state_lock(cfg) as free:
        if not free:
            return decide("busy", f"reboot pending, waiting: another neo-db run holds {cfg.state_dir}/neo-db.lock")
        why = _session_open(cfg)
        if why is not None:
            return decide("session_open", f"reboot pending, waiting: {why}; the next run after the session closes reboots")
        state = _engine_state(cfg)
        if state is not None:
            return decide("engine_active", f"reboot pending, waiting: {systemd.full_name(cfg.engine_unit)} is {state}")
        doc["command"] = command
        # Recorded first: a successful reboot command may not return before the box goes down.
        _write_metrics(cfg, render(True, since, "rebooting", moment))
        log.warning("reboot pending and no session open inside the window %s UTC: running %s", window.text, shlex.join(command))
        try:
            proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
        except OSError as exc:
            what = os.strerror(exc.errno) if exc.errno else str(exc)
            hint = " (check neo_host_reboot_command)" if exc.errno in (errno.ENOENT, errno.EACCES) else ""
            return decide("reboot_failed", f"cannot run {shlex.join(command)}: {what}{hint}")
        except subprocess.TimeoutExpired:
            return decide("reboot_failed", f"{shlex.join(command)} did not return within 120 s")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            said = " / ".join(tail) or "no output"
            return decide("reboot_failed", f"{shlex.join(command)} failed with exit status {proc.returncode}: {said}")
        return decide("rebooting", f"ran {shlex.join(command)}")
