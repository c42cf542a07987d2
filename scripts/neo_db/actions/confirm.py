"""`neo-db confirm`: the pre-first-VPS-run confirmation (FLAG-023 §8), checked on the host itself.

Each item is PASS or FAIL with its evidence:
  1. the integrity checks are wired (the unit's ExecStartPre, and a gate dry run on a copy);
  2. the pre/post backups are wired (ExecStartPre, ExecStopPost, phase dirs writable by the service user);
  3. the backup paths are verified (exist, real dirs, owner and mode, local filesystem);
  4. retention is defined (the policy, and what a prune would keep now);
  5. Hetzner backups are on (the fact the hetzner_backups role recorded);
  6. the last restore drill passed, recently.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import pwd
import sqlite3
import stat
import tempfile
from pathlib import Path
from typing import Any

from .. import catalog, fsutil, sqlitedb, systemd
from ..config import Config
from . import drill, monitoring_checks, prune


@dataclasses.dataclass
class Item:
    name: str
    ok: bool
    evidence: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"item": self.name, "result": "PASS" if self.ok else "FAIL", "evidence": self.evidence}


def _has(cmds: list[str], needle: str) -> bool:
    return any(needle in c for c in cmds)


def _gate_dry_run(cfg: Config) -> tuple[bool, str]:
    """Run the structural and integrity gates on a copy: of the live DB, else the newest verified backup, else a sample."""
    with tempfile.TemporaryDirectory(prefix="neo-db-confirm-") as tmp:
        copy = Path(tmp) / "gate-dry-run.db"
        fsutil.create_exclusive(copy)
        if cfg.db_path.is_file():
            source = f"a copy of the live DB {cfg.db_path}"
            try:
                sqlitedb.backup_copy(cfg.db_path, copy)
            except sqlitedb.CopyError as exc:
                return False, f"could not copy {cfg.db_path}: {exc}"
        else:
            verified = [e for e in catalog.entries(cfg) if e.verified and e.db is not None]
            if verified:
                newest = max(verified, key=lambda e: e.created)
                assert newest.db is not None
                source = f"a copy of {newest.base} (no live DB yet)"
                fsutil.remove_quietly(copy)
                fsutil.copy_raw(newest.db, copy)
            else:
                source = "a sample DB (no live DB or backup yet)"
                conn = sqlite3.connect(copy)
                conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
                conn.commit()
                conn.close()
        problems = sqlitedb.structural_problems(copy)
        result = problems or sqlitedb.check_file(copy, cfg.integrity_max_errors)
    ok = result == ["ok"]
    return ok, f"gate dry run on {source}: {'ok' if ok else '; '.join(result[:3])}"


def _dir_facts(path: Path, user: str | None) -> tuple[bool, str]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False, f"{path}: missing"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return False, f"{path}: not a real directory"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    mode = stat.S_IMODE(st.st_mode)
    problems = []
    if user and owner != user:
        problems.append(f"owned by {owner}, expected {user}")
    if not mode & 0o200:
        problems.append("not writable by its owner")
    if mode & 0o007:
        problems.append("readable or writable by others")
    return not problems, f"{path}: {owner} {mode:04o}" + (f" ({'; '.join(problems)})" if problems else "")


def _hetzner(cfg: Config) -> Item:
    name = "Hetzner backups are on"
    if cfg.hetzner_fact_path is None:
        return Item(name, False, ["hetzner_fact_path is null: nothing records the Hetzner backup state"])
    cp = configparser.ConfigParser()
    try:
        with open(cfg.hetzner_fact_path, encoding="utf-8") as fh:
            cp.read_file(fh)
        b = cp["backups"]
    except (OSError, configparser.Error, KeyError) as exc:
        return Item(name, False, [f"{cfg.hetzner_fact_path}: not readable ({exc}); run site.yml --tags hetzner"])
    ok = b.get("enabled") == "true" and bool(b.get("backup_window"))
    return Item(
        name, ok, [f"{cfg.hetzner_fact_path}: server {b.get('server')} enabled={b.get('enabled')} window={b.get('backup_window') or '-'}"]
    )


def _drill(cfg: Config) -> Item:
    name = "the last restore drill passed"
    doc = drill.last(cfg)
    if doc is None:
        return Item(name, False, [f"no drill recorded in {drill.result_path(cfg)}; run 'neo-db drill'"])
    age = doc.get("age_seconds")
    fresh = isinstance(age, int) and age <= cfg.drill_max_age_days * 86400
    phases = ", ".join(f"{p}: {d['result']}" for p, d in doc.get("phases", {}).items())
    evidence = [f"last drill {doc.get('at')}: {doc.get('result')} ({phases})"]
    if not fresh:
        evidence.append(f"older than drill_max_age_days ({cfg.drill_max_age_days})")
    return Item(name, doc.get("result") == "pass" and fresh, evidence)


def _timer_enabled(cfg: Config) -> tuple[bool, str]:
    wants = cfg.unit_dir / "timers.target.wants" / cfg.backup_timer
    enabled = wants.exists()
    return enabled, f"{cfg.backup_timer}: {'enabled' if enabled else 'not enabled'} ({wants})"


def _run_timed(cfg: Config) -> list[Item]:
    """The snapshots layout has no sessions: the timed backup takes the place of the session hooks."""
    view, where = systemd.unit_view(cfg.backup_timer.removesuffix(".timer"), cfg.unit_dir)
    timer, timer_where = systemd.unit_view(cfg.backup_timer, cfg.unit_dir)
    starts = view.get("ExecStart", [])
    users = view.get("User") or []
    user = users[0] if users else None
    wired = _has(starts, "neo-db backup")
    gate_ok, gate_evidence = _gate_dry_run(cfg)
    enabled, enabled_ev = _timer_enabled(cfg)
    persistent = any(v.lower() in ("true", "yes", "1", "on") for v in timer.get("Persistent", []))
    calendar = timer.get("OnCalendar", [])
    snap_ok, snap_ev = _dir_facts(catalog.phase_dir(cfg, "timed"), user)
    items = [
        Item(
            "integrity checks are wired",
            wired and gate_ok,
            [
                f"ExecStart from {where}: {starts or 'none'} (each snapshot's DB copy is integrity-checked before it is kept)",
                gate_evidence,
            ],
        ),
        Item(
            "timed snapshots are wired",
            wired and enabled and persistent and bool(calendar) and snap_ok and bool(user),
            [
                f"timer from {timer_where}: OnCalendar={calendar or 'none'} Persistent={timer.get('Persistent') or 'no'}",
                enabled_ev,
                f"service user: {user or 'none (User= missing)'}",
                snap_ev,
                f"extra files: {[str(p) for p, _ in cfg.extra_files] or 'none'}",
            ],
        ),
        _paths(cfg, user, [(snap_ok, snap_ev)]),
        _retention(cfg),
    ]
    if cfg.hetzner_fact_path is not None:
        items.append(_hetzner(cfg))
    items.append(_drill(cfg))
    items += [Item(*check(cfg)) for check in (monitoring_checks.metrics_fresh, monitoring_checks.notifier)]
    return items


def run(cfg: Config) -> list[Item]:
    if cfg.layout == "snapshots":
        return _run_timed(cfg)
    view, where = systemd.unit_view(cfg.engine_unit, cfg.unit_dir)
    pre, post = view.get("ExecStartPre", []), view.get("ExecStopPost", [])
    users = view.get("User") or []
    user = users[0] if users else None
    items: list[Item] = []

    wired = _has(pre, "neo-db session-start")
    gate_ok, gate_evidence = _gate_dry_run(cfg)
    items.append(
        Item(
            "integrity checks are wired",
            wired and gate_ok and cfg.integrity_check_on_startup,
            [f"ExecStartPre from {where}: {pre or 'none'}", gate_evidence, f"integrity_check_on_startup: {cfg.integrity_check_on_startup}"],
        )
    )

    dirs = [_dir_facts(catalog.phase_dir(cfg, p), user) for p in ("pre", "post", "abnormal")]
    hooks = wired and _has(post, "neo-db session-stop")
    enabled = cfg.pre_session_backup_enabled and cfg.post_session_backup_enabled and cfg.abnormal_stop_backup_enabled
    items.append(
        Item(
            "pre/post-session backups are wired",
            hooks and enabled and all(ok for ok, _ in dirs) and bool(user),
            [
                f"ExecStopPost from {where}: {post or 'none'}",
                f"service user: {user or 'none (User= missing)'}",
                "pre/post/abnormal enabled: "
                f"{cfg.pre_session_backup_enabled}/{cfg.post_session_backup_enabled}/{cfg.abnormal_stop_backup_enabled}",
                *[e for _, e in dirs],
            ],
        )
    )

    items.append(_paths(cfg, user, dirs))
    items.append(_retention(cfg))
    items.append(_hetzner(cfg))
    items.append(_drill(cfg))
    items += [Item(*check(cfg)) for check in (monitoring_checks.metrics_fresh, monitoring_checks.notifier)]
    return items


def _paths(cfg: Config, user: str | None, dirs: list[tuple[bool, str]]) -> Item:
    top_ok, top_ev = _dir_facts(cfg.backup_dir, user)
    remote = fsutil.network_filesystem(cfg.backup_dir) if cfg.backup_dir.exists() else "missing"
    db_remote = fsutil.network_filesystem(cfg.db_path.parent) if cfg.db_path.parent.exists() else "missing"
    return Item(
        "backup paths are verified",
        top_ok and all(ok for ok, _ in dirs) and remote is None and db_remote is None,
        [
            f"config {cfg.source}: backup_dir={cfg.backup_dir}, db_path={cfg.db_path}",
            top_ev,
            *[e for _, e in dirs],
            f"backup_dir filesystem: {'local' if remote is None else remote}",
            f"DB filesystem: {'local' if db_remote is None else db_remote}",
        ],
    )


def _retention(cfg: Config) -> Item:
    decisions = prune.plan(cfg, catalog.entries(cfg), catalog.utcnow())
    doomed = [d for d in decisions if not d.keep]
    where = "after every session and daily by neo-db-prune.timer" if cfg.layout == "phases" else "daily by neo-db-prune.timer"
    return Item(
        "retention is defined",
        cfg.backup_retention_count >= 1 and cfg.backup_retention_days >= 14 and cfg.abnormal_retention_days >= 14,
        [
            f"keep the newest {cfg.backup_retention_count} per phase, and anything younger than "
            f"{cfg.backup_retention_days} days ({cfg.abnormal_retention_days} for abnormal stops); pre/post pairs together",
            f"a prune now would keep {len(decisions) - len(doomed)} and remove {len(doomed)} of {len(decisions)} backups",
            f"pruned {where}",
        ],
    )


def markdown(items: list[Item], host: str) -> str:
    lines = [
        f"# Pre-first-VPS-run confirmation (FLAG-023 §8): {host}",
        "",
        f"Overall: **{'PASS' if all(i.ok for i in items) else 'FAIL'}** ({catalog.iso(catalog.utcnow())})",
        "",
        "| item | result | evidence |",
        "| --- | --- | --- |",
    ]
    for i in items:
        evidence = "<br>".join(e.replace("|", "\\|") for e in i.evidence)
        lines.append(f"| {i.name} | {'PASS' if i.ok else '**FAIL**'} | {evidence} |")
    return "\n".join(lines) + "\n"
