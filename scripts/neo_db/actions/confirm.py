"""`neo-db confirm`: the pre-first-VPS-run confirmation (FLAG-023 §8), checked on the host itself.

Each item is PASS or FAIL with its evidence:
  1. the integrity checks are wired (the unit's effective ExecStartPre runs the installed neo-db's
     session-start with its failure honoured, and a gate dry run on a copy passes);
  2. the pre/post backups are wired (ExecStartPre, ExecStopPost, phase dirs writable by the service user);
  3. the backup paths are verified (exist, real dirs, owner and mode, local filesystem);
  4. retention is defined and runs (the policy, what a prune would keep now, the prune timer enabled and
     active, prune_after_session on, the last prune recorded as succeeded);
  5. Hetzner backups are on (the fact the hetzner_backups role recorded);
  6. the last restore drill passed, recently;
  7. the live DB's origin is recorded (neo-db import: origin.json, its imported backup verified by sha256);
  8. the engine is installed (the program ExecStart= runs exists and is executable: a host is
     provisioned before its engine is, and unit-verify lets its unit in with a notice).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import pwd
import sqlite3
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from .. import catalog, fsutil, metrics, sqlitedb, systemd
from ..config import Config
from ..core import drills, monitoring_checks, origin, retention
from ..errors import UsageError


@dataclasses.dataclass
class Item:
    name: str
    ok: bool
    evidence: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"item": self.name, "result": "PASS" if self.ok else "FAIL", "evidence": self.evidence}


def _neo_db_args(argv: tuple[str, ...]) -> argparse.Namespace | None:
    """argv[1:] as neo-db itself parses it, or None where neo-db would not run a command (usage error, --help)."""
    from .. import cli  # noqa: PLC0415  (cli imports this module: a top-level import would be circular)

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return cli.build_parser().parse_args(list(argv[1:]))
    except (UsageError, SystemExit):
        return None


def _hook_problem(cfg: Config, cmd: systemd.ExecCommand, subcommand: str, *, honour_failure: bool) -> str | None:
    """Why cmd is not the installed neo-db running `subcommand` on this config (None: it is)."""
    if os.path.realpath(cmd.path) != os.path.realpath(cfg.neo_db_bin):
        return f"runs {cmd.path}, not the installed neo-db {cfg.neo_db_bin}"
    args = _neo_db_args(cmd.argv)
    if args is None or args.command != subcommand:
        return f"is not 'neo-db {subcommand}'"
    if getattr(args, "allow_missing", False):
        return "--allow-missing lets a missing DB through the gate"
    if args.config and os.path.realpath(args.config) != os.path.realpath(cfg.source):
        return f"--config {args.config} is another config than {cfg.source}"
    if honour_failure and cmd.ignore_errors:
        return "its failure is ignored (the '-' prefix): a refused gate would not stop the start"
    return None


def _hook(cfg: Config, key: str, view: systemd.UnitView, subcommand: str, *, honour_failure: bool) -> tuple[bool, list[str]]:
    """Whether one command of an Exec*= setting runs the installed neo-db's `subcommand`, and the evidence.

    Other commands (a privileged '+' holder scan before the gate, say) do not matter: systemd runs
    every ExecStartPre= in turn, and any one failing stops the start."""
    commands = view.commands.get(key, [])
    evidence = [f"{key} from {view.where}: {[str(c) for c in commands] or 'none'}"]
    problems = [(c, _hook_problem(cfg, c, subcommand, honour_failure=honour_failure)) for c in commands]
    good = [c for c, problem in problems if problem is None]
    installed = cfg.neo_db_bin.is_file() and os.access(cfg.neo_db_bin, os.X_OK)
    if installed:
        evidence.append(f"installed neo-db: {cfg.neo_db_bin} -> {os.path.realpath(cfg.neo_db_bin)}")
    else:
        evidence.append(f"{cfg.neo_db_bin}: neo-db is not installed there (neo_db_bin); run site.yml --tags safeguards")
    if good:
        evidence.append(f"{key} runs the installed 'neo-db {subcommand}': {good[0]}")
    else:
        evidence.append(f"no {key} runs the installed 'neo-db {subcommand}'" + ("" if commands else " (none is set)"))
        evidence.extend(f"{c}: {problem}" for c, problem in problems)
    return bool(good) and installed, evidence


def _gate_dry_run(cfg: Config) -> tuple[bool, str]:
    """Run the structural and integrity gates on a copy: of the live DB, else the newest verified backup, else a sample."""
    try:
        return _gate_dry_run_on_a_copy(cfg)
    except OSError as exc:
        return False, f"gate dry run impossible: {_os_problem(exc)}"


def _os_problem(exc: OSError) -> str:
    return f"{exc.filename}: {exc.strerror}" if exc.filename is not None and exc.strerror else str(exc)


def _gate_dry_run_on_a_copy(cfg: Config) -> tuple[bool, str]:
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
            now = catalog.utcnow()  # a backup dated in the future is never the newest
            verified = [e for e in catalog.entries(cfg) if e.verified and e.db is not None and not e.future_dated(now)]
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
    except OSError as exc:
        return False, f"{path}: {exc.strerror}"
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
    doc = drills.last(cfg)
    if doc is None:
        return Item(name, False, [f"no drill recorded in {drills.result_path(cfg)}; run 'neo-db drill'"])
    age = doc.get("age_seconds")
    fresh = isinstance(age, int) and age <= cfg.drill_max_age_days * 86400
    phases = ", ".join(f"{p}: {d['result']}" for p, d in doc.get("phases", {}).items())
    evidence = [f"last drill {doc.get('at')}: {doc.get('result')} ({phases})"]
    if not fresh:
        evidence.append(f"older than drill_max_age_days ({cfg.drill_max_age_days})")
    return Item(name, doc.get("result") == "pass" and fresh, evidence)


def _timer_enabled(cfg: Config) -> tuple[bool, str]:
    """systemd's `is-enabled` where it runs (the unit files' wants link where it does not)."""
    state = systemd.unit_state(cfg.backup_timer, cfg.unit_dir)
    return state.enabled, f"{cfg.backup_timer}: {'enabled' if state.enabled else 'not enabled'} ({state.evidence})"


def _run_timed(cfg: Config) -> list[Item]:
    """The snapshots layout has no sessions: the timed backup takes the place of the session hooks."""
    view = systemd.unit_view(cfg.backup_timer.removesuffix(".timer"), cfg.unit_dir)
    timer = systemd.unit_view(cfg.backup_timer, cfg.unit_dir)
    users = view.get("User") or []
    user = users[0] if users else None
    wired, start_evidence = _hook(cfg, "ExecStart", view, "backup", honour_failure=True)
    gate_ok, gate_evidence = _gate_dry_run(cfg)
    enabled, enabled_ev = _timer_enabled(cfg)
    persistent = any(v.lower() in ("true", "yes", "1", "on") for v in timer.get("Persistent"))
    calendar = timer.get("OnCalendar")
    snap_ok, snap_ev = _dir_facts(catalog.phase_dir(cfg, "timed"), user)
    items = [
        Item(
            "integrity checks are wired",
            wired and gate_ok,
            [*start_evidence, "each snapshot's DB copy is integrity-checked before it is kept", gate_evidence],
        ),
        Item(
            "timed snapshots are wired",
            wired and enabled and persistent and bool(calendar) and snap_ok and bool(user),
            [
                f"timer from {timer.where}: OnCalendar={calendar or 'none'} Persistent={timer.get('Persistent') or 'no'}",
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
    # AtoCore never migrates: its DB is recorded as its own ('neo-db import --adopt').
    items.append(Item("the live DB's origin is recorded", *origin.origin_check(cfg)))
    items += [Item(*check(cfg)) for check in (monitoring_checks.metrics_fresh, monitoring_checks.notifier)]
    return items


def run(cfg: Config) -> list[Item]:
    if cfg.layout == "snapshots":
        return _run_timed(cfg)
    view = systemd.unit_view(cfg.engine_unit, cfg.unit_dir)
    users = view.get("User") or []
    user = users[0] if users else None
    items: list[Item] = []

    wired, pre_evidence = _hook(cfg, "ExecStartPre", view, "session-start", honour_failure=True)
    gate_ok, gate_evidence = _gate_dry_run(cfg)
    items.append(
        Item(
            "integrity checks are wired",
            wired and gate_ok and cfg.integrity_check_on_startup,
            [*pre_evidence, gate_evidence, f"integrity_check_on_startup: {cfg.integrity_check_on_startup}"],
        )
    )

    dirs = [_dir_facts(catalog.phase_dir(cfg, p), user) for p in ("pre", "post", "abnormal")]
    # ExecStopPost's failure cannot stop anything (the engine has stopped): '-' is fine there.
    post_ok, post_evidence = _hook(cfg, "ExecStopPost", view, "session-stop", honour_failure=False)
    hooks = wired and post_ok
    enabled = cfg.pre_session_backup_enabled and cfg.post_session_backup_enabled and cfg.abnormal_stop_backup_enabled
    items.append(
        Item(
            "pre/post-session backups are wired",
            hooks and enabled and all(ok for ok, _ in dirs) and bool(user),
            [
                *post_evidence,
                f"the pre-session backup is taken by the ExecStartPre gate: {'wired' if wired else 'NOT wired (see the first item)'}",
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
    items.append(Item("the live DB's origin is recorded", *origin.origin_check(cfg)))
    items += [Item(*check(cfg)) for check in (monitoring_checks.metrics_fresh, monitoring_checks.notifier)]
    problem, evidence = systemd.engine_program_problem(cfg.engine_unit, view)
    items.append(Item("the engine is installed", problem is None, [evidence] + ([problem] if problem else [])))
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


PRUNE_TIMER = "neo-db-prune.timer"


def _prune_runs(cfg: Config) -> tuple[bool, list[str]]:
    """Whether retention actually runs: the prune timer enabled and active, prune_after_session on
    (the phases layout), and the last prune recorded as having succeeded. The evidence names each fix."""
    timer = systemd.unit_state(PRUNE_TIMER, cfg.unit_dir)
    timer_ok = timer.enabled and timer.active is not False
    evidence = [
        f"{PRUNE_TIMER}: {'enabled' if timer.enabled else 'NOT enabled'}"
        + ("" if timer.active is None else f", {'active' if timer.active else 'NOT active'}")
        + f" ({timer.evidence})"
        + ("" if timer_ok else f"; fix: systemctl enable --now {PRUNE_TIMER} (site.yml --tags safeguards installs it)")
    ]
    after_session = cfg.layout != "phases" or cfg.prune_after_session
    if cfg.layout == "phases":
        evidence.append(
            "prune_after_session: true (a prune after every session stop)"
            if cfg.prune_after_session
            else f"prune_after_session: false in {cfg.source}: backups are pruned only by the timer; "
            "fix: set it to true (the default) or remove the key"
        )
    last = retention.last_record(cfg)
    where = metrics.state_path(cfg.state_dir)
    if last is None:
        last_ok = False
        evidence.append(f"no prune recorded in {where}; fix: run 'neo-db prune' as the service user, then check its output")
    else:
        at = catalog.iso(dt.datetime.fromtimestamp(last["last_run"], dt.timezone.utc))
        last_ok = last.get("ok") is True
        outcome = "succeeded" if last_ok else "FAILED"
        evidence.append(f"last prune {at} ({last.get('trigger')}): {outcome}: {last.get('detail')}")
        if not last_ok:
            evidence.append("fix the cause above, then run 'neo-db prune' (it records its outcome again)")
    return timer_ok and after_session and last_ok, evidence


def _retention(cfg: Config) -> Item:
    try:
        decisions = retention.plan(cfg, catalog.entries(cfg), catalog.utcnow())
    except OSError as exc:
        decisions, unreadable = [], f"the backups cannot be listed: {_os_problem(exc)}"
    else:
        unreadable = ""
    doomed = [d for d in decisions if not d.keep]
    # A backup dated in the future escapes retention and is never the newest: a FAIL, named.
    ahead = [f"{d.entry.phase} backup {d.entry.base} is {d.reason}" for d in decisions if d.future_dated]
    runs, run_evidence = _prune_runs(cfg)
    return Item(
        "retention is defined",
        cfg.backup_retention_count >= 1
        and cfg.backup_retention_days >= 14
        and cfg.abnormal_retention_days >= 14
        and not unreadable
        and not ahead
        and runs,
        [
            f"keep the newest {cfg.backup_retention_count} per phase, and anything younger than "
            f"{cfg.backup_retention_days} days ({cfg.abnormal_retention_days} for abnormal stops); pre/post pairs together",
            unreadable or f"a prune now would keep {len(decisions) - len(doomed)} and remove {len(doomed)} of {len(decisions)} backups",
            *run_evidence,
            *ahead,
        ],
    )


def from_report(source: str) -> tuple[list[Item], str, str]:
    """The items, host and time of a saved `confirm --json` report (a file, or "-" for stdin), so that
    the Markdown is rendered from the one run that made the JSON (issue 17.10). Raises UsageError."""
    where = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--markdown-from {where}: cannot read it: {exc}", hint="save the output of 'neo-db confirm --json'") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--markdown-from {where}: not JSON ({exc})", hint="give it the output of 'neo-db confirm --json'") from exc
    problem = _report_problem(doc)
    if problem:
        raise UsageError(
            f"--markdown-from {where}: not a confirm --json report: {problem}", hint="give it the output of 'neo-db confirm --json'"
        )
    items = [Item(str(i["item"]), i["result"] == "PASS", [str(e) for e in i["evidence"]]) for i in doc["items"]]
    return items, str(doc["host"]), str(doc.get("at") or "time not recorded")


def _report_problem(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return f"expected an object, got {type(doc).__name__}"
    for key in ("host", "items"):
        if key not in doc:
            return f"no {key!r} key"
    if not isinstance(doc["items"], list):
        return "'items' is not a list"
    for n, i in enumerate(doc["items"]):
        if not (isinstance(i, dict) and isinstance(i.get("item"), str) and i.get("result") in ("PASS", "FAIL")):
            return f"item {n} is not {{'item': NAME, 'result': PASS|FAIL, 'evidence': [...]}}"
        if not isinstance(i.get("evidence"), list):
            return f"item {n} ({i['item']}) has no 'evidence' list"
    return None


def markdown(items: list[Item], host: str, at: str) -> str:
    lines = [
        f"# Pre-first-VPS-run confirmation (FLAG-023 §8): {host}",
        "",
        f"Overall: **{'PASS' if all(i.ok for i in items) else 'FAIL'}** ({at})",
        "",
        "| item | result | evidence |",
        "| --- | --- | --- |",
    ]
    for i in items:
        evidence = "<br>".join(e.replace("|", "\\|") for e in i.evidence)
        lines.append(f"| {i.name} | {'PASS' if i.ok else '**FAIL**'} | {evidence} |")
    return "\n".join(lines) + "\n"
