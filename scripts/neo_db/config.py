"""Load and validate the safeguards config.

The config is YAML under a top-level ``db_safeguards:`` key. It comes from
``--config PATH``, else ``$NEO_DB_CONFIG``, else ``/etc/neo/db_safeguards.yml``.
Validation collects every problem at once; each names the key, the bad value and
what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/neo/db_safeguards.yml"
ENV_CONFIG = "NEO_DB_CONFIG"
TOP_KEY = "db_safeguards"

# FLAG-023 §7: keep session backups at least 14 to 30 days.
MIN_RETENTION_DAYS = 14
MAX_RETENTION_DAYS = 3650

SESSION_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z-]{0,7}$")


@dataclasses.dataclass(frozen=True)
class Config:
    db_path: Path
    backup_dir: Path
    exports_dir: Path
    state_dir: Path
    integrity_check_on_startup: bool = True
    pre_session_backup_enabled: bool = True
    post_session_backup_enabled: bool = True
    abnormal_stop_backup_enabled: bool = True
    backup_retention_count: int = 10
    backup_retention_days: int = 14
    abnormal_retention_days: int = 30
    clean_exit_statuses: tuple[int, ...] = (0,)
    session_prefix: str = "S"
    session_first_number: int = 1
    session_number_width: int = 3
    session_summary_path: str | None = None
    integrity_max_errors: int = 20
    prune_after_session: bool = True
    lock_timeout_seconds: int = 120
    engine_unit: str = "neo-engine"
    readers_group: str | None = "neo-readers"
    snapshot_retention_count: int = 24
    drill_max_age_days: int = 8
    unit_dir: Path = Path("/etc/systemd/system")
    hetzner_fact_path: Path | None = Path("/etc/ansible/facts.d/hetzner_backups.fact")
    # phases: flat files in pre_session/, post_session/, abnormal_stop/, manual/ (NEO's sessions).
    # snapshots: timed backups as snapshots/<timestamp>/ directories (db/, extra files,
    # backup-metadata.json), for an application without sessions (AtoCore).
    layout: str = "phases"
    # Files captured with the DB in each snapshot directory: (source path, path inside the snapshot).
    extra_files: tuple[tuple[Path, str], ...] = ()
    snapshot_notes: tuple[str, ...] = ()
    # The timer that takes the timed backups (what `confirm` checks in the snapshots layout).
    backup_timer: str = "neo-db-archive.timer"
    # Monitoring (neo_monitoring role): node_exporter's textfile dir for neo_db.prom (null: no
    # metrics), the root-only 0600 file with the notifier URLs (null: no notifications), or an
    # explicit "no notifier" choice for confirm; bounds for each delivery attempt.
    metrics_textfile_dir: Path | None = None
    notify_secrets_path: Path | None = None
    notify_explicitly_off: bool = False
    notify_timeout_seconds: int = 5
    notify_retries: int = 3
    notify_journal_lines: int = 20
    source: str = "<defaults>"

    @property
    def db_stem(self) -> str:
        return self.db_path.stem

    def summary_path(self, session: str) -> Path | None:
        if not self.session_summary_path:
            return None
        return Path(self.session_summary_path.replace("{session}", session))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "source":
                continue
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [list(map(str, v)) if isinstance(v, tuple) else v for v in value]
            out[f.name] = value
        return out


# ---- validators: each returns None when the value is fine, else what is allowed ----

Validator = Callable[[Any], str | None]


def _abs_path(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "an absolute path (a non-empty string starting with /)"
    if not value.startswith("/"):
        return "an absolute path starting with / (relative paths depend on the working directory)"
    if "\x00" in value or any(part == ".." for part in value.split("/")):
        return "an absolute path without '..' components or NUL bytes"
    return None


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _int_range(lo: int, hi: int, why: str = "") -> Validator:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"a whole number from {lo} to {hi}{why}"
        return None

    return check


def _exit_statuses(value: Any) -> str | None:
    allowed = "a non-empty list of exit statuses, whole numbers from 0 to 255, e.g. [0]"
    if not isinstance(value, list) or not value:
        return allowed
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 255:
            return allowed
    return None


def _session_prefix(value: Any) -> str | None:
    if isinstance(value, str) and SESSION_PREFIX_RE.match(value):
        return None
    return "1 to 8 letters or '-', starting with a letter, e.g. S"


def _unit_name(value: Any) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9:_.@-]{1,200}", value) and not value.endswith(".service"):
        return None
    return "a systemd unit name without .service, e.g. neo-engine"


def _group_name(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value)):
        return None
    return "null, or a group name such as neo-readers"


def _optional_abs_path(value: Any) -> str | None:
    return None if value is None else (_abs_path(value) and f"null, or {_abs_path(value)}")


def _summary_pattern(value: Any) -> str | None:
    if value is None:
        return None
    problem = _abs_path(value)
    if problem:
        return f"null, or {problem} containing {{session}}"
    if "{session}" not in value:
        return "null, or an absolute path containing {session}, e.g. /opt/neo/runtime/exports/sessions/{session}/summary.json"
    return None


LAYOUTS = ("phases", "snapshots")
RESERVED_SNAPSHOT_PATHS = ("db", "backup-metadata.json")


def _layout(value: Any) -> str | None:
    return None if value in LAYOUTS else "phases (NEO: one directory per phase) or snapshots (AtoCore: snapshots/<timestamp>/)"


def _relative_dest(value: Any) -> str | None:
    if not isinstance(value, str) or not value or value.startswith("/") or "\x00" in value:
        return "a relative path inside the snapshot, e.g. config/project-registry.json"
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "a relative path without empty, '.' or '..' components, e.g. config/project-registry.json"
    if parts[0] in RESERVED_SNAPSHOT_PATHS:
        return f"a path outside {' and '.join(RESERVED_SNAPSHOT_PATHS)} (neo-db writes those itself)"
    return None


def _extra_file_items(value: list[Any]) -> list[Any]:
    """extra_files entries as mappings: a bare path means {path: P, dest: config/<basename of P>}."""
    out = []
    for raw in value:
        item = {"path": raw} if isinstance(raw, str) else raw
        if isinstance(item, Mapping) and isinstance(item.get("path"), str) and "dest" not in item:
            item = {**item, "dest": f"config/{os.path.basename(item['path'])}"}
        out.append(item)
    return out


def _extra_files(value: Any) -> str | None:
    allowed = (
        "a list of absolute paths, or of {path: /abs/source, dest: relative/target} mappings, "
        "e.g. [{path: /srv/storage/atocore/config/project-registry.json, dest: config/project-registry.json}]"
    )
    if not isinstance(value, list):
        return allowed
    dests: set[str] = set()
    for item in _extra_file_items(value):
        if not isinstance(item, Mapping) or set(item) - {"path", "dest"} or "path" not in item:
            return allowed
        problem = _abs_path(item["path"])
        if problem:
            return f"{allowed}; {item['path']!r} is not {problem}"
        dest = item["dest"]
        problem = _relative_dest(dest)
        if problem:
            return f"{allowed}; dest {dest!r} is not {problem}"
        if dest in dests:
            return f"{allowed}; dest {dest!r} appears twice"
        dests.add(dest)
    return None


def _notes(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) and len(v) <= 1000 for v in value):
        return None
    return "a list of strings (each up to 1000 characters), written into each snapshot's backup-metadata.json"


def _timer_name(value: Any) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9:_.@-]{1,200}\.timer", value):
        return None
    return "a systemd timer unit name, e.g. neo-db-archive.timer"


_RETENTION_WHY = f" (FLAG-023 §7 keeps session backups at least {MIN_RETENTION_DAYS} days)"

SCHEMA: dict[str, tuple[Validator, bool]] = {
    # key: (validator, required)
    "db_path": (_abs_path, True),
    "backup_dir": (_abs_path, True),
    "exports_dir": (_abs_path, True),
    "state_dir": (_abs_path, True),
    "integrity_check_on_startup": (_bool, False),
    "pre_session_backup_enabled": (_bool, False),
    "post_session_backup_enabled": (_bool, False),
    "abnormal_stop_backup_enabled": (_bool, False),
    "backup_retention_count": (_int_range(1, 100000), False),
    "backup_retention_days": (_int_range(MIN_RETENTION_DAYS, MAX_RETENTION_DAYS, _RETENTION_WHY), False),
    "abnormal_retention_days": (_int_range(MIN_RETENTION_DAYS, MAX_RETENTION_DAYS, _RETENTION_WHY), False),
    "clean_exit_statuses": (_exit_statuses, False),
    "session_prefix": (_session_prefix, False),
    "session_first_number": (_int_range(1, 999999), False),
    "session_number_width": (_int_range(1, 6), False),
    "session_summary_path": (_summary_pattern, False),
    "integrity_max_errors": (_int_range(1, 1000), False),
    "prune_after_session": (_bool, False),
    "lock_timeout_seconds": (_int_range(0, 3600), False),
    "engine_unit": (_unit_name, False),
    "readers_group": (_group_name, False),
    "snapshot_retention_count": (_int_range(1, 10000), False),
    "drill_max_age_days": (_int_range(1, 365), False),
    "unit_dir": (_abs_path, False),
    "hetzner_fact_path": (_optional_abs_path, False),
    "layout": (_layout, False),
    "extra_files": (_extra_files, False),
    "snapshot_notes": (_notes, False),
    "backup_timer": (_timer_name, False),
    "metrics_textfile_dir": (_optional_abs_path, False),
    "notify_secrets_path": (_optional_abs_path, False),
    "notify_explicitly_off": (_bool, False),
    "notify_timeout_seconds": (_int_range(1, 60), False),
    "notify_retries": (_int_range(1, 10), False),
    "notify_journal_lines": (_int_range(0, 200), False),
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_within(child: str, parent: str) -> bool:
    child_n = os.path.normpath(child)
    parent_n = os.path.normpath(parent)
    return child_n == parent_n or child_n.startswith(parent_n.rstrip("/") + "/")


def validate(data: Any, source: str) -> Config:
    """Check a parsed YAML document and build a Config, or raise ConfigError with every problem."""
    if not isinstance(data, Mapping) or TOP_KEY not in data:
        raise ConfigError(source, [f"the file must be a YAML mapping with a top-level '{TOP_KEY}:' key"])
    extra_top = [str(k) for k in data if k != TOP_KEY]
    section = data[TOP_KEY]
    problems: list[str] = []
    if extra_top:
        problems.append(f"unknown top-level key(s) {', '.join(map(repr, extra_top))}: only '{TOP_KEY}' is allowed")
    if not isinstance(section, Mapping):
        problems.append(f"'{TOP_KEY}' is {_show(section)}: it must be a mapping of keys to values")
        raise ConfigError(source, problems)

    values: dict[str, Any] = {}
    for key, value in section.items():
        if not isinstance(key, str) or key not in SCHEMA:
            near = difflib.get_close_matches(str(key), SCHEMA, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            problems.append(f"key {_show(key)} is unknown{hint}; known keys: {', '.join(SCHEMA)}")
            continue
        validator, _ = SCHEMA[key]
        allowed = validator(value)
        if allowed:
            problems.append(f"key '{key}': value {_show(value)} is not allowed; expected {allowed}")
            continue
        values[key] = value
    for key, (_, required) in SCHEMA.items():
        if required and key not in section:
            problems.append(f"key '{key}' is missing; it is required ({_abs_path(None)})")

    db_path = values.get("db_path")
    if isinstance(db_path, str):
        db_dir = os.path.dirname(os.path.normpath(db_path))
        if os.path.normpath(db_path).endswith(("-wal", "-shm", "-journal")):
            problems.append(f"key 'db_path': value {_show(db_path)} names a SQLite side file; name the database itself")
        for key in ("backup_dir", "exports_dir"):
            other = values.get(key)
            if isinstance(other, str) and _is_within(other, db_dir):
                problems.append(
                    f"key '{key}': value {_show(other)} is inside the DB's directory {db_dir!r}; "
                    f"expected a directory outside it, so copies never sit beside the live DB "
                    f"(e.g. {os.path.join(os.path.dirname(db_dir), {'backup_dir': 'backups', 'exports_dir': 'exports'}[key])!r})"
                )
    if values.get("extra_files") and values.get("layout", "phases") != "snapshots":
        problems.append(
            "key 'extra_files': extra files are captured in snapshot directories only; set 'layout: snapshots', or remove extra_files"
        )
    if problems:
        raise ConfigError(source, problems)

    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("db_path", "backup_dir", "exports_dir", "state_dir", "unit_dir") or (
            key in ("hetzner_fact_path", "metrics_textfile_dir", "notify_secrets_path") and value
        ):
            kwargs[key] = Path(os.path.normpath(value))
        elif key in {"clean_exit_statuses", "snapshot_notes"}:
            kwargs[key] = tuple(value)
        elif key == "extra_files":
            kwargs[key] = tuple((Path(os.path.normpath(i["path"])), i["dest"]) for i in _extra_file_items(value))
        else:
            kwargs[key] = value
    return Config(source=source, **kwargs)


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate one config file."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(
            source,
            [f"the file does not exist; pass --config PATH, set ${ENV_CONFIG}, or create {DEFAULT_CONFIG_PATH}"],
            hint="on the VPS the safeguards role writes it: ansible-playbook site.yml --tags safeguards",
        ) from None
    except IsADirectoryError:
        raise ConfigError(source, ["this is a directory; name the YAML file"]) from None
    except PermissionError:
        raise ConfigError(source, ["permission denied reading the file; run as a user who can read it"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [f"the file is not UTF-8 text (byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, [f"the YAML does not parse{where}: {problem}"]) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise ConfigError(source, [f"the YAML does not parse: {exc}"]) from None
    return validate(data, source)


def resolve_path(cli_path: str | None) -> str:
    return cli_path or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG_PATH
