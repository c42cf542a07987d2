"""Shared fixtures: a runtime tree with a config, real WAL databases, a real writer process.

The CLI is always run the way systemd runs it: `scripts/neo-db` under the system
python3, in a subprocess, with the config named by $NEO_DB_CONFIG.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
NEO_DB = SCRIPTS / "neo-db"
DEMO_ENGINE = SCRIPTS / "demo-engine"
# The interpreter neo-db runs under, as systemd runs it: the distro python3, or the one
# $NEO_DB_PYTHON names (`make pythons` runs the suite's CLI under every Python 3.10-3.13 found).
SYSTEM_PYTHON = os.environ.get("NEO_DB_PYTHON") or ("/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable)
# The service user (nobody) runs the distro python3: an interpreter under /root (pyenv, which
# `make pythons` sets as NEO_DB_PYTHON) is not reachable by it.
SERVICE_PYTHON = "/usr/bin/python3"
sys.dont_write_bytecode = True  # keep scripts/ free of __pycache__: the roles copy it to the VPS
sys.path.insert(0, str(SCRIPTS))
sys.path.insert(0, str(Path(__file__).parent))
from fake_hetzner.server import make_server  # noqa: E402  (tests/ on the path first)

FLAG049 = "DB integrity check failed — session aborted. Run a backup or restore from last known-good backup before continuing."


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Runtime:
    root: Path
    config_path: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return Path(self.settings["db_path"])

    @property
    def backups(self) -> Path:
        return Path(self.settings["backup_dir"])

    @property
    def exports(self) -> Path:
        return Path(self.settings["exports_dir"])

    @property
    def state(self) -> Path:
        return Path(self.settings["state_dir"])

    def write_config(self, **overrides: Any) -> None:
        self.settings.update(overrides)
        self.config_path.write_text(yaml.safe_dump({"db_safeguards": self.settings}))

    def env(self, **extra: str) -> dict[str, str]:
        unset = ("SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS", "JOURNAL_STREAM", "INVOCATION_ID")
        env = {k: v for k, v in os.environ.items() if k not in unset and not k.startswith("MONITOR_")}
        env["NEO_DB_CONFIG"] = str(self.config_path)
        env.update(extra)
        return env

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
        proc = subprocess.run(
            [SYSTEM_PYTHON, str(NEO_DB), *args], check=False, capture_output=True, text=True, env=env or self.env(), timeout=timeout
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def stop(self, exit_code: str | None = "exited", exit_status: str | None = "0", result: str = "success") -> Result:
        extra = {"SERVICE_RESULT": result}
        if exit_code is not None:
            extra["EXIT_CODE"] = exit_code
        if exit_status is not None:
            extra["EXIT_STATUS"] = exit_status
        return self.cli("session-stop", env=self.env(**extra))

    def files(self, phase_dir: str, suffix: str = ".db") -> list[Path]:
        d = self.backups / phase_dir
        return sorted(p for p in d.iterdir() if p.name.endswith(suffix) and not p.name.startswith(".")) if d.exists() else []

    def health(self, session: str) -> dict[str, Any]:
        return json.loads((self.exports / "sessions" / session / "db_health.json").read_text())["db_health"]


def install_neo_db(tmp_path: Path) -> Path:
    """neo-db installed as the role installs it: the launcher in a hooks dir, a symlink on the PATH.
    Set neo_db_bin to the returned path (the role writes neo_safeguards_bin there)."""
    hooks, bin_dir = tmp_path / "opt-neo-hooks", tmp_path / "usr-local-bin"
    hooks.mkdir()
    bin_dir.mkdir()
    shutil.copy2(NEO_DB, hooks / "neo-db")
    (bin_dir / "neo-db").symlink_to(hooks / "neo-db")
    return bin_dir / "neo-db"


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    root = tmp_path / "runtime"
    (root / "db").mkdir(parents=True)
    rt = Runtime(root, tmp_path / "db_safeguards.yml")
    rt.write_config(
        db_path=str(root / "db" / "neo_live_stage1.db"),
        backup_dir=str(root / "backups"),
        exports_dir=str(root / "exports"),
        state_dir=str(root / "state"),
    )
    return rt


def make_db(path: Path, rows: int = 200, *, wal: bool = True, checkpoint: bool = True) -> None:
    """A realistic small NEO-like DB: a table with an index, WAL mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS trades (id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, qty INTEGER, note TEXT)")
    conn.execute("CREATE INDEX IF NOT EXISTS trades_symbol ON trades(symbol)")
    conn.execute("BEGIN")
    for i in range(rows):
        conn.execute("INSERT INTO trades(symbol, qty, note) VALUES (?, ?, ?)", (f"SYM{i % 17}", i, "n" * 200))
    conn.execute("COMMIT")
    if checkpoint:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def count_rows(path: Path, table: str = "trades") -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


class Writer:
    """The demo engine as a real concurrent writer process."""

    def __init__(self, db: Path, seq_log: Path, *, rate: float = 200.0, session: str = "S900", extra: tuple[str, ...] = ()) -> None:
        env = dict(os.environ, NEO_SESSION_ID=session)
        self.seq_log = seq_log
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(DEMO_ENGINE), "--db", str(db), "--rate", str(rate), "--seq-log", str(seq_log), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "ready" in line:
                return
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"demo engine did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")

    def committed(self) -> list[int]:
        return [int(x) for x in self.seq_log.read_text().split()] if self.seq_log.exists() else []

    def wait_commits(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.committed()) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.committed())} commits")
            time.sleep(0.02)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture
def writer_factory(tmp_path: Path) -> Iterator[Any]:
    writers: list[Writer] = []

    def start(db: Path, **kw: Any) -> Writer:
        w = Writer(db, tmp_path / f"seq-{len(writers)}.log", **kw)
        writers.append(w)
        return w

    yield start
    for w in writers:
        w.close()


SLOW_TESTS = ROOT / "tests" / "slow_tests.txt"


def slow_tests() -> set[str]:
    """tests/slow_tests.txt: the unit tests measured over about 2 s, one node id a line
    (tests/test_x.py::test_name covers all its parameters); '#' starts a comment."""
    lines = (line.split("#", 1)[0].strip() for line in SLOW_TESTS.read_text().splitlines())
    return {line for line in lines if line}


@pytest.hookimpl(tryfirst=True)  # before -m deselects: `make check` runs `-m "... and not slow"`
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests listed in tests/slow_tests.txt get the marker slow (make check leaves them to make
    unit and make test). The VM suite (marker vm, minutes of QEMU) runs only when -m names it
    (make vm-faults): `-m "not standin and not ansible"`, the unit suite's selection, leaves it out."""
    slow = slow_tests()
    for item in items:
        if item.nodeid.split("[", 1)[0] in slow:
            item.add_marker(pytest.mark.slow)
    if "vm" in (config.option.markexpr or "").split():
        return
    vm = [item for item in items if item.get_closest_marker("vm")]
    if vm:
        config.hook.pytest_deselected(items=vm)
        items[:] = [item for item in items if not item.get_closest_marker("vm")]


ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def site_playbook(inventory: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run site.yml from the controller, as an operator would; returns (rc, stdout + stderr)."""
    environ = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1", **(env or {})}
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(ROOT / "site.yml"), *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def seqs_in(path: Path) -> set[int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT seq FROM ticks")}
    finally:
        conn.close()


PHASE_SUBDIRS = ("pre_session", "post_session", "abnormal_stop", "manual", "imported", "legacy")


@pytest.fixture
def role_box() -> Iterator[Runtime]:
    """The runtime tree exactly as neo_runtime leaves it: every directory the service user's
    (nobody here), reachable by it (pytest's own tmp dirs are 0700 root)."""
    top = Path(tempfile.mkdtemp(prefix="neo-import-", dir="/tmp"))
    try:
        top.chmod(0o755)
        root = top / "runtime"
        rt = Runtime(root, top / "db_safeguards.yml")
        rt.write_config(
            db_path=str(root / "db" / "neo_live_stage1.db"),
            backup_dir=str(root / "backups"),
            exports_dir=str(root / "exports"),
            state_dir=str(root / "state"),
        )
        rt.config_path.chmod(0o644)
        for d in [root, root / "db", root / "exports", root / "state", root / "backups", *(root / "backups" / s for s in PHASE_SUBDIRS)]:
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, 65534, 65534)
        (root / "db").chmod(0o700)
        yield rt
    finally:
        shutil.rmtree(top)


def as_service_user(rt: Runtime, *args: str) -> Result:
    proc = subprocess.run(
        ["runuser", "-u", "nobody", "--", SERVICE_PYTHON, str(NEO_DB), *args],
        check=False,
        capture_output=True,
        text=True,
        env=rt.env(),
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


# ---- the fake Hetzner Cloud API on 127.0.0.1 (test_hetzner_backups, test_cloud_firewall) ----

TOKEN = "fake-token-3f9a0c1d2e"


@dataclass
class FakeApi:
    url: str

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.url.removesuffix('/v1')}/__fake/state") as r:
            return json.load(r)

    def post(self, path: str, body: dict) -> None:
        req = urllib.request.Request(f"{self.url.removesuffix('/v1')}{path}", data=json.dumps(body).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
        urllib.request.urlopen(req).close()

    def writes(self) -> list[dict]:
        return self.state()["writes"]


@pytest.fixture
def api() -> Iterator[FakeApi]:
    httpd = make_server(0, TOKEN, ["neo-live-1"])
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield FakeApi(f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    httpd.shutdown()
    httpd.server_close()
