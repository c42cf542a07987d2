#!/usr/bin/env python3
"""Recapture tests/fixtures/systemd/<version>/captured.json from a real systemd in a throwaway podman container.

    CONTAINERS_CONF=standin/containers.conf python3 tests/systemd_capture.py            # both images
    CONTAINERS_CONF=standin/containers.conf python3 tests/systemd_capture.py debian12   # one

Each image boots systemd (--systemd=always, /sbin/init, as standin/demo.sh runs the stand-in VPS); the
units below are installed (a service whose ExecStart argument holds ';' and a space, drop-ins that
override User=, ExecStart=, OnCalendar= and Persistent=, timers enabled/disabled/masked/static); then
each command neo_db.systemd runs is run in it and its exit status, stdout and stderr are kept, twice:
"ok" as root, and "no-bus" with systemctl forced onto a D-Bus socket that does not exist (how a
systemctl that cannot reach systemd fails). The container is removed afterwards.
tests/test_systemd_real.py replays them through PATH shims named systemctl and busctl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

IMAGES = {"debian12": "localhost/neo-vps-standin:debian12", "debian13": "localhost/neo-vps-standin:debian13-fresh"}
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "systemd"

TIMER = "[Unit]\nDescription=probe timer {t}\n[Timer]\nOnCalendar=*-*-* 04:00:00\nUnit=neo-probe.service\n"
INSTALL = "[Install]\nWantedBy=timers.target\n"
UNITS = {
    "/etc/systemd/system/neo-probe.service": (
        "[Unit]\nDescription=probe\n[Service]\nType=oneshot\nUser=nobody\n"
        'ExecStartPre=-/bin/true "pre; one"\nExecStart=/bin/echo base\nExecStopPost=/bin/true post\n'
        "[Install]\nWantedBy=multi-user.target\n"
    ),
    # The drop-in wins: another User=, and ExecStart= reset then set to a command whose arguments hold
    # '; ' with a space, 'a;b', and a quoted lone ';' (an argument, not a command separator).
    "/etc/systemd/system/neo-probe.service.d/10-override.conf": (
        '[Service]\nUser=daemon\nExecStart=\nExecStart=/bin/echo --label "night run; keep" a;b ";" plain\n'
    ),
    "/etc/systemd/system/neo-probe-enabled.timer": TIMER.format(t="enabled") + INSTALL,
    "/etc/systemd/system/neo-probe-enabled.timer.d/10-override.conf": (
        "[Timer]\nOnCalendar=\nOnCalendar=*-*-* 03:15:00\nOnCalendar=Sun 05:00\nPersistent=true\n"
    ),
    "/etc/systemd/system/neo-probe-disabled.timer": TIMER.format(t="disabled") + INSTALL,
    "/usr/lib/systemd/system/neo-probe-masked.timer": TIMER.format(t="masked") + INSTALL,  # masked from /etc
    "/etc/systemd/system/neo-probe-static.timer": TIMER.format(t="static"),  # no [Install]: static
}
SETUP = "systemctl daemon-reload && systemctl enable --now neo-probe-enabled.timer && systemctl mask neo-probe-masked.timer"

TIMERS = ("enabled", "disabled", "masked", "static")
SERVICE_PROPS = [f"--property={p}" for p in ("LoadState", "User", "Restart", "RestartPreventExitStatus")]
BUS = ["busctl", "--json=short", "get-property", "org.freedesktop.systemd1"]
SERVICE_PATH = "/org/freedesktop/systemd1/unit/neo_2dprobe_2eservice"
COMMANDS = [
    # neo_db.systemd.unit_view of the service and of the timer
    ["systemctl", "show", "neo-probe.service", *SERVICE_PROPS],
    [*BUS, SERVICE_PATH, "org.freedesktop.systemd1.Service", "ExecStartPre", "ExecStart", "ExecStopPost"],
    ["systemctl", "show", "neo-probe-enabled.timer", "--property=LoadState", "--property=Persistent"],
    [*BUS, "/org/freedesktop/systemd1/unit/neo_2dprobe_2denabled_2etimer", "org.freedesktop.systemd1.Timer", "TimersCalendar"],
    ["systemctl", "show", "neo-absent.service", *SERVICE_PROPS],
    # systemctl_state / is_active, show_value (the reboot guard), show (metrics)
    *[["systemctl", verb, f"neo-probe-{t}.timer"] for t in TIMERS for verb in ("is-enabled", "is-active")],
    ["systemctl", "is-active", "neo-probe.service"],
    ["systemctl", "show", "neo-probe.service", "--property=ActiveState", "--value"],
    ["systemctl", "show", "neo-probe.service", "--property=ActiveState", "--property=LoadState"],
    # Not run by neo_db: the text form, kept to show why Exec*= is read over D-Bus (argv joined by spaces).
    ["systemctl", "show", "neo-probe.service", "--property=ExecStart"],
]
NO_BUS = ["env", "SYSTEMCTL_FORCE_BUS=1", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent"]


def podman(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], check=check, capture_output=True, text=True, input=stdin)


def capture(tag: str) -> None:
    name = f"helper-sysd-capture-{tag}"
    podman("run", "-d", "--name", name, "--systemd=always", IMAGES[tag], "/sbin/init")
    try:
        for _ in range(60):
            if podman("exec", name, "systemctl", "is-system-running", check=False).stdout.strip() in ("running", "degraded"):
                break
            time.sleep(1)
        for path, text in UNITS.items():
            podman("exec", "-i", name, "sh", "-c", f"mkdir -p {os.path.dirname(path)} && cat > {path}", stdin=text)
        podman("exec", name, "sh", "-c", SETUP)
        version = podman("exec", name, "systemctl", "--version").stdout.splitlines()[0]
        runs = []
        for scenario, prefix in (("ok", []), ("no-bus", NO_BUS)):
            for argv in COMMANDS:
                proc = podman("exec", name, *prefix, *argv, check=False)
                runs.append({"scenario": scenario, "argv": argv, "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr})
        number = version.split()[1]
        out = FIXTURES / number / "captured.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"systemd": version, "image": IMAGES[tag], "captured_by": "tests/systemd_capture.py", "units": UNITS, "runs": runs}
        out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{out}: {version}, {len(runs)} runs")
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


if __name__ == "__main__":
    for tag in sys.argv[1:] or list(IMAGES):
        capture(tag)
