"""Notifications without a monitoring stack: a JSON webhook, an ntfy topic, a healthchecks-style ping.

The URLs often carry tokens, so they live in a root-only 0600 YAML file (``notify_secrets_path``)::

    webhook_url: https://hooks.example/T0K3N      # POST, a JSON body
    ntfy_url: https://ntfy.sh/neo-live-1-s3cret   # POST, the text, Title/Priority/Tags headers
    ping_url: https://hc-ping.com/<uuid>          # GET after a good session or drill; POST <url>/fail on a failure

No URL is ever logged or printed: targets are named (webhook, ntfy, ping) and error texts are
scrubbed of every configured URL and its parts. Each attempt has a timeout and the attempts are
bounded (``notify_timeout_seconds`` times ``notify_retries``), so a notifier that is down costs a
bounded time, is logged, and shows in the metrics; it never fails a session (the session hooks
only queue events; a root service sends them).

Events that do not fail a unit are queued by the hooks as files in ``state_dir/notify-queue/``
(the service user cannot read the secrets); ``neo-db-notify-queue.path`` starts
``neo-db notify --queue`` as root, which sends each and removes it. A failed unit starts
``neo-db-notify@<unit>.service`` (``OnFailure=``), which runs ``neo-db notify --unit <unit>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from . import fsutil, metrics, systemd
from .errors import UsageError

log = logging.getLogger(__name__)

TARGET_KEYS = ("webhook_url", "ntfy_url", "ping_url")
QUEUE_DIR = "notify-queue"
QUEUE_MAX = 200
USER_AGENT = "neo-db-notify/1"


class SecretsError(UsageError):
    """The secrets file is missing, unsafe or malformed (exit 2)."""


@dataclasses.dataclass(frozen=True)
class Targets:
    webhook_url: str | None = None
    ntfy_url: str | None = None
    ping_url: str | None = None

    def any(self) -> bool:
        return bool(self.webhook_url or self.ntfy_url or self.ping_url)

    def secrets(self) -> list[str]:
        """Every string that must never be shown: each URL, its path, query and user-info parts."""
        out: list[str] = []
        for url in (self.webhook_url, self.ntfy_url, self.ping_url):
            if not url:
                continue
            out.append(url)
            parts = urllib.parse.urlsplit(url)
            out += [p for p in (parts.path.strip("/"), parts.query, parts.password or "", parts.username or "") if len(p) >= 4]
            out += [seg for seg in parts.path.split("/") if len(seg) >= 8]
        return sorted(set(out), key=len, reverse=True)


def scrub(text: str, targets: Targets) -> str:
    for secret in targets.secrets():
        text = text.replace(secret, "<redacted>")
    return text


def _url_problem(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        return "a http:// or https:// URL, or null"
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c in value for c in "\r\n \t"):
        return "a http:// or https:// URL without spaces or line breaks, or null"
    return None


def load_targets(path: Path) -> Targets:
    """Read the secrets file; refuse one that others could read or write, naming the path and the fix."""
    fix = f"chown root:root {path} && chmod 0600 {path}"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise SecretsError(
            f"notifier secrets file {path} does not exist",
            hint="the neo_monitoring role writes it from neo_monitoring_webhook_url/ntfy_url/ping_url",
        ) from None
    except PermissionError:
        raise SecretsError(f"notifier secrets file {path}: permission denied (it is root-only); run as root") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise SecretsError(f"notifier secrets file {path} is not a regular file (a symlink or a directory); replace it with a file")
    if st.st_uid != 0 or st.st_mode & 0o077:
        raise SecretsError(
            f"notifier secrets file {path} is owner uid {st.st_uid} mode {stat.S_IMODE(st.st_mode):04o}: it holds tokens, so it "
            "must be owned by root with mode 0600",
            hint=fix,
        )
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except PermissionError:
        raise SecretsError(f"notifier secrets file {path}: permission denied (it is root-only); run as root") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        # The YAML error text could quote a token: say only where.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SecretsError(f"notifier secrets file {path} does not parse{where} ({type(exc).__name__})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SecretsError(f"notifier secrets file {path}: expected a mapping with keys {', '.join(TARGET_KEYS)}")
    problems = []
    for key in data:
        if key not in TARGET_KEYS:
            problems.append(f"key {str(key)[:40]!r} is unknown; known keys: {', '.join(TARGET_KEYS)}")
    for key in TARGET_KEYS:
        why = _url_problem(data.get(key))
        if why:
            problems.append(f"key '{key}': the value is not allowed (not shown: it may hold a token); expected {why}")
    if problems:
        raise SecretsError(f"invalid notifier secrets file {path}:\n" + "\n".join(f"  - {p}" for p in problems))
    return Targets(**{k: data.get(k) for k in TARGET_KEYS})


# ---- delivery ----


@dataclasses.dataclass
class Message:
    event: str  # e.g. unit_failed, pre_backup_failed, abnormal_stop, future_dated_backups, test
    title: str
    text: str
    severity: str = "critical"  # critical | warning | info
    ok: bool = False  # a success (ping only)
    unit: str | None = None
    session: str | None = None
    journal: list[str] = dataclasses.field(default_factory=list)
    host: str = dataclasses.field(default_factory=socket.gethostname)
    at: str = dataclasses.field(default_factory=lambda: dt.datetime.now(metrics.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def body_text(self) -> str:
        lines = [self.text, "", f"host: {self.host}", f"unit: {self.unit or '-'}", f"session: {self.session or '-'}", f"at: {self.at}"]
        if self.journal:
            lines += ["", "last journal lines:", *self.journal]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": "neo-db",
            "event": self.event,
            "severity": self.severity,
            "title": self.title,
            "message": self.text,
            "host": self.host,
            "unit": self.unit,
            "session": self.session,
            "at": self.at,
            "journal": self.journal,
        }


_PRIORITY = {"critical": "urgent", "warning": "high", "info": "default"}


def _post(url: str, data: bytes | None, headers: dict[str, str], timeout: float) -> int:
    # http/https only: load_targets checks every URL's scheme.
    req = urllib.request.Request(url, data=data, headers={"User-Agent": USER_AGENT, **headers}, method="POST" if data else "GET")  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        resp.read(1024)
        return int(resp.status)


def _attempts(job: tuple[str, str, bytes | None, dict[str, str]], cfg: Any, targets: Targets) -> tuple[bool, str]:
    name, url, data, headers = job
    last = ""
    for attempt in range(1, cfg.notify_retries + 1):
        try:
            status = _post(url, data, headers, cfg.notify_timeout_seconds)
            return True, f"{name}: HTTP {status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                break  # the request itself is wrong: retrying will not help
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            last = f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
        if attempt < cfg.notify_retries:
            time.sleep(min(2.0, 0.5 * attempt))
    return False, scrub(f"{name}: not delivered after {attempt} attempt(s): {last}", targets)


def send(cfg: Any, targets: Targets, msg: Message) -> dict[str, str]:
    """Deliver to every configured target; returns {target: 'ok ...' or 'FAILED ...'}. Never raises."""
    results: dict[str, str] = {}
    jobs: list[tuple[str, str, bytes | None, dict[str, str]]] = []
    if not msg.ok:
        if targets.webhook_url:
            jobs.append(("webhook", targets.webhook_url, json.dumps(msg.as_json()).encode(), {"Content-Type": "application/json"}))
        if targets.ntfy_url:
            headers = {"Title": msg.title.encode("ascii", "replace").decode(), "Priority": _PRIORITY.get(msg.severity, "default")}
            headers["Tags"] = {"critical": "rotating_light", "warning": "warning"}.get(msg.severity, "white_check_mark")
            jobs.append(("ntfy", targets.ntfy_url, msg.body_text().encode(), headers))
    success = msg.ok or msg.event == "test"
    if targets.ping_url and (success or msg.severity == "critical"):
        url = targets.ping_url if success else targets.ping_url.rstrip("/") + "/fail"
        jobs.append(("ping", url, None if success else msg.body_text().encode()[:10000], {"Content-Type": "text/plain"}))
    now = int(time.time())
    failures = 0
    for name, url, data, headers in jobs:
        ok, detail = _attempts((name, url, data, headers), cfg, targets)
        results[name] = ("ok " if ok else "FAILED ") + detail
        if ok:
            log.info("notify %s (%s): delivered to %s", msg.event, msg.title, detail)
        else:
            failures += 1
            log.error("notify %s (%s): %s", msg.event, msg.title, detail)
    change: dict[str, Any] = {}
    if failures:
        change = {"notify": {"last_failure": now}, "notify_failures_total": failures}
    if len(jobs) > failures:
        change.setdefault("notify", {})["last_success"] = now
    if change:
        try:
            metrics.update_state(cfg.state_dir, change)
        except OSError as exc:
            log.warning("notify: could not record the delivery in the metrics state: %s", exc)
    return results


# ---- the queue (hooks -> root service) ----


def queue_dir(cfg: Any) -> Path:
    return Path(cfg.state_dir) / QUEUE_DIR


def enqueue(cfg: Any, event: dict[str, Any]) -> Path | None:
    """Queue an event for the root notifier; never raises (a session must not fail for it)."""
    if cfg.notify_secrets_path is None:
        return None
    try:
        directory = queue_dir(cfg)
        fsutil.ensure_real_dir(directory, mode=0o750)
        if os.geteuid() == 0:  # root ran a command by hand: the service user's hooks must still queue here
            owner = os.stat(cfg.state_dir)
            os.chown(directory, owner.st_uid, owner.st_gid)
        names = sorted(p for p in os.listdir(directory) if p.endswith(".json") and not p.startswith("."))
        for old in names[: max(0, len(names) - QUEUE_MAX + 1)]:
            log.warning("notify queue full: dropping the oldest event %s", old)
            fsutil.remove_quietly(directory / old)
        stamp = dt.datetime.now(metrics.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = directory / f"{stamp}-{uuid.uuid4().hex[:8]}.json"
        fsutil.write_json_atomic(final, {**event, "host": socket.gethostname(), "queued_at": stamp}, mode=0o640)
        return final
    except Exception as exc:  # the queue is best effort: log and carry on
        log.warning("notify: could not queue the %s event: %s", event.get("event"), exc)
        return None


def drain(cfg: Any, targets: Targets) -> int:
    """Send every queued event once, oldest first, and remove it. Returns how many were sent."""
    directory = queue_dir(cfg)
    try:
        names = sorted(p for p in os.listdir(directory) if p.endswith(".json") and not p.startswith("."))
    except FileNotFoundError:
        return 0
    sent = 0
    for name in names:
        path = directory / name
        try:
            doc = fsutil.read_json(path)
        except (OSError, ValueError) as exc:
            log.warning("notify: dropping unreadable queued event %s: %s", path, exc)
            fsutil.remove_quietly(path)
            continue
        # Removed before sending: an event is notified at most once, even if this run is killed mid-way.
        fsutil.remove_quietly(path)
        if isinstance(doc, dict):
            send(cfg, targets, message_from_event(cfg, doc))
            sent += 1
    return sent


def message_from_event(cfg: Any, doc: dict[str, Any]) -> Message:
    event = str(doc.get("event", "unknown"))
    session = doc.get("session")
    detail = str(doc.get("detail") or "")
    unit = doc.get("unit") or f"{cfg.engine_unit}.service"
    journal = journal_lines(str(unit), cfg.notify_journal_lines) if event not in ("session_ok", "drill_ok") else []
    if event == "pre_backup_failed":
        return Message(
            event,
            f"NEO pre-session backup FAILED, session {session} started anyway",
            f"The pre-session backup of session {session} failed and the session was not blocked: {detail}. "
            "Free space on the backup disk, then take one with 'neo-db backup --phase manual'.",
            "critical",
            unit=unit,
            session=session,
            journal=journal,
        )
    if event == "abnormal_stop":
        return Message(
            event,
            f"NEO engine stopped abnormally (session {session})",
            f"Session {session} stopped abnormally: {detail}. Its files were preserved in abnormal_stop/; "
            "see 'neo-db health --session " + str(session) + "'.",
            "critical",
            unit=unit,
            session=session,
            journal=journal,
        )
    if event == "future_dated_backups":
        return Message(
            event,
            "NEO backups with a future date",
            f"{detail}. Check the clock (timedatectl) and the names in 'neo-db list'; retention keeps them and they hide freshness.",
            "warning",
            unit=unit,
            journal=journal,
        )
    if event == "session_ok":
        title = f"NEO session {session} closed cleanly"
        return Message(event, title, detail or "post-session backup verified", "info", ok=True, session=session)
    if event == "drill_ok":
        return Message(event, "NEO restore drill passed", detail or "drill passed", "info", ok=True, unit="neo-db-drill.service")
    return Message(event, f"NEO event {event}", detail, "warning", unit=unit, session=session, journal=journal)


# ---- a failed unit ----


def journal_lines(unit: str, n: int) -> list[str]:
    if n <= 0 or shutil.which("journalctl") is None:
        return []
    try:
        proc = subprocess.run(
            ["journalctl", "-u", unit, "-n", str(n), "--no-pager", "-o", "short-iso", "-q"],
            check=False,
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line[:500] for line in proc.stdout.splitlines()[-n:]]


def _unit_props(unit: str) -> dict[str, str]:
    if shutil.which("systemctl") is None:
        return {}
    try:
        return systemd.show(unit, "Result", "ExecMainStatus", "ExecMainCode", "ActiveState", "Description", "InvocationID")
    except systemd.SystemdError:
        return {}  # the failure is still sent, its result "unknown"; nothing is held back as "already queued"


def _latest_session(cfg: Any) -> tuple[str | None, str]:
    """The session the engine was starting or running (else the newest), and what went wrong with its start."""
    name = None
    with contextlib.suppress(OSError, ValueError):
        doc = fsutil.read_json(Path(cfg.state_dir) / "current_session.json")
        if isinstance(doc, dict) and doc.get("session"):
            name = str(doc["session"])
    sessions = Path(cfg.exports_dir) / "sessions"
    if name is None:
        with contextlib.suppress(OSError, ValueError):
            name = max(
                (p for p in sessions.iterdir() if (p / "db_health.json").is_file()),
                key=lambda p: (p / "db_health.json").stat().st_mtime,
            ).name
    what = ""
    with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
        block = fsutil.read_json(sessions / str(name) / "db_health.json")["db_health"]
        attempts = block.get("start_attempts") or []
        if attempts and attempts[-1].get("result") == "refused":
            what = f"The start was refused: {attempts[-1].get('reason')}"
    return name, what


ABNORMAL_QUEUED_KEY = "abnormal_stop_queued"  # metrics state: {session, invocation} of the last queued abnormal stop
# The unit results of a run that died and that Restart=on-abnormal (the default) restarts: the
# stop hook's abnormal_stop message says it all. An engine that exited non-zero by itself
# (exit-code) is not restarted and stays down: that failure is sent too, as are start-limit-hit,
# resources and the like (a unit that could not run at all).
DIED_RESULTS = frozenset({"signal", "core-dump", "watchdog", "timeout", "oom-kill"})


def _invocation(value: object) -> str:
    return str(value or "").replace("-", "").strip().lower()


def record_abnormal_queued(cfg: Any, session: object) -> None:
    """Called by the stop hook once its abnormal_stop event is queued: which run of the unit it was.

    systemd sets $INVOCATION_ID for ExecStopPost=; a hook run by hand has none, and nothing is
    recorded (its unit failure, if any, is then sent)."""
    invocation = _invocation(os.environ.get("INVOCATION_ID"))
    if not invocation:
        return
    metrics.update_state(cfg.state_dir, {ABNORMAL_QUEUED_KEY: {"session": session, "invocation": invocation}})


def already_reported(cfg: Any, unit: str) -> str | None:
    """The session whose abnormal stop is this engine failure, if its stop hook already queued it.

    One SIGKILL must make one message: session-stop (ExecStopPost=) queues ``abnormal_stop`` with
    the session and its preserved files, and on systemd >= 254 the same run also starts
    ``OnFailure=``. Quiet only when the failure is that very run (its InvocationID) and it
    died; a refused start, a crash loop's start-limit-hit, a newer run, a stop hook that
    could not queue or ran without systemd: each is sent."""
    if unit not in (cfg.engine_unit, f"{cfg.engine_unit}.service"):
        return None
    record = metrics.load_state(cfg.state_dir).get(ABNORMAL_QUEUED_KEY)
    if not isinstance(record, dict) or not _invocation(record.get("invocation")):
        return None
    # An OnFailure= service gets the failed run from systemd (>= 251); by hand, ask systemd.
    failed_run, result = _invocation(os.environ.get("MONITOR_INVOCATION_ID")), os.environ.get("MONITOR_SERVICE_RESULT")
    if not failed_run:
        props = _unit_props(unit)
        failed_run, result = _invocation(props.get("InvocationID")), props.get("Result")
    if failed_run != _invocation(record.get("invocation")) or result not in DIED_RESULTS:
        return None
    return str(record.get("session"))


def unit_failure_message(cfg: Any, unit: str) -> Message:
    props = _unit_props(unit)
    result = props.get("Result") or "unknown"
    status = props.get("ExecMainStatus") or "-"
    desc = props.get("Description") or unit
    engine = unit in (cfg.engine_unit, f"{cfg.engine_unit}.service")
    session, what = _latest_session(cfg) if engine else (None, "")
    text = f"{unit} ({desc}) failed: result {result}, main status {status}."
    if what:
        text += f" {what}"
    return Message(
        "unit_failed",
        f"{unit} failed on {socket.gethostname()}",
        text,
        "critical",
        unit=unit,
        session=session,
        journal=journal_lines(unit, cfg.notify_journal_lines),
    )


def require_targets(cfg: Any) -> Targets:
    if cfg.notify_secrets_path is None:
        raise UsageError(
            "no notifier is configured: notify_secrets_path is null in the config",
            hint="set neo_monitoring_webhook_url, neo_monitoring_ntfy_url or neo_monitoring_ping_url and run site.yml --tags monitoring",
        )
    targets = load_targets(Path(cfg.notify_secrets_path))
    if not targets.any():
        raise UsageError(f"the notifier secrets file {cfg.notify_secrets_path} names no webhook_url, ntfy_url or ping_url")
    return targets


def test_message() -> Message:
    host = socket.gethostname()
    return Message("test", f"neo-db test notification from {host}", "This is a test from 'neo-db notify --test'.", "warning")
