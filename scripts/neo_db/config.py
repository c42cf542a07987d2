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
import unicodedata
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

SESSION_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z-]{0,7}\Z")  # \Z: "$" also matches before a final newline


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
    # The installed neo-db (the role's neo_safeguards_bin): what `confirm` expects the hooks to run.
    neo_db_bin: Path = Path("/usr/local/bin/neo-db")
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
    # The db_path as configured, when it is (or runs through) a symlink. db_path itself is then
    # the real file, resolved once at load: SQLite keeps the -wal and -shm beside the real
    # file, so every check, copy, holder probe and restore works there.
    db_link: Path | None = None
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
    def db_name(self) -> str:
        """The DB's name in backup names: as configured (a symlink's target may be named otherwise)."""
        return (self.db_link or self.db_path).name

    @property
    def db_stem(self) -> str:
        return Path(self.db_name).stem

    @property
    def db_label(self) -> str:
        """db_path for a message: the real file, and the configured symlink that leads there."""
        return f"{self.db_path} (db_path {self.db_link} is a symlink to it)" if self.db_link else str(self.db_path)

    def summary_path(self, session: str) -> Path | None:
        if not self.session_summary_path:
            return None
        return Path(self.session_summary_path.replace("{session}", session))

    def key_for(self, path: str | os.PathLike[str]) -> tuple[str, Path] | None:
        """The config key whose directory holds path (db_path: the DB's directory), and the key's value."""
        target = os.path.normpath(os.path.abspath(os.fspath(path)))
        candidates = (
            ("db_path", self.db_path, self.db_path.parent),
            ("backup_dir", self.backup_dir, self.backup_dir),
            ("exports_dir", self.exports_dir, self.exports_dir),
            ("state_dir", self.state_dir, self.state_dir),
            ("unit_dir", self.unit_dir, self.unit_dir),
        )
        matches = [(len(os.fspath(holder)), key, value) for key, value, holder in candidates if _is_within(target, os.fspath(holder))]
        if not matches:
            return None
        _, key, value = max(matches)
        return key, value

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


def unsafe_chars(value: str) -> str | None:
    """What in `value` a line-based reader (session.env, systemd units, the journal) would split or change, or None."""
    for c in value:
        if unicodedata.category(c) == "Cc":
            return f"the control character {c!r}"
    if "\\" in value:
        return "a backslash (systemd reads it as an escape)"
    if value != value.strip():
        return "leading or trailing whitespace (systemd strips it)"
    return None


def _abs_path(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "an absolute path (a non-empty string starting with /)"
    if not value.startswith("/"):
        return "an absolute path starting with / (relative paths depend on the working directory)"
    if any(part == ".." for part in value.split("/")):
        return "an absolute path without '..' components"
    unsafe = unsafe_chars(value)
    if unsafe:
        return (
            f"an absolute path without control characters (newline, tab, NUL...), backslashes or surrounding spaces; "
            f"this one has {unsafe}, which would inject or break a line in session.env and the units"
        )
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
    # Not starting with '-': systemctl would read it as an option (-H: another host over ssh).
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9:_.@][A-Za-z0-9:_.@-]{0,199}", value) and not value.endswith(".service"):
        return None
    return "a systemd unit name without .service, not starting with '-', e.g. neo-engine"


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


RESERVED_SNAPSHOT_PATHS = ("db", "backup-metadata.json")


def _relative_dest(value: Any) -> str | None:
    if not isinstance(value, str) or not value or value.startswith("/") or unsafe_chars(value):
        return "a relative path inside the snapshot without control characters or backslashes, e.g. config/project-registry.json"
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
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9:_.@][A-Za-z0-9:_.@-]{0,199}\.timer", value):
        return None
    return "a systemd timer unit name, not starting with '-', e.g. neo-db-archive.timer"


_RETENTION_WHY = f" (FLAG-023 §7 keeps session backups at least {MIN_RETENTION_DAYS} days)"

ROLE_PREFIX = "neo_safeguards_"
_ROLE = object()  # Field.role's default: the role variable is ROLE_PREFIX + the key


@dataclasses.dataclass(frozen=True)
class Field:
    """One config key, declared once: what it holds, what is allowed, its default and what it means.

    Everything else is derived from it: validation and its messages here, and (scripts/gen-role-schema)
    the neo_safeguards role's argument_specs entries, the README rows and the config template.
    ``type`` is the YAML type as Ansible's argument_spec names it (str, int, bool, list; ``elements`` for a
    list's items); ``lo``/``hi`` bound an int; ``choices`` maps each allowed value to what it means;
    ``check`` is a rule beyond those (a path, a name pattern); ``role`` is the role variable that sets the
    key (None: the role leaves it at its default).
    """

    type: str
    doc: str
    default: Any = None
    required: bool = False
    lo: int | None = None
    hi: int | None = None
    why: str = ""
    choices: Mapping[str, str] = dataclasses.field(default_factory=dict)
    elements: str | None = None
    check: Validator | None = None
    role: Any = _ROLE

    def problem(self, value: Any) -> str | None:
        """None when value is allowed, else what is allowed."""
        if self.check is not None:
            return self.check(value)
        if self.choices:
            # A list, not the mapping: a value may be unhashable (a list, a mapping).
            return None if value in list(self.choices) else " or ".join(f"{k} ({v})" for k, v in self.choices.items())
        if self.type == "bool":
            return _bool(value)
        if self.type == "int" and self.lo is not None and self.hi is not None:
            return _int_range(self.lo, self.hi, self.why)(value)
        raise TypeError(f"a {self.type} field needs check, choices or lo/hi")  # a programming error in SCHEMA

    def role_var(self, key: str) -> str | None:
        return ROLE_PREFIX + key if self.role is _ROLE else self.role


def _path(doc: str, default: Any = None, *, required: bool = False, optional: bool = False, role: Any = _ROLE) -> Field:
    check = _optional_abs_path if optional else _abs_path
    return Field("str", doc, default, required=required, check=check, role=role)


def _int(doc: str, default: int, lo: int, hi: int, why: str = "", *, role: Any = _ROLE) -> Field:
    return Field("int", doc, default, lo=lo, hi=hi, why=why, role=role)


SCHEMA: dict[str, Field] = {
    "db_path": _path("The live DB", required=True),
    "backup_dir": _path("Holds pre_session/, post_session/, abnormal_stop/, manual/ (or snapshots/)", required=True),
    "exports_dir": _path("Reader-visible artifacts; db_health lands in sessions/<ID>/", required=True),
    "state_dir": _path("neo-db's session state", required=True),
    "integrity_check_on_startup": Field("bool", "FLAG-049: run PRAGMA integrity_check before every session", True),
    "pre_session_backup_enabled": Field("bool", "FLAG-049: backup before every session", True),
    "post_session_backup_enabled": Field("bool", "FLAG-049: backup after every clean close", True),
    "abnormal_stop_backup_enabled": Field("bool", "FLAG-023: best-effort preservation after an abnormal stop", True),
    "backup_retention_count": _int("Keep at least the newest N backups of each phase", 10, 1, 100000),
    "backup_retention_days": _int(
        "Never prune a session backup younger than this many days", 14, MIN_RETENTION_DAYS, MAX_RETENTION_DAYS, _RETENTION_WHY
    ),
    "abnormal_retention_days": _int(
        "Never prune an abnormal-stop backup younger than this many days", 30, MIN_RETENTION_DAYS, MAX_RETENTION_DAYS, _RETENTION_WHY
    ),
    "clean_exit_statuses": Field(
        "list", "Engine exit statuses that count as a clean close (0 to 255)", [0], elements="int", check=_exit_statuses
    ),
    "session_prefix": Field(
        "str", "Session ID prefix (S053): 1 to 8 letters or dashes, starting with a letter", "S", check=_session_prefix
    ),
    "session_first_number": _int("First session number when no counter exists", 1, 1, 999999),
    "session_number_width": _int("Digits of the session number (zero-padded)", 3, 1, 6, role=None),
    "session_summary_path": Field(
        "str", "Engine's session summary; db_health is merged into it ({session} is replaced)", None, check=_summary_pattern
    ),
    "integrity_max_errors": _int("Errors PRAGMA integrity_check reports at most", 20, 1, 1000, role=None),
    "prune_after_session": Field("bool", "Prune by the retention policy after each session", True, role=None),
    "lock_timeout_seconds": _int("How long a run waits for the state lock, in seconds", 120, 0, 3600, role=None),
    "engine_unit": Field("str", "Name of the engine's systemd unit (without .service)", "neo-engine", check=_unit_name),
    "readers_group": Field("str", "Group that reader snapshots are published to (mode 0440)", "neo-readers", check=_group_name),
    "snapshot_retention_count": _int("Reader snapshots kept in exports/snapshots/", 24, 1, 10000),
    "drill_max_age_days": _int("Age in days of the newest restore drill that confirm accepts", 8, 1, 365, role=None),
    "unit_dir": _path("Where the engine's unit and drop-in are installed", "/etc/systemd/system", role=None),
    "neo_db_bin": _path("Symlink to the neo-db launcher on the PATH", "/usr/local/bin/neo-db", role="neo_safeguards_bin"),
    "hetzner_fact_path": _path("The Hetzner record read by neo-db confirm", "/etc/ansible/facts.d/hetzner_backups.fact", optional=True),
    "layout": Field(
        "str",
        "Backup layout",
        "phases",
        choices={"phases": "NEO: one directory per phase", "snapshots": "AtoCore: snapshots/<timestamp>/"},
    ),
    "extra_files": Field(
        "list",
        "Files captured with the DB in each snapshot (snapshots layout): [{path: /abs/source, dest: relative/target}]",
        [],
        elements="dict",
        check=_extra_files,
    ),
    "snapshot_notes": Field("list", "Notes written into each snapshot's backup-metadata.json", [], elements="str", check=_notes),
    "backup_timer": Field("str", "The timer that takes the timed backups", "neo-db-archive.timer", check=_timer_name, role=None),
    "metrics_textfile_dir": _path("node_exporter's textfile dir where neo-db writes neo_db.prom; null for no metrics", optional=True),
    "notify_secrets_path": _path("Root-only 0600 file with the notifier URLs; null for no notifications", optional=True),
    "notify_explicitly_off": Field("bool", "No notifier is a deliberate choice (neo-db confirm accepts it)", False),
    "notify_timeout_seconds": _int("Timeout of one notification delivery attempt, in seconds", 5, 1, 60),
    "notify_retries": _int("Delivery attempts per notifier target", 3, 1, 10),
    "notify_journal_lines": _int("Journal lines sent with a failure notification", 20, 0, 200, role=None),
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_within(child: str, parent: str) -> bool:
    child_n = os.path.normpath(child)
    parent_n = os.path.normpath(parent)
    return child_n == parent_n or child_n.startswith(parent_n.rstrip("/") + "/")


def _is_within_resolved(child: str, parent: str) -> bool:
    """Within, as written or once symlinks that exist already are resolved."""
    return _is_within(child, parent) or _is_within(os.path.realpath(child), os.path.realpath(parent))


def _reader_exposure(values: Mapping[str, Any]) -> list[str]:
    """Readers get exports_dir: backups, or the live DB, must never be reachable through it."""
    exports, backups, db_path = values.get("exports_dir"), values.get("backup_dir"), values.get("db_path")
    if not isinstance(exports, str):
        return []
    problems = []
    if isinstance(backups, str) and _is_within_resolved(backups, exports):
        problems.append(
            f"key 'backup_dir': value {_show(backups)} is key 'exports_dir' ({exports!r}) or inside it: readers of exports_dir "
            "could read every backup; expected a directory outside exports_dir (e.g. /opt/neo/runtime/backups beside "
            "/opt/neo/runtime/exports)"
        )
    elif isinstance(backups, str) and _is_within_resolved(exports, backups):
        problems.append(
            f"key 'exports_dir': value {_show(exports)} is inside key 'backup_dir' ({backups!r}): readers would need their way "
            "into backup_dir to reach it, and with it the backups; expected a directory outside backup_dir "
            "(e.g. /opt/neo/runtime/exports beside /opt/neo/runtime/backups)"
        )
    if isinstance(db_path, str):
        # The DB's directory as written, and the one a symlinked db_path leads to (where SQLite keeps the -wal).
        written_dir = os.path.dirname(os.path.normpath(db_path))
        real_dir = os.path.dirname(os.path.realpath(db_path))
        for where in dict.fromkeys((written_dir, real_dir)):
            if _is_within_resolved(where, exports):
                led = "" if where == written_dir else f" (it is a symlink into {where!r})"
                problems.append(
                    f"key 'db_path': value {_show(db_path)} is inside key 'exports_dir' ({exports!r}){led}: readers could read "
                    "the live DB and its -wal; expected the DB outside exports_dir (e.g. /opt/neo/runtime/db/neo_live_stage1.db)"
                )
                break
    return problems


def _for_role(source: str, problems: list[str]) -> ConfigError:
    """The problems of a config the role rendered, naming the role variable that sets each key."""

    def name(match: re.Match[str]) -> str:
        field = SCHEMA.get(match.group(1))
        var = field.role_var(match.group(1)) if field else None
        return f"{var} (key '{match.group(1)}')" if var else match.group(0)

    return ConfigError(
        f"{source} (rendered from the neo_safeguards role's variables)",
        [re.sub(r"\bkey '([a-z_]+)'", name, p) for p in problems],
        hint="set the role variables named above (inventory, group_vars/ or -e), then run the play again",
    )


def validate(data: Any, source: str, *, role_vars: bool = False, schema_only: bool = False) -> Config:
    """Check a parsed YAML document and build a Config, or raise ConfigError with every problem.

    role_vars: name the neo_safeguards role variable beside each key (the role renders this config).
    schema_only: each key on its own (SCHEMA), without the rules between keys, some of which look at
    this machine's filesystem (the role checks its variables on the controller this way, early).
    """
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

    values = _known_values(section, problems)
    if not schema_only:
        problems.extend(_db_path_problems(values))
        problems.extend(_reader_exposure(values))
        if values.get("extra_files") and values.get("layout", "phases") != "snapshots":
            problems.append(
                "key 'extra_files': extra files are captured in snapshot directories only; set 'layout: snapshots', or remove extra_files"
            )
    if problems:
        raise _for_role(source, problems) if role_vars else ConfigError(source, problems)
    return Config(source=source, **_config_kwargs(values))


def _known_values(section: Mapping[Any, Any], problems: list[str]) -> dict[str, Any]:
    """The keys of the section that SCHEMA knows and allows; every other key, and every missing required one, a problem."""
    values: dict[str, Any] = {}
    for key, value in section.items():
        if not isinstance(key, str) or key not in SCHEMA:
            near = difflib.get_close_matches(str(key), SCHEMA, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            problems.append(f"key {_show(key)} is unknown{hint}; known keys: {', '.join(SCHEMA)}")
            continue
        allowed = SCHEMA[key].problem(value)
        if allowed:
            problems.append(f"key '{key}': value {_show(value)} is not allowed; expected {allowed}")
            continue
        values[key] = value
    for key, field in SCHEMA.items():
        if field.required and key not in section:
            problems.append(f"key '{key}' is missing; it is required ({field.problem(None)})")
    return values


def _db_path_problems(values: dict[str, Any]) -> list[str]:
    """db_path names the database (not a side file, not a dangling link), and no copy directory sits beside it."""
    db_path = values.get("db_path")
    if not isinstance(db_path, str):
        return []
    problems = []
    db_dir = os.path.dirname(os.path.normpath(db_path))
    real = os.path.realpath(db_path)
    if os.path.normpath(db_path).endswith(("-wal", "-shm", "-journal")):
        problems.append(f"key 'db_path': value {_show(db_path)} names a SQLite side file; name the database itself")
    if os.path.islink(real):
        problems.append(
            f"key 'db_path': value {_show(db_path)} is a symlink that never reaches a file (a loop at {real!r}); "
            "expected the database itself, or a symlink that leads to it"
        )
    for key in ("backup_dir", "exports_dir"):
        other = values.get(key)
        for where in dict.fromkeys((db_dir, os.path.dirname(real))):
            if isinstance(other, str) and _is_within(other, where):
                problems.append(
                    f"key '{key}': value {_show(other)} is inside the DB's directory {where!r}"
                    + ("" if where == db_dir else f" (where the symlink db_path {db_path!r} leads)")
                    + "; expected a directory outside it, so copies never sit beside the live DB "
                    f"(e.g. {os.path.join(os.path.dirname(where), {'backup_dir': 'backups', 'exports_dir': 'exports'}[key])!r})"
                )
                break
    return problems


def _config_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """The checked values as Config's fields: paths normalised (db_path resolved, its link kept), lists as tuples."""
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key == "db_path":
            configured = Path(os.path.normpath(value))
            kwargs[key] = Path(os.path.realpath(configured))
            if kwargs[key] != configured:
                kwargs["db_link"] = configured
        elif key in ("backup_dir", "exports_dir", "state_dir", "unit_dir", "neo_db_bin") or (
            key in ("hetzner_fact_path", "metrics_textfile_dir", "notify_secrets_path") and value
        ):
            kwargs[key] = Path(os.path.normpath(value))
        elif key in {"clean_exit_statuses", "snapshot_notes"}:
            kwargs[key] = tuple(value)
        elif key == "extra_files":
            kwargs[key] = tuple((Path(os.path.normpath(i["path"])), i["dest"]) for i in _extra_file_items(value))
        else:
            kwargs[key] = value
    return kwargs


class _Refused(yaml.YAMLError):
    """YAML that parses but that this config refuses; the message names the key or alias and its line."""


class _ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader, refusing what YAML would accept silently.

    Duplicate keys: YAML keeps the last value without a word, so a second
    ``integrity_check_on_startup: false`` further down would turn the gate off. Merge keys
    (``<<``) too: from a list of mappings YAML keeps the first value of a key instead.

    Aliases (``*name``), all of them: this config has no use for them (the role writes it
    as plain JSON values), and a 1 KB "billion laughs" of nested aliases expands to
    gigabytes as soon as anything walks the value. The first alias stops the parse, before
    anything is expanded.
    """

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.current_event  # check_event() has just peeked it
            anchor = getattr(event, "anchor", None)
            raise _Refused(
                f"an alias (*{anchor}) at line {event.start_mark.line + 1}, column {event.start_mark.column + 1}: "
                "anchors and aliases are not allowed in this config; write the value out in full"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused(
                    f"a merge key (<<) at line {key_node.start_mark.line + 1}: not allowed in this config (from a list of "
                    "mappings YAML takes the first value of a key, not the last); write the keys out"
                )
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise _Refused(
                    f"key {_show(key)} appears twice in one mapping (line {first}, and again at line {line}); "
                    "YAML would silently keep only the last value: keep one of them"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load(path: str | os.PathLike[str], *, role_vars: bool = False, schema_only: bool = False) -> Config:
    """Read and validate one config file (role_vars, schema_only: as validate())."""
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
        data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506  (a SafeLoader subclass)
    except _Refused as exc:
        raise ConfigError(source, [str(exc)]) from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, [f"the YAML does not parse{where}: {problem}"]) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise ConfigError(source, [f"the YAML does not parse: {exc}"]) from None
    return validate(data, source, role_vars=role_vars, schema_only=schema_only)


def resolve_path(cli_path: str | None) -> str:
    return cli_path or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG_PATH
