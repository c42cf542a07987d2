"""What systemd says about the engine's unit, or what its unit files say where systemd is not running."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from typing import Any


class SystemdError(Exception):
    """systemctl or busctl gave no usable answer. Callers fail closed: an unread state is never idle, off or fine."""


TIMEOUT = 10.0  # seconds for one systemctl/busctl call


RUN_DIR = Path("/run/systemd/system")  # present while systemd is PID 1 (sd_booted())


def running() -> bool:
    """Whether systemd runs here. Not whether systemctl is on PATH: where it runs and systemctl cannot be
    found, every question fails (SystemdError) rather than reading as "no systemd, nothing to ask"."""
    return RUN_DIR.is_dir()


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        # systemd prints UTF-8 whatever the locale; a byte that is not is replaced, never a traceback.
        return subprocess.run(argv, check=False, capture_output=True, encoding="utf-8", errors="replace", timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemdError(f"{' '.join(argv[:2])} failed: {exc}") from None


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    return " ".join(proc.stderr.split())[:200] or "no output"


def show(unit: str, *props: str) -> dict[str, str]:
    """`systemctl show UNIT -p A -p B`: each whole line is KEY=VALUE, split at its first '=' (a value may hold
    '=' and ';'). Only the properties asked for are kept; one systemd leaves out (an empty list) is absent."""
    proc = _run(["systemctl", "show", unit, *[f"--property={p}" for p in props]])
    if proc.returncode != 0:
        raise SystemdError(f"systemctl show exit status {proc.returncode}: {_said(proc)}")
    values: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in props:
            values.setdefault(key, value)
    return values


def show_value(unit: str, prop: str) -> str:
    """`systemctl show UNIT -p PROP --value`: one property's value, which must not be empty."""
    proc = _run(["systemctl", "show", unit, f"--property={prop}", "--value"])
    value = proc.stdout.strip()
    if proc.returncode != 0 or not value:
        raise SystemdError(f"systemctl show exit status {proc.returncode}: {_said(proc)}")
    return value


def object_path(unit: str) -> str:
    """The unit's D-Bus object path: its name escaped as systemd's bus_label_escape() does."""
    label = "".join(
        c if c.isascii() and (c.isalpha() or (c.isdigit() and i > 0)) else "".join(f"_{b:02x}" for b in c.encode())
        for i, c in enumerate(unit)
    )
    return f"/org/freedesktop/systemd1/unit/{label or '_'}"


def bus_properties(unit: str, interface: str, props: list[str]) -> dict[str, Any]:
    """Properties as systemd's D-Bus API gives them (`busctl --json=short get-property`): Exec*= commands
    with each argument a string of its own, which `systemctl show` prints joined by spaces (lossy)."""
    argv = ["busctl", "--json=short", "get-property", "org.freedesktop.systemd1", object_path(unit)]
    proc = _run([*argv, f"org.freedesktop.systemd1.{interface}", *props])
    if proc.returncode != 0:
        raise SystemdError(f"busctl get-property {unit} exit status {proc.returncode}: {_said(proc)}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        docs = [json.loads(line) for line in lines]
        data = {p: d["data"] for p, d in zip(props, docs, strict=True)}
    except (ValueError, TypeError, KeyError, RecursionError):
        data = {}
    if len(lines) != len(props) or len(data) != len(props):
        raise SystemdError(f"busctl get-property {unit}: not one JSON value per property {props}: {proc.stdout[:200]!r}")
    return data


def _state_word(verb: str, unit: str) -> str:
    """The state word `systemctl is-enabled|is-active UNIT` prints (it exits non-zero for "disabled", "inactive")."""
    try:
        proc = _run(["systemctl", verb, unit])
    except SystemdError as exc:
        return f"unknown ({exc})"
    words = proc.stdout.split()
    if words:
        return words[0] if proc.returncode == 0 or words[0] not in _ZERO_EXIT else f"unknown ({words[0]}, exit {proc.returncode})"
    return f"unknown (systemctl {verb} exited {proc.returncode}: {proc.stderr.strip() or 'no output'})"


# Words systemctl prints only with exit status 0: printed with another, they are not believed.
_ZERO_EXIT = frozenset({"enabled", "active"})
_BUSY = frozenset({"active", "activating", "deactivating", "reloading", "refreshing"})


def is_active(unit: str) -> bool | None:
    """Whether the service runs (or is starting, stopping, reloading); None where systemd is not running
    (tests, chroots). Raises SystemdError where systemctl cannot tell: never read that as "stopped"."""
    if not running():
        return None
    word = _state_word("is-active", full_name(unit))
    if word in _BUSY:
        return True
    if word in ("inactive", "failed"):
        return False
    raise SystemdError(f"systemctl is-active {full_name(unit)}: {word}")


@dataclasses.dataclass(frozen=True)
class UnitState:
    """Whether a unit is enabled and active; None where that cannot be told (systemd not running)."""

    enabled: bool
    active: bool | None
    evidence: str


def systemctl_state(unit: str) -> UnitState:
    """systemd's own answer: `systemctl is-enabled` and `systemctl is-active`. Only "enabled" is enabled
    (static, masked, disabled, linked, enabled-runtime: not at the next boot); an unknown word is neither."""
    enabled, active = _state_word("is-enabled", unit), _state_word("is-active", unit)
    return UnitState(enabled == "enabled", active == "active", f"systemctl is-enabled {unit}: {enabled}; is-active: {active}")


def unit_state(unit: str, unit_dir: Path, target: str = "timers.target") -> UnitState:
    """A timer's (or service's) enablement and activity: systemctl's answer where systemd runs and unit_dir is
    the default, else the `<target>.wants/` link `systemctl enable` leaves in unit_dir (activity unknown)."""
    full = full_name(unit)
    if running() and unit_dir == DEFAULT_UNIT_DIR:
        return systemctl_state(full)
    wants = unit_dir / f"{target}.wants" / full
    enabled = wants.exists()
    return UnitState(
        enabled,
        None,
        f"{wants}: {'present' if enabled else 'missing'} (systemd is not running here: whether it is active is not known)",
    )


def full_name(unit: str) -> str:
    """A unit name with its type: engine units are named without .service in the config."""
    return unit if unit.endswith((".service", ".timer")) else f"{unit}.service"


@dataclasses.dataclass(frozen=True)
class ExecCommand:
    """One command of an Exec*= setting, as systemd runs it."""

    path: str  # the executable
    argv: tuple[str, ...]  # argv[0] first (another word than path with the '@' prefix)
    ignore_errors: bool  # the '-' prefix: a failure does not fail the start

    def __str__(self) -> str:
        args = " ".join(_shown(a) for a in self.argv[1:])
        text = f"{'-' if self.ignore_errors else ''}{self.path}{' ' if args else ''}{args}"
        return text if not self.argv or self.argv[0] == self.path else f"{text} (argv[0]={self.argv[0]})"


def _shown(word: str) -> str:
    """A word as a unit file would need it written: quoted if it holds a space, a quote, a ';' or a backslash."""
    return word if word and not any(c.isspace() or c in "\"'\\;" for c in word) else json.dumps(word)


# Where systemd looks up a command given without a path (systemd.service(5), "Command lines").
EXEC_SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_PREFIXES = "-@:+!"
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "s": " "}


def _words(value: str) -> list[str | None]:
    """A unit file's command line split as systemd splits it: quotes and backslash escapes
    make one word; a lone unquoted ';' separates commands (None here)."""
    words: list[str | None] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            return words
        start, word, quote = i, [], ""
        while i < n and (quote or not value[i].isspace()):
            c = value[i]
            if c == "\\" and i + 1 < n:
                word.append(_ESCAPES.get(value[i + 1], value[i + 1]))
                i += 2
                continue
            if quote and c == quote:
                quote = ""
            elif not quote and c in "\"'":
                quote = c
            else:
                word.append(c)
            i += 1
        words.append(None if value[start:i] == ";" else "".join(word))


def _search(name: str) -> str:
    for directory in EXEC_SEARCH_PATH:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return name


def _parse_line(value: str) -> list[ExecCommand]:
    commands: list[ExecCommand] = []
    current: list[str] = []
    for word in [*_words(value.replace("%%", "%")), None]:
        if word is not None:
            current.append(word)
            continue
        if current:
            first = current[0]
            prefix = first[: len(first) - len(first.lstrip(_PREFIXES))]
            path = first[len(prefix) :]
            if path:
                path = path if path.startswith("/") else _search(path)
                argv = tuple(current[1:]) if "@" in prefix else (path, *current[1:])
                commands.append(ExecCommand(path, argv, "-" in prefix))
        current = []
    return commands


def parse_exec(value: str) -> list[ExecCommand]:
    """The commands of one Exec*= line of a unit file (systemd itself is asked with bus_properties)."""
    return _parse_line(value)


def _bus_commands(value: Any) -> list[ExecCommand]:
    """An Exec*= property as D-Bus gives it, a(sasbttttuii): (path, argv, ignore_errors, times..., pid, code, status)."""
    commands: list[ExecCommand] = []
    for record in value if isinstance(value, list) else [None]:
        if not (isinstance(record, list) and len(record) >= 3 and isinstance(record[0], str) and isinstance(record[1], list)):
            raise SystemdError(f"an Exec record that is not (path, argv, ignore_errors, ...): {str(record)[:200]}")
        if not all(isinstance(a, str) for a in record[1]):
            raise SystemdError(f"an Exec record that is not (path, argv, ignore_errors, ...): {str(record)[:200]}")
        commands.append(ExecCommand(record[0], tuple(record[1]), bool(record[2])))
    return commands


@dataclasses.dataclass(frozen=True)
class UnitView:
    """A unit's settings as systemd runs them (or as its unit files say), and where that came from.

    settings: User, Restart, RestartPreventExitStatus (a service); OnCalendar, Persistent (a timer).
    commands: ExecStartPre, ExecStart, ExecStopPost, each command with its arguments intact.
    An empty view is a unit that is not loaded, or one systemd could not be asked about (where says which)."""

    settings: dict[str, list[str]]
    commands: dict[str, list[ExecCommand]]
    where: str

    def get(self, key: str) -> list[str]:
        return self.settings.get(key, [])


EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStopPost")


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined, as systemd reads a unit file."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("#", ";")):
            if not pending:
                out.append(line)
            continue  # a comment inside a continued line is skipped; a comment is never continued
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def _from_files(unit: str, unit_dir: Path) -> dict[str, list[str]]:
    """Exec*/User (services) or OnCalendar/Persistent (timers) from the unit file and its drop-ins,
    merged as systemd merges them."""
    full = full_name(unit)
    timer = full.endswith(".timer")
    files = [unit_dir / full]
    drop_dir = unit_dir / f"{full}.d"
    if drop_dir.is_dir():
        files += sorted(p for p in drop_dir.iterdir() if p.suffix == ".conf")
    merged: dict[str, list[str]] = {}
    for path in files:
        try:
            lines = _logical_lines(path.read_text())
        except (OSError, UnicodeDecodeError):
            continue
        section = ""
        for line in lines:
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            if section != ("[Timer]" if timer else "[Service]") or "=" not in line:
                continue
            key, value = (part.strip() for part in line.split("=", 1))
            if key in ("ExecStartPre", "ExecStopPost", "ExecStart", "OnCalendar"):
                merged[key] = [] if value == "" else [*merged.get(key, []), value]
            elif key in ("User", "RestartPreventExitStatus", "Restart", "Persistent"):
                merged[key] = [value]
    return merged


def unit_files_view(unit: str, unit_dir: Path) -> UnitView:
    """What the unit files in unit_dir say, whether or not systemd runs here (unit-verify's temp layout, the
    engine's sandbox, a unit_dir set in the config): the one place the drop-ins are merged here, not by systemd."""
    merged = _from_files(unit, unit_dir)
    commands = {k: [c for v in merged.pop(k) for c in _parse_line(v)] for k in EXEC_KEYS if k in merged}
    return UnitView(merged, commands, f"unit files in {unit_dir}")


DEFAULT_UNIT_DIR = Path("/etc/systemd/system")


def _systemd_view(full: str) -> UnitView:
    """systemd's own answer: scalar settings from `systemctl show`, commands and calendars over D-Bus.
    Raises SystemdError where it gives none."""
    timer = full.endswith(".timer")
    scalars = ["LoadState", *(["Persistent"] if timer else ["User", "Restart", "RestartPreventExitStatus"])]
    shown = show(full, *scalars)
    where = f"systemd (systemctl show, busctl get-property {full})"
    load = shown.get("LoadState")
    if not load:
        raise SystemdError(f"systemctl show {full} printed no LoadState")
    if load != "loaded":
        return UnitView({}, {}, f"{where}: not loaded (LoadState={load})")
    settings = {k: [v] for k, v in shown.items() if v and k != "LoadState"}
    if timer:
        calendars = bus_properties(full, "Timer", ["TimersCalendar"])["TimersCalendar"]
        try:
            settings["OnCalendar"] = [str(spec) for base, spec, *_ in calendars if base == "OnCalendar"]
        except (TypeError, ValueError):
            raise SystemdError(f"TimersCalendar of {full} is not a(sst): {str(calendars)[:200]}") from None
        return UnitView(settings, {}, where)
    found = bus_properties(full, "Service", list(EXEC_KEYS))
    return UnitView(settings, {k: cmds for k in EXEC_KEYS if (cmds := _bus_commands(found[k]))}, where)


def unit_view(unit: str, unit_dir: Path) -> UnitView:
    """A unit's hooks and user (a service) or schedule (a timer).

    systemd's own view when it runs and unit_dir is the default; the unit files in unit_dir otherwise
    (a unit_dir set in the config means "read these files"). systemd failing to answer is an empty view
    whose `where` names the failure: nothing reads as wired."""
    full = full_name(unit)
    if running() and unit_dir == DEFAULT_UNIT_DIR:
        try:
            return _systemd_view(full)
        except SystemdError as exc:
            return UnitView({}, {}, f"systemd could not be asked about {full} ({exc})")
    files = unit_files_view(unit, unit_dir)
    return dataclasses.replace(files, where=f"{files.where} (systemd is not running here)")


def engine_program_problem(unit: str, view: UnitView) -> tuple[str | None, str]:
    """Whether the program the engine unit's ExecStart= runs is installed: (the problem or None, the evidence)."""
    commands, where = view.commands.get("ExecStart", []), view.where
    if not commands:
        return f"{full_name(unit)} has no ExecStart= ({where})", f"ExecStart: none ({where})"
    path = commands[0].path
    fix = "install the engine there first, or point ExecStart at it (the neo_engine role's neo_engine_exec_start)"
    if not os.path.exists(path):
        problem = f"the engine {path} (ExecStart of {full_name(unit)}) is not installed: {fix}"
        return problem, f"ExecStart runs {path}: not installed ({where})"
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        problem = f"the engine {path} (ExecStart of {full_name(unit)}) is not executable by this user: {fix}"
        return problem, f"ExecStart runs {path}: present, not executable ({where})"
    return None, f"ExecStart runs {path}: installed, executable ({where})"
