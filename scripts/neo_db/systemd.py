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


def _from_files(unit: str, unit_dir: Path) -> dict[str, list[str]]:
    """ExecStartPre/ExecStopPost/User from the unit file and its drop-ins, merged as systemd merges them."""
    files = [unit_dir / f"{unit}.service"]
    drop_dir = unit_dir / f"{unit}.service.d"
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
            if section != "[Service]" or "=" not in line:
                continue
            key, value = (part.strip() for part in line.split("=", 1))
            if key in ("ExecStartPre", "ExecStopPost", "ExecStart"):
                merged[key] = [] if value == "" else [*merged.get(key, []), value]
            elif key in ("User", "RestartPreventExitStatus", "Restart"):
                merged[key] = [value]
    return merged


DEFAULT_UNIT_DIR = Path("/etc/systemd/system")


def unit_view(unit: str, unit_dir: Path) -> tuple[dict[str, list[str]], str]:
    """The engine unit's hooks and user, and where the answer came from.

    systemd's own view when it runs and unit_dir is the default; the unit files in
    unit_dir otherwise (a unit_dir set in the config means "read these files")."""
    if running() and unit_dir == DEFAULT_UNIT_DIR:
        props = ["ExecStartPre", "ExecStopPost", "ExecStart", "User", "Restart", "RestartPreventExitStatus", "LoadState"]
        proc = subprocess.run(
            ["systemctl", "show", f"{unit}.service", *[f"--property={p}" for p in props]],
            check=False,
            capture_output=True,
            text=True,
        )
        view: dict[str, list[str]] = {}
        for line in proc.stdout.splitlines():
            key, _, value = line.partition("=")
            if key.startswith("Exec"):
                view[key] = [m.strip() for m in re.findall(r"argv\[\]=([^;]*);", value)]
            elif value:
                view[key] = [value]
        if view.get("LoadState") == ["loaded"]:
            return view, f"systemctl show {unit}.service"
        return {}, f"systemctl show {unit}.service (unit not loaded)"
    return _from_files(unit, unit_dir), f"unit files in {unit_dir} (systemd is not running here)"
