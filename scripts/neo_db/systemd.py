"""What systemd says about the engine's unit, or what its unit files say where systemd is not running."""

from __future__ import annotations

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


def full_name(unit: str) -> str:
    """A unit name with its type: engine units are named without .service in the config."""
    return unit if unit.endswith((".service", ".timer")) else f"{unit}.service"


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
            lines = path.read_text().splitlines()
        except OSError:
            continue
        section = ""
        for raw in lines:
            line = raw.strip()
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
                view[key] = [m.strip() for m in re.findall(r"argv\[\]=([^;]*);", value)]
            elif key == "TimersCalendar":
                view.setdefault("OnCalendar", []).extend(m.strip() for m in re.findall(r"OnCalendar=([^;]*);", value))
            elif value:
                view[key] = [value]
        if view.get("LoadState") == ["loaded"]:
            return view, f"systemctl show {full}"
        return {}, f"systemctl show {full} (unit not loaded)"
    return _from_files(unit, unit_dir), f"unit files in {unit_dir} (systemd is not running here)"
