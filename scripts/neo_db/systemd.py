"""What systemd says about the engine's unit, or what its unit files say where systemd is not running."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path


def running() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def is_active(unit: str) -> bool | None:
    """True/False from systemctl, or None where systemd is not running (tests, chroots)."""
    if not running():
        return None
    proc = subprocess.run(["systemctl", "is-active", "--quiet", f"{unit}.service"], check=False, capture_output=True)
    return proc.returncode == 0


@dataclasses.dataclass(frozen=True)
class UnitState:
    """Whether a unit is enabled and active; None where that cannot be told (systemd not running)."""

    enabled: bool
    active: bool | None
    evidence: str


def _systemctl_word(verb: str, unit: str) -> str:
    """The state word `systemctl is-enabled|is-active UNIT` prints (it exits non-zero for "disabled" and "inactive")."""
    proc = subprocess.run(["systemctl", verb, unit], check=False, capture_output=True, text=True)
    words = proc.stdout.split()
    if words:
        return words[0]
    return f"unknown (systemctl {verb} exited {proc.returncode}: {proc.stderr.strip() or 'no output'})"


def systemctl_state(unit: str) -> UnitState:
    """systemd's own answer: `systemctl is-enabled` and `systemctl is-active`."""
    enabled, active = _systemctl_word("is-enabled", unit), _systemctl_word("is-active", unit)
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


def _parse_record(value: str) -> ExecCommand | None:
    """One record of `systemctl show -p Exec...`: { path=P ; argv[]=A B C ; ignore_errors=no ; start_time=... }.

    argv[] is the arguments joined by single spaces, and an argument may hold ' ; ': it ends at
    the LAST ' ; ignore_errors=' (the fields after it are systemd's own: times, pid, status)."""
    body = value.strip()
    if not (body.startswith("{ path=") and body.endswith("}")):
        return None
    head, sep, tail = body[len("{ path=") :].partition(" ; argv[]=")
    if not sep:
        return None
    for field, yes in ((" ; ignore_errors=", "yes"), (" ; flags=", "ignore-failure")):
        at = tail.rfind(field)
        if at >= 0:
            flags = tail[at + len(field) :].split(" ; ", 1)[0].split()
            return ExecCommand(head, tuple(tail[:at].split(" ")), yes in flags)
    return None


def parse_exec(value: str) -> list[ExecCommand]:
    """The commands of one Exec*= value: a `systemctl show` record, or a unit file's command line."""
    if value.lstrip().startswith("{ path="):
        record = _parse_record(value)
        return [record] if record is not None else []
    return _parse_line(value)


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


def unit_files_view(unit: str, unit_dir: Path) -> dict[str, list[str]]:
    """What the unit files in unit_dir say, whether or not systemd runs here (unit-verify's temp layout)."""
    return _from_files(unit, unit_dir)


DEFAULT_UNIT_DIR = Path("/etc/systemd/system")


def unit_view(unit: str, unit_dir: Path) -> tuple[dict[str, list[str]], str]:
    """A unit's hooks and user (a service) or schedule (a timer), and where the answer came from.

    systemd's own view when it runs and unit_dir is the default; the unit files in
    unit_dir otherwise (a unit_dir set in the config means "read these files")."""
    full = full_name(unit)
    if running() and unit_dir == DEFAULT_UNIT_DIR:
        if full.endswith(".timer"):
            props = ["Persistent", "TimersCalendar", "LoadState"]
        else:
            props = ["ExecStartPre", "ExecStopPost", "ExecStart", "User", "Restart", "RestartPreventExitStatus", "LoadState"]
        proc = subprocess.run(
            ["systemctl", "show", full, *[f"--property={p}" for p in props]],
            check=False,
            capture_output=True,
            text=True,
        )
        view: dict[str, list[str]] = {}
        for line in proc.stdout.splitlines():
            key, _, value = line.partition("=")
            if key.startswith("Exec"):
                # One line per command, each a { path=... ; argv[]=... ; ignore_errors=... } record: parse_exec reads them.
                if value.strip():
                    view.setdefault(key, []).append(value)
            elif key == "TimersCalendar":
                view.setdefault("OnCalendar", []).extend(m.strip() for m in re.findall(r"OnCalendar=([^;]*);", value))
            elif value:
                view[key] = [value]
        if view.get("LoadState") == ["loaded"]:
            return view, f"systemctl show {full}"
        return {}, f"systemctl show {full} (unit not loaded)"
    return _from_files(unit, unit_dir), f"unit files in {unit_dir} (systemd is not running here)"


def engine_program_problem(unit: str, view: dict[str, list[str]], where: str) -> tuple[str | None, str]:
    """Whether the program the engine unit's ExecStart= runs is installed: (the problem or None, the evidence)."""
    commands = [cmd for value in view.get("ExecStart", []) for cmd in parse_exec(value)]
    if not commands:
        return f"{full_name(unit)} has no ExecStart= ({where})", f"ExecStart: none ({where})"
    path = commands[0].path
    fix = "install the engine there first, or point ExecStart at it (the role's neo_safeguards_engine_exec_start)"
    if not os.path.exists(path):
        problem = f"the engine {path} (ExecStart of {full_name(unit)}) is not installed: {fix}"
        return problem, f"ExecStart runs {path}: not installed ({where})"
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        problem = f"the engine {path} (ExecStart of {full_name(unit)}) is not executable by this user: {fix}"
        return problem, f"ExecStart runs {path}: present, not executable ({where})"
    return None, f"ExecStart runs {path}: installed, executable ({where})"
