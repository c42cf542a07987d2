"""neo-db command line: parse arguments, load the config, dispatch to an action.

Exit codes (see errors.py): 0 ok, 1 failure, 2 usage/config, 3 integrity,
4 network filesystem, 5 DB in use, 6 DB missing, 7 locked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, catalog, fsutil, holders, logs, metrics, monitor, notify
from . import config as config_mod
from .actions import (
    archive,
    backup,
    check,
    confirm,
    diff,
    drill,
    health,
    importer,
    listing,
    prune,
    rebootguard,
    restore,
    session,
    snapshot,
    unitverify,
)
from .core import drills, formatting, gates, install
from .errors import FAILURE, OK, USAGE, DbInUseError, GateError, NeoDbError, PathError, UsageError

log = logging.getLogger("neo_db")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}", hint=f"'{self.prog} --help' lists the options")


def _session_arg(value: str) -> str:
    try:
        return catalog.check_session_id(value)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="neo-db", description="Session safeguards for the NEO engine's SQLite DB (FLAG-049, FLAG-023).")
    p.add_argument(
        "--config", metavar="PATH", help=f"config file (default: ${config_mod.ENV_CONFIG}, else {config_mod.DEFAULT_CONFIG_PATH})"
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log detail")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("--debug", action="store_true", help="show a traceback on an internal error")
    p.add_argument("--version", action="version", version=f"neo-db {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    _add_gate_commands(sub)
    _add_backup_commands(sub)
    _add_migration_commands(sub)
    _add_host_commands(sub)
    return p


_Sub = Any  # argparse's _SubParsersAction (private in typeshed)


def _add(sub: _Sub, name: str, help_: str, *, json_: bool = True) -> argparse.ArgumentParser:
    sp: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
    if json_:
        sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    return sp


def _add_gate_commands(sub: _Sub) -> None:
    sp = _add(sub, "check", "run the gates on the live DB: local filesystem, no other holder, integrity_check")
    sp.add_argument("--allow-missing", action="store_true", help="a missing DB passes (first run)")

    sp = _add(sub, "holders", "name every process that has the live DB, its -wal, -shm or -journal open, of any user")
    sp.add_argument("--gate", action="store_true", help="exit 5 naming them if there are any (the session gate's check)")
    sp.add_argument(
        "--serve",
        action="store_true",
        help="answer the client on the unix socket passed as stdin, in JSON (neo-db-holders@.service, as root); reads only",
    )

    sp = _add(sub, "session-start", "ExecStartPre hook: allocate the session, run the gates, take the pre-session backup")
    sp.add_argument("--session", type=_session_arg, metavar="ID", help="session ID (default: the next from the counter)")
    sp.add_argument("--allow-missing", action="store_true", help="a missing DB passes (first run)")

    sp = _add(sub, "session-stop", "ExecStopPost hook: classify the stop, post-session backup or abnormal-stop preservation")
    sp.add_argument("--session", type=_session_arg, metavar="ID", help="session ID (default: the open session)")


def _add_backup_commands(sub: _Sub) -> None:
    sp = _add(sub, "backup", "take a verified backup of the live DB now")
    sp.add_argument(
        "--phase",
        choices=[p for p in catalog.PHASE_DIRS if p not in ("imported", "legacy")],  # those are neo-db import's
        help="which backup dir (default: manual; timed, a snapshots/<timestamp>/ directory, in the snapshots layout)",
    )
    sp.add_argument("--trigger", default="cli", choices=["cli", "timer"], help="recorded in the manifest (timer: run by a systemd timer)")
    sp.add_argument("--session", type=_session_arg, metavar="ID", help="session ID for the file name")

    sp = _add(sub, "prune", "apply the retention policy")
    sp.add_argument("--dry-run", action="store_true", help="only say what would be removed")

    _add(sub, "list", "list the backups with phase, session, age, size and verified status")

    sp = _add(sub, "restore", "put a verified backup back as the live DB (engine stopped); the old files are quarantined")
    sp.add_argument("backup", metavar="BACKUP", help="a name from 'neo-db list', or its path inside backup_dir")
    sp.add_argument("--dry-run", action="store_true", help="check everything and show the plan; change nothing")
    sp.add_argument("--yes", action="store_true", help="really replace the live DB")
    sp.add_argument("--allow-other-db", action="store_true", help="accept a backup whose manifest names another database (db_path or stem)")

    _add(sub, "drill", "restore test: restore the newest verified backup of each phase into a temp dir and check it")

    sp = _add(sub, "diff", "what changed between two copies, e.g. a session's pre and post backups")
    sp.add_argument("a", metavar="A", nargs="?", help="backup name or path (before)")
    sp.add_argument("b", metavar="B", nargs="?", help="backup name or path (after)")
    sp.add_argument("--session", type=_session_arg, metavar="ID", help="diff that session's pre and post backups")

    _add(sub, "snapshot", "publish a fresh read-only copy for analysts in exports_dir/snapshots (safe while the engine writes)")


def _add_migration_commands(sub: _Sub) -> None:
    sp = _add(sub, "import", "bring an existing DB onto the box (the migration): preflight, install, legacy backups, origin")
    sp.add_argument("source", metavar="SOURCE", nargs="?", help="the DB file (its -wal beside it comes along)")
    mode = sp.add_mutually_exclusive_group()
    mode.add_argument("--preflight", action="store_true", help="check SOURCE on a copy (no config needed); change nothing")
    mode.add_argument("--show", action="store_true", help="the origin record, the live DB's sha256, the highest session ID")
    mode.add_argument("--legacy", metavar="DIR", help="import the Windows-era backups <db_name>.bak.<UTC> / .post.<UTC> in DIR")
    mode.add_argument("--adopt", action="store_true", help="record the live DB (the engine made it here) as its own origin")
    sp.add_argument("--source-sha256", metavar="HEX", help="refuse unless SOURCE has this sha256 (end-to-end transfer check)")
    sp.add_argument("--source-host", metavar="HOST", help="where SOURCE came from (provenance)")
    sp.add_argument("--source-path", metavar="PATH", help="SOURCE's original path there (provenance)")
    sp.add_argument("--next-session", type=_session_arg, metavar="ID", help="the next session's ID, e.g. S051 (above every ID on the box)")
    sp.add_argument("--replace", action="store_true", help="quarantine an existing live DB (as restore does) and install SOURCE")
    sp.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")

    sp = _add(sub, "confirm", "the pre-first-VPS-run confirmation (FLAG-023 §8): PASS/FAIL per item with evidence")
    out = sp.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true", help="a Markdown report on stdout")
    out.add_argument(
        "--markdown-from",
        metavar="FILE",
        help="render the Markdown report of a saved 'confirm --json' report (FILE, or - for stdin): checks nothing, copies nothing",
    )

    sp = _add(sub, "archive-dir", "a cold .tar.gz archive of a directory (AtoCore's Chroma), then its .json record; keeps the newest N")
    sp.add_argument("src", metavar="SRC", type=Path, help="the directory to archive (stop whatever writes it first)")
    sp.add_argument("--dest", required=True, type=Path, metavar="DIR", help="where the archives and their records go")
    sp.add_argument("--keep", required=True, type=int, metavar="N", help="keep the newest N archives (at least 1)")
    sp.add_argument("--name", default="chroma", help="the archives' name prefix: NAME-<UTC time>.tar.gz (default: chroma)")
    sp.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="a field for the record (repeatable)")

    sp = _add(sub, "health", "print a session's db_health block")
    sp.add_argument("--session", type=_session_arg, metavar="ID", help="session ID (default: the latest)")


def _add_host_commands(sub: _Sub) -> None:
    sp = sub.add_parser("metrics", help="write neo_db.prom for node_exporter's textfile collector (a timer runs it every 5 minutes)")
    sp.add_argument("--stdout", action="store_true", help="print the metrics instead of writing the file")

    sp = sub.add_parser("notify", help="send notifications: a failed unit (OnFailure=), the queued events, or a test")
    mode = sp.add_mutually_exclusive_group(required=True)
    mode.add_argument("--test", action="store_true", help="send a test message to every configured notifier")
    mode.add_argument("--unit", metavar="UNIT", help="UNIT failed: send what failed and its last journal lines")
    mode.add_argument("--queue", action="store_true", help="send the events the hooks queued, once each")

    sp = sub.add_parser("unit-verify", help="check a systemd unit or drop-in file with systemd-analyze (Ansible's validate)")
    sp.add_argument("path", metavar="FILE")
    sp.add_argument("--as", dest="unit_name", metavar="NAME", help="the unit's real file name, e.g. neo-engine.service")
    sp.add_argument("--drop-in-for", metavar="UNIT_FILE", help="FILE is a drop-in for this installed unit file")
    sp.add_argument(
        "--with",
        dest="with_units",
        metavar="UNIT_FILE",
        action="append",
        default=[],
        help="an installed unit that FILE needs (a socket's service)",
    )
    sp.add_argument(
        "--allow-absent-engine",
        action="store_true",
        help="ExecStart's program not installed yet is a notice, not a failure (provisioning before the engine is installed)",
    )

    sp = _add(sub, "reboot-guard", "reboot for a pending update (/var/run/reboot-required) only inside the window and with no session open")
    sp.add_argument(
        "--window", required=True, metavar="HH:MM-HH:MM", help="the maintenance window in UTC, e.g. 02:00-05:00 (may wrap midnight)"
    )
    sp.add_argument(
        "--reboot-required-file",
        type=Path,
        default=rebootguard.DEFAULT_FLAG,
        metavar="PATH",
        help=f"the file whose presence means a reboot is pending (default: {rebootguard.DEFAULT_FLAG})",
    )
    sp.add_argument(
        "--reboot-command",
        default=rebootguard.DEFAULT_COMMAND,
        metavar="CMD",
        help=f"run (no shell) to reboot (default: {rebootguard.DEFAULT_COMMAND!r})",
    )

    cp = sub.add_parser("config", help="validate or show the config")
    csub = cp.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    vp = csub.add_parser("validate", help="check a config file; exit 2 with every problem if it is invalid")
    vp.add_argument("path", metavar="PATH")
    vp.add_argument("--role-vars", action="store_true", help="name the neo_safeguards role variable beside each key (the role's check)")
    vp.add_argument("--schema-only", action="store_true", help="check each key on its own, not the rules between keys")
    sp = csub.add_parser("show", help="print the effective config, defaults included")
    sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(fsutil.to_json(doc))
    elif text:
        print(text)


def _load(args: argparse.Namespace, *, recover: bool = True) -> config_mod.Config:
    cfg = config_mod.load(config_mod.resolve_path(args.config))
    args.loaded_config = cfg  # main() names the config key of a path that cannot be used
    if recover:
        install.recover_if_pending(cfg)  # a restore killed half-way is completed or rolled back before anything else
    return cfg


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args)
    report = check.run(cfg, allow_missing=args.allow_missing)
    _emit(
        args,
        {"db_path": str(cfg.db_path), "result": "pass", **report.as_dict()},
        f"PASS {cfg.db_path}\n  filesystem: {report.filesystem}\n  holders: {report.holders}\n"
        f"  integrity_check: {'; '.join(report.integrity_check)}\n  seconds: {report.seconds}",
    )
    return OK


def cmd_holders(args: argparse.Namespace) -> int:
    # The privileged scanner (root, read-only sandbox) only reads: an interrupted restore is the
    # service user's next run's to finish, never root's (it would fail there, and the gate with it).
    cfg = _load(args, recover=not args.serve)
    if args.serve:
        if args.gate or args.json:
            raise UsageError("holders --serve answers in JSON on its socket: it takes neither --gate nor --json")
        doc = holders.serve(cfg.db_path)
        sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
        sys.stdout.flush()
        return OK
    scan = holders.inspect(cfg.db_path)
    if scan.holders:
        body = [[str(h.pid), h.user, h.path, h.how, h.command] for h in scan.holders]
        text = formatting.table(["PID", "USER", "FILE", "HOW", "COMMAND"], body)
    else:
        text = f"no other process has {cfg.db_path} (or its -wal, -shm, -journal) open"
    text += f"\n  inspected by {scan.by}" + (f"\n  {scan.note}" if scan.note else "")
    if args.gate and scan.holders:  # one JSON document: the failure, with what was found
        try:
            gates.refuse_holders(scan.holders)
        except DbInUseError as exc:
            exc.details = scan.as_dict(cfg.db_path)
            raise
    _emit(args, scan.as_dict(cfg.db_path), text)
    return OK


def cmd_session_start(args: argparse.Namespace) -> int:
    cfg = _load(args)
    outcome = session.session_start(cfg, args.session, allow_missing=args.allow_missing)
    monitor.note_block(outcome.block)
    _emit(
        args,
        {"db_health": outcome.block},
        f"session {outcome.session} open; pre-session backup: {outcome.block.get('pre_session_backup') or 'none'}",
    )
    return OK


def cmd_session_stop(args: argparse.Namespace) -> int:
    cfg = _load(args)
    block = session.session_stop(cfg, args.session, os.environ)
    monitor.note_block(block)
    stop = block.get("stop") or {}
    _emit(
        args,
        {"db_health": block},
        f"session {block.get('session', '-')}: {stop.get('classification', 'nothing open')}" if block else "no session was open",
    )
    return OK


def cmd_backup(args: argparse.Namespace) -> int:
    cfg = _load(args)
    result = backup.run(cfg, args.phase, args.session, args.trigger)
    _emit(args, {"path": str(result.path), "manifest": result.manifest}, str(result.path))
    if not result.intact:
        log.error("the copy failed integrity_check: the live DB is likely corrupt; run 'neo-db check'")
        return 3
    return OK


def cmd_prune(args: argparse.Namespace) -> int:
    cfg = _load(args)
    now = catalog.utcnow()
    decisions = prune.run_locked(cfg, dry_run=args.dry_run)
    doomed = [d for d in decisions if not d.keep]
    verb = "would remove" if args.dry_run else "removed"
    body = [[d.entry.phase, d.entry.session or "-", d.entry.base, d.reason] for d in doomed]
    text = (
        formatting.table(["PHASE", "SESSION", verb.upper(), "WHY"], body) if body else f"nothing to prune ({len(decisions)} backups kept)"
    )
    _emit(args, {"dry_run": args.dry_run, "decisions": [d.as_dict(now) for d in decisions]}, text)
    return OK


def cmd_list(args: argparse.Namespace) -> int:
    cfg = _load(args)
    items = listing.rows(cfg)
    body = [
        [
            r["phase"],
            r["session"] or "-",
            r["created"],
            formatting.human_age(r["age_seconds"]),
            formatting.human_size(r["size"]),
            r["status"] + (", future-dated" if r["future_dated"] else ""),
            r["name"],
        ]
        for r in items
    ]
    text = (
        formatting.table(["PHASE", "SESSION", "CREATED", "AGE", "SIZE", "STATUS", "NAME"], body)
        if body
        else f"no backups under {cfg.backup_dir}"
    )
    _emit(args, {"backup_dir": str(cfg.backup_dir), "backups": items}, text)
    return OK


def cmd_health(args: argparse.Namespace) -> int:
    cfg = _load(args)
    block = dict(health.show(cfg, args.session))
    block["last_drill"] = drills.last(cfg)
    lines = [f"{k}: {fsutil.to_json(v, indent=None) if isinstance(v, (dict, list)) else v}" for k, v in sorted(block.items())]
    _emit(args, {"db_health": block}, "\n".join(lines))
    return OK


def cmd_restore(args: argparse.Namespace) -> int:
    cfg = _load(args)
    doc = restore.restore(cfg, args.backup, dry_run=args.dry_run, yes=args.yes, allow_other_db=args.allow_other_db)
    verb = "would restore" if args.dry_run else "restored"
    text = f"{verb} {doc['backup']} -> {doc['target']}\n  sha256 {doc['sha256']} and integrity_check ok"
    text += (
        f"\n  previous files {'to be ' if args.dry_run else ''}quarantined in {doc['quarantine']}"
        if doc["quarantine"]
        else "\n  (no live DB to quarantine)"
    )
    _emit(args, doc, text)
    return OK


def cmd_drill(args: argparse.Namespace) -> int:
    cfg = _load(args)
    doc = drill.run(cfg)
    body = [
        [p, d["result"].upper(), d.get("backup", "-"), formatting.human_age(d["age_seconds"]) if "age_seconds" in d else "-", d["detail"]]
        for p, d in doc["phases"].items()
    ]
    _emit(args, doc, formatting.table(["PHASE", "RESULT", "NEWEST VERIFIED", "AGE", "DETAIL"], body) + f"\ndrill: {doc['result'].upper()}")
    return OK if doc["result"] == "pass" else FAILURE


def cmd_diff(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if args.session:
        if args.a or args.b:
            raise UsageError("give either --session ID or two backups A B, not both")
        a, b = diff.session_pair(cfg, args.session)
    elif args.a and args.b:
        a, b = diff.resolve(cfg, args.a), diff.resolve(cfg, args.b)
    else:
        raise UsageError("diff needs two backups A B, or --session ID", hint="'neo-db list' shows the names")
    doc = diff.diff(a, b)
    _emit(args, doc, diff.summary(doc))
    return OK


def cmd_snapshot(args: argparse.Namespace) -> int:
    cfg = _load(args)
    doc = snapshot.take(cfg)
    _emit(args, doc, f"{doc['path']}\nlatest: {doc['latest']}")
    return OK


_INSTALL_ONLY = {"next_session": "--next-session", "replace": "--replace", "source_sha256": "--source-sha256",
                 "source_host": "--source-host", "source_path": "--source-path"}  # fmt: skip


def _damaged_or_none(error: str | None) -> str:
    return f"DAMAGED: {error}" if error else "none recorded"


def cmd_import(args: argparse.Namespace) -> int:
    if args.legacy == "":
        # an empty DIR would be no mode at all: SOURCE would be installed instead
        raise UsageError("import --legacy needs DIR, the directory holding the Windows-era backups (it was empty)")
    mode = next((flag for flag in ("preflight", "show", "adopt", "legacy") if getattr(args, flag)), None)
    given = [opt for dest, opt in _INSTALL_ONLY.items() if getattr(args, dest, None) not in (None, False)]
    if mode and given:
        # Silently dropping them would let an operator believe e.g. the counter was set.
        raise UsageError(
            f"import --{mode} takes no {', '.join(given)}: they apply only to installing SOURCE",
            hint="install with 'neo-db import SOURCE " + " ".join(given) + " ...'",
        )
    if args.preflight:
        if not args.source:
            raise UsageError("import --preflight needs SOURCE, the DB file to check")
        doc = importer.preflight(args.source)
        _emit(args, doc, importer.describe(doc))
        return OK
    if args.show:
        if args.source:
            raise UsageError("import --show takes no SOURCE")
        doc = importer.show(_load(args))
        origin = doc["origin"]
        text = "\n".join(
            [
                f"origin: {fsutil.to_json(origin, indent=None) if origin else _damaged_or_none(doc['origin_error'])}",
                f"live DB: {'present, sha256 ' + doc['live_sha256'] if doc['live_db_exists'] else 'none'}",
                f"highest session: {doc['highest_session'] or 'none'}",
            ]
        )
        _emit(args, doc, text)
        return OK
    if args.adopt:
        if args.source:
            raise UsageError("import --adopt takes no SOURCE: it records the live DB itself")
        doc = importer.adopt(_load(args), dry_run=args.dry_run)
        verb = "adopted" if doc["changed"] else "unchanged: already recorded"
        _emit(args, doc, f"{verb}: {doc['installed']} (imported backup {doc['imported_backup'] or '-'})")
        return OK
    if args.legacy:
        if args.source:
            raise UsageError("import --legacy DIR takes no SOURCE")
        doc, corrupt = importer.legacy(_load(args), args.legacy, dry_run=args.dry_run)
        verb = "would import" if args.dry_run else "imported"
        lines = [f"{verb}: {n}" for n in doc["imported"]] + [f"skipped: {s['name']}: {s['reason']}" for s in doc["skipped"]]
        lines += [f"ignored: {n}" for n in doc["ignored"]]
        _emit(args, doc, "\n".join(lines) or f"nothing in {args.legacy}")
        return FAILURE if corrupt else OK
    if not args.source:
        raise UsageError("import needs SOURCE (or --preflight SOURCE, --show, --legacy DIR, --adopt)", hint="'neo-db import --help'")
    cfg = _load(args)
    doc = importer.install(
        cfg,
        args.source,
        source_sha256=args.source_sha256,
        source_host=args.source_host,
        source_path=args.source_path,
        next_session=args.next_session,
        replace=args.replace,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        text = f"dry run: would install {args.source} as {doc['installed']} (nothing was changed)"
    elif doc["changed"]:
        text = f"installed {args.source} as {doc['installed']}\n  imported backup: {doc['imported_backup']}"
        text += f"\n  quarantined: {doc['quarantined']}" if doc["quarantined"] else ""
    else:
        text = f"unchanged: {doc['installed']} is already the import of {args.source} ({doc['imported_backup']})"
    if doc["next_session"]:
        text += f"\n  next session: {doc['next_session']}"
    _emit(args, doc, text)
    return OK


def cmd_confirm(args: argparse.Namespace) -> int:
    if args.markdown_from is not None:
        items, host, at = confirm.from_report(args.markdown_from)
        print(confirm.markdown(items, host, at), end="")
        return OK
    cfg = _load(args)
    items = confirm.run(cfg)
    host = socket.gethostname()
    at = catalog.iso(catalog.utcnow())
    ok = all(i.ok for i in items)
    if args.markdown:
        print(confirm.markdown(items, host, at), end="")
    else:
        body = [[("PASS" if i.ok else "FAIL"), i.name, i.evidence[0]] for i in items]
        text = formatting.table(["RESULT", "ITEM", "EVIDENCE"], body) + f"\n\nconfirmation: {'PASS' if ok else 'FAIL'}"
        _emit(args, {"host": host, "at": at, "result": "PASS" if ok else "FAIL", "items": [i.as_dict() for i in items]}, text)
    return OK if ok else FAILURE


def cmd_archive_dir(args: argparse.Namespace) -> int:
    meta: dict[str, str] = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep or not key or key in ("timestamp", "source", "archive", "sha256", "size"):
            raise UsageError(f"--meta {item!r}: expected KEY=VALUE, with KEY not one of timestamp, source, archive, sha256, size")
        meta[key] = value
    result = archive.archive_dir(args.src, args.dest, keep=args.keep, prefix=args.name, meta=meta)
    doc = {"archive": str(result.archive), "record": str(result.record), **result.doc, "removed": result.removed}
    _emit(args, doc, f"archived {args.src} as {result.archive} ({result.doc['size']} bytes); record {result.record}")
    return OK


def cmd_config(args: argparse.Namespace) -> int:
    if args.config_command == "validate":
        cfg = config_mod.load(args.path, role_vars=args.role_vars, schema_only=args.schema_only)
        print(f"ok: {cfg.source} {'holds allowed values' if args.schema_only else 'is a valid neo-db config'}")
        return OK
    cfg = _load(args)
    _emit(
        args,
        {"source": cfg.source, config_mod.TOP_KEY: cfg.as_dict()},
        f"# {cfg.source}\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in cfg.as_dict().items()),
    )
    return OK


def cmd_unit_verify(args: argparse.Namespace) -> int:
    drop_in = Path(args.drop_in_for) if args.drop_in_for else None
    verdict = unitverify.verify(
        Path(args.path), args.unit_name, drop_in, [Path(p) for p in args.with_units], allow_absent_engine=args.allow_absent_engine
    )
    for line in verdict.notices:
        log.warning("notice: %s", line)
    if verdict.problems:
        for line in verdict.problems:
            log.error("%s", line)
        return USAGE
    print(f"ok: {args.unit_name or args.path} passes systemd-analyze verify")
    return OK


def cmd_reboot_guard(args: argparse.Namespace) -> int:
    window = rebootguard.parse_window(args.window)
    command = rebootguard.parse_command(args.reboot_command)
    cfg = _load(args, recover=False)  # root: an interrupted restore is the service user's to finish
    doc = rebootguard.run(cfg, window, args.reboot_required_file, command)
    failed = doc["decision"] == "reboot_failed"
    (log.error if failed else log.info)("reboot-guard: %s: %s", doc["decision"], doc["reason"])
    _emit(args, doc, "")
    return FAILURE if failed else OK


def cmd_metrics(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if args.stdout:
        print(metrics.render(metrics.collect(cfg)), end="")
        return OK
    if cfg.metrics_textfile_dir is None:
        raise UsageError(
            f"metrics_textfile_dir is null in {cfg.source}: nowhere to write neo_db.prom",
            hint="set it (the neo_monitoring role sets /var/lib/prometheus/node-exporter), or use 'neo-db metrics --stdout'",
        )
    try:
        monitor.refresh(cfg, check_unit=True)
    except OSError as exc:
        metrics.update_state(cfg.state_dir, {"metrics_write_errors_total": 1})
        raise NeoDbError(
            f"cannot write {cfg.metrics_textfile_dir}/{metrics.PROM_NAME}: {exc.strerror or exc}",
            hint=f"check that {cfg.metrics_textfile_dir} exists and is writable by this user (the neo_monitoring role sets it up)",
        ) from None
    log.info("wrote %s/%s", cfg.metrics_textfile_dir, metrics.PROM_NAME)
    return OK


def cmd_notify(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg.notify_secrets_path is None and not args.test:
        # OnFailure= points here on every box; without a notifier there is nothing to send.
        what = f"the failure of {args.unit}" if args.unit else "the queue"
        log.info("no notifier configured (notify_secrets_path is null): %s not sent", what)
        return OK
    targets = notify.require_targets(cfg)
    if args.queue:
        before = metrics.load_state(cfg.state_dir).get("notify_failures_total") or 0
        sent = notify.drain(cfg, targets)
        failed = (metrics.load_state(cfg.state_dir).get("notify_failures_total") or 0) - before
        print(f"sent {sent} queued event(s)" + (f"; {failed} delivery failure(s), see the journal" if failed else ""))
        return FAILURE if failed else OK
    if not args.test:
        reported = notify.already_reported(cfg, args.unit)
        if reported is not None:
            print(f"not sent: the failure of {args.unit} is the abnormal stop of session {reported}, already queued by its stop hook")
            return OK
    msg = notify.test_message() if args.test else notify.unit_failure_message(cfg, args.unit)
    results = notify.send(cfg, targets, msg)
    for name, outcome in results.items():
        print(f"{name}: {outcome}")
    if not results:
        print("nothing to send: no configured notifier takes this kind of message")
    return OK if all(r.startswith("ok") for r in results.values()) else FAILURE


COMMANDS = {
    "check": cmd_check,
    "holders": cmd_holders,
    "session-start": cmd_session_start,
    "session-stop": cmd_session_stop,
    "backup": cmd_backup,
    "prune": cmd_prune,
    "list": cmd_list,
    "health": cmd_health,
    "config": cmd_config,
    "restore": cmd_restore,
    "drill": cmd_drill,
    "diff": cmd_diff,
    "snapshot": cmd_snapshot,
    "confirm": cmd_confirm,
    "import": cmd_import,
    "archive-dir": cmd_archive_dir,
    "unit-verify": cmd_unit_verify,
    "metrics": cmd_metrics,
    "reboot-guard": cmd_reboot_guard,
    "notify": cmd_notify,
}


def _path_error(exc: OSError, args: argparse.Namespace | None) -> PathError:
    """A clear error for a path that cannot be used, naming the config key it comes from."""
    cfg = getattr(args, "loaded_config", None)
    if isinstance(cfg, config_mod.Config) and exc.filename is not None:
        found = cfg.key_for(os.fsdecode(exc.filename))
        if found is not None:
            return PathError.from_os_error(exc, key=found[0], key_path=found[1], source=cfg.source)
    return PathError.from_os_error(exc)


def _failed(wants_json: bool, code: int, message: str, hint: str | None, details: dict[str, Any] | None = None) -> int:
    """The exit code; with --json, the failure as JSON on stdout too (the message is on stderr).

    The code is "rc" (as Ansible names it): "exit_code" and "exit_status" in a db_health stop
    block are systemd's $EXIT_CODE and $EXIT_STATUS, strings such as "killed" and "KILL"."""
    if wants_json:
        print(fsutil.to_json({**(details or {}), "result": "fail", "rc": code, "error": message, "hint": hint}))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rc = _main(argv)
    monitor.after_command(argv, rc)  # metrics state, queued notifications, neo_db.prom: never changes rc
    return rc


def _main(argv: list[str]) -> int:
    parser = build_parser()
    debug = "--debug" in argv
    logs.setup_streams()
    logs.setup(0)
    args: argparse.Namespace | None = None

    def wants_json() -> bool:
        return bool(getattr(args, "json", False)) if args is not None else "--json" in argv

    try:
        args = parser.parse_args(argv)
        logs.setup(-1 if args.quiet else args.verbose, dry_run=bool(getattr(args, "dry_run", False)))
        return COMMANDS[args.command](args)
    except GateError as exc:
        log.error("%s", exc.message, extra={"plain": True})
        if exc.hint:
            log.error("next: %s", exc.hint, extra={"plain": True})
        return _failed(wants_json(), exc.exit_code, exc.message, exc.hint, exc.details)
    except NeoDbError as exc:
        log.error("%s", exc.message)
        if exc.hint:
            log.error("next: %s", exc.hint, extra={"plain": True})
        return _failed(wants_json(), exc.exit_code, exc.message, exc.hint, exc.details)
    except SystemExit as exc:  # argparse --help / --version
        return int(exc.code) if isinstance(exc.code, int) else USAGE
    except KeyboardInterrupt:
        log.error("interrupted; nothing under a final name was left half-written (temp files are removed on the next run)")
        return 130
    except BrokenPipeError:
        return OK
    except OSError as exc:  # a missing, unwritable or full directory: foreseeable, so never an "internal error"
        err = _path_error(exc, args)
        log.error("%s", err.message)
        log.error("next: %s", err.hint, extra={"plain": True})
        return _failed(wants_json(), err.exit_code, err.message, err.hint)
    except Exception as exc:  # an internal error must still never leave a bare traceback for the operator
        log.error("internal error: %s: %s", type(exc).__name__, exc)
        if debug:
            traceback.print_exc()
        else:
            log.error("next: rerun with --debug for the traceback, and report it", extra={"plain": True})
        hint = "rerun with --debug for the traceback, and report it"
        return _failed(wants_json(), FAILURE, f"internal error: {type(exc).__name__}: {exc}", hint)
