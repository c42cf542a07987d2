"""Holders of any user are named (issue 12, item 11).

The hooks run as the engine's user, who may not read another user's /proc/PID/fd: a root
process holding the DB without a SQLite lock (an open(), a `tail -f`, a backup agent) was
invisible to them. The privileged scanner (neo-db-holders.socket, one `neo-db holders --serve`
as root per connection) answers for every user. Here the scanner is served the way systemd
serves it (a listening unix socket, one root process per connection with the connection as
its stdin and stdout), the hooks run as `nobody` through runuser, and the holders are real
processes of root and of nobody.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import NEO_DB, SYSTEM_PYTHON, Result, Runtime, make_db

ENV_SOCKET = "NEO_DB_HOLDERS_SOCKET"
NOBODY = pwd.getpwnam("nobody")
HOLD = "import os, sys, time; f = open(sys.argv[1], 'rb'); print(os.getpid(), flush=True); time.sleep(600)"


@pytest.fixture
def shared() -> Iterator[Runtime]:
    """A runtime tree owned by nobody (the engine's user here), in a directory nobody can reach."""
    top = Path(tempfile.mkdtemp(prefix="neo-holders-", dir="/tmp"))
    top.chmod(0o755)
    root = top / "runtime"
    (root / "db").mkdir(parents=True)
    rt = Runtime(root, top / "db_safeguards.yml")
    rt.write_config(
        db_path=str(root / "db" / "neo_live_stage1.db"),
        backup_dir=str(root / "backups"),
        exports_dir=str(root / "exports"),
        state_dir=str(root / "state"),
    )
    rt.config_path.chmod(0o644)
    make_db(rt.db)
    for dirpath, _, names in os.walk(root):
        for p in [Path(dirpath), *(Path(dirpath) / n for n in names)]:
            os.chown(p, NOBODY.pw_uid, NOBODY.pw_gid)
    try:
        yield rt
    finally:
        shutil.rmtree(top)


def _env(rt: Runtime, sock: Path | None) -> dict[str, str]:
    # Without a scanner: a socket path that does not exist (never the host's /run one).
    return rt.env(**{ENV_SOCKET: str(sock if sock is not None else rt.root.parent / "no-scanner.sock")})


def as_nobody(rt: Runtime, *args: str, sock: Path | None = None, **env: str) -> Result:
    proc = subprocess.run(
        ["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, str(NEO_DB), "--config", str(rt.config_path), *args],
        check=False,
        capture_output=True,
        text=True,
        env={**_env(rt, sock), **env},
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def as_root(rt: Runtime, *args: str) -> Result:
    return rt.cli(*args, env=_env(rt, None))


@contextlib.contextmanager
def holding(path: Path, user: str | None = None) -> Iterator[int]:
    """A process (of `user`, else root) with a plain open() of path: no SQLite lock at all."""
    cmd = [SYSTEM_PYTHON, "-c", HOLD, str(path)]
    proc = subprocess.Popen(["runuser", "-u", user, "--", *cmd] if user else cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()


class Scanner:
    """neo-db-holders.socket as systemd runs it: Accept=yes, one root `holders --serve` per
    connection, the connection as its stdin and stdout. `broken` answers garbage instead."""

    def __init__(self, rt: Runtime, *, broken: bool = False) -> None:
        self.path = rt.root.parent / "holders.sock"
        self.rt = rt
        self.broken = broken
        self.runs: list[subprocess.CompletedProcess[bytes]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        os.chown(self.path, NOBODY.pw_uid, NOBODY.pw_gid)
        self.path.chmod(0o660)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                if self.broken:
                    conn.sendall(b"<html>not an answer</html>\n")
                    continue
                self.runs.append(
                    subprocess.run(
                        [SYSTEM_PYTHON, str(NEO_DB), "--config", str(self.rt.config_path), "holders", "--serve"],
                        stdin=conn.fileno(),
                        stdout=conn.fileno(),
                        stderr=subprocess.PIPE,
                        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},  # systemd's clean environment
                        check=False,
                        timeout=120,
                    )
                )

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.sock.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Scanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_a_scan_as_the_service_user_misses_a_root_holder_that_the_privileged_scanner_names(shared: Runtime) -> None:
    rt = shared
    with holding(rt.db) as pid:  # root, no SQLite lock: only /proc/PID/fd shows it
        with Scanner(rt) as scanner:
            for command in ("check", "session-start"):
                r = as_nobody(rt, command, sock=scanner.path)
                assert r.rc == 5, f"{command} as nobody missed root's PID {pid}: rc={r.rc}\n{r.out}\n{r.err}"
                assert f"PID {pid} ({SYSTEM_PYTHON} -c " in r.err and "user root" in r.err and str(rt.db) in r.err, r.err
            r = as_nobody(rt, "holders", "--gate", "--json", sock=scanner.path)
            assert r.rc == 5, r.err
            assert [(h["pid"], h["user"], h["path"], h["how"]) for h in r.json["holders"]] == [(pid, "root", str(rt.db), "open file")]
            assert r.json["complete"] is True
            assert all(run.returncode == 0 for run in scanner.runs), [run.stderr for run in scanner.runs]
        # Negative: the same scan as nobody without the scanner cannot see root's process...
        r = as_nobody(rt, "holders", "--gate")
        assert r.rc == 0 and f"PID {pid}" not in r.out + r.err, r.out + r.err
        assert "could not be inspected" in r.out and "no privileged scanner" in r.out, r.out
        # ...while a scan as root does.
        r = as_root(rt, "holders", "--gate")
        assert r.rc == 5 and f"PID {pid}" in r.err and "user root" in r.err, r.err
    # Positive control: the holder is gone, the service user's gate passes through the scanner.
    with Scanner(rt) as scanner:
        r = as_nobody(rt, "check", "--json", sock=scanner.path)
        assert r.rc == 0, r.err
        assert r.json["holders"] == "none"


def test_a_root_scan_names_a_holder_of_another_user(shared: Runtime) -> None:
    rt = shared
    with holding(rt.db, user="nobody") as pid:
        r = as_root(rt, "holders", "--json")
        assert r.rc == 0, r.err
        assert [(h["pid"], h["user"], h["path"]) for h in r.json["holders"]] == [(pid, "nobody", str(rt.db))]
        assert r.json["complete"] is True and r.json["uninspected"] == []
        r = as_root(rt, "check")
        assert r.rc == 5 and f"PID {pid}" in r.err and "user nobody" in r.err, r.err
        r = as_root(rt, "holders")
        assert r.rc == 0 and f"{pid}" in r.out and "nobody" in r.out, r.out
    r = as_root(rt, "holders", "--gate")
    assert r.rc == 0 and "no other process" in r.out, r.out


def _tree(top: Path) -> dict[str, tuple[int, int, int, int, int]]:
    out = {}
    for dirpath, dirnames, names in os.walk(top):
        for name in [".", *dirnames, *names]:
            p = Path(dirpath) / name
            st = os.lstat(p)
            out[str(p)] = (st.st_uid, st.st_gid, st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def test_the_privileged_scan_writes_nothing(shared: Runtime) -> None:
    """No state, no lock file, nothing root-owned in the runtime tree: the scan only reads."""
    rt = shared
    before = _tree(rt.root)
    with holding(rt.db, user="nobody") as theirs, holding(rt.db) as roots, Scanner(rt) as scanner:
        for _ in range(3):
            r = as_nobody(rt, "holders", "--gate", sock=scanner.path)
            assert r.rc == 5 and f"PID {theirs}" in r.err and f"PID {roots}" in r.err, r.err
        r = as_root(rt, "holders", "--gate")
        assert r.rc == 5 and f"PID {theirs}" in r.err and f"PID {roots}" in r.err, r.err
        assert len(scanner.runs) == 3 and all(run.returncode == 0 for run in scanner.runs), [run.stderr for run in scanner.runs]
    assert _tree(rt.root) == before
    assert not rt.state.exists(), "the scan created state_dir"
    # Positive control: the same probe sees what a writing command leaves, and that it is nobody's.
    assert as_nobody(rt, "session-start").rc == 0
    after = _tree(rt.root)
    assert after != before and rt.state.is_dir()
    assert {uid for uid, *_ in after.values()} == {NOBODY.pw_uid}


def _ask(scanner: Scanner) -> dict[str, object]:
    """One question to the scanner, as the gate asks it: connect, read the answer to the end."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(scanner.path))
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    client.close()
    doc: dict[str, object] = json.loads(data)
    return doc


def test_the_privileged_scan_leaves_an_interrupted_restore_to_the_service_user(shared: Runtime) -> None:
    """A restore killed half-way is completed or rolled back by the next neo-db run of the service
    user; never by the scanner, which runs as root in a read-only sandbox (ProtectSystem=strict):
    there the recovery could not write, the scan would fail, and every gate with it."""
    rt = shared
    r = as_nobody(rt, "backup", "--json")
    assert r.rc == 0, r.err
    r = as_nobody(rt, "restore", Path(r.json["path"]).stem, "--yes", NEO_DB_FAULT_STEP="moved-db")
    assert r.rc == 128 + signal.SIGKILL, r.err  # runuser reports its child's SIGKILL as 137
    staging = rt.db.parent / f".{rt.db.name}.restore"
    assert not rt.db.exists() and (staging / "old" / rt.db.name).is_file()
    before = _tree(rt.root)
    with Scanner(rt) as scanner:
        doc = _ask(scanner)
        assert [run.returncode for run in scanner.runs] == [0], [run.stderr for run in scanner.runs]
    assert doc["db_path"] == str(rt.db) and doc["holders"] == [], doc
    assert _tree(rt.root) == before, "the privileged scan touched the interrupted restore"
    # Positive control: the service user's next run rolls it back, the old DB is in place, owned by nobody.
    r = as_nobody(rt, "holders")
    assert r.rc == 0, r.err
    assert rt.db.is_file() and not staging.exists()
    assert {uid for uid, *_ in _tree(rt.root).values()} == {NOBODY.pw_uid}


def test_a_broken_scanner_fails_the_gate_closed_with_a_clear_error(shared: Runtime) -> None:
    rt = shared
    with Scanner(rt, broken=True) as scanner:
        r = as_nobody(rt, "check", sock=scanner.path)
        assert r.rc == 1, r.err
        assert str(scanner.path) in r.err and "Traceback" not in r.err and "internal error" not in r.err, r.err
        assert "neo-db-holders" in r.err, r.err
    with Scanner(rt) as scanner:  # positive control: a working scanner, the same gate passes
        assert as_nobody(rt, "check", sock=scanner.path).rc == 0


def test_a_holder_that_is_the_callers_parent_is_named(shared: Runtime) -> None:
    """The scan excludes only itself (and the scanner its client): a parent that has the DB
    open is a holder like any other, e.g. a script that opens the DB and then runs the gate."""
    rt = shared
    parent = (
        "import subprocess, sys; f = open(sys.argv[1], 'rb') if sys.argv[2] == 'hold' else None; "
        "r = subprocess.run(sys.argv[3:], capture_output=True, text=True); print(r.returncode); print(r.stderr)"
    )
    gate = [SYSTEM_PYTHON, str(NEO_DB), "--config", str(rt.config_path), "holders", "--gate"]
    for how, rc in (("hold", 5), ("no", 0)):
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-c", parent, str(rt.db), how, *gate], capture_output=True, text=True, env=_env(rt, None), check=True
        )
        code, _, err = proc.stdout.partition("\n")
        assert int(code) == rc, proc.stdout
        assert (f"({SYSTEM_PYTHON} -c import subprocess" in err) == (rc == 5), err


def test_serve_needs_the_socket_on_stdin(shared: Runtime) -> None:
    r = as_root(rt := shared, "holders", "--serve")
    assert r.rc == 2 and "socket" in r.err and "Traceback" not in r.err, r.err
    assert r.out == ""
    with Scanner(rt) as scanner:  # positive control: on a socket it answers
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(scanner.path))
        data = b""
        while chunk := client.recv(65536):
            data += chunk
        client.close()
    doc = json.loads(data)
    assert doc["db_path"] == str(rt.db) and doc["holders"] == [] and doc["uninspected"] == []


def test_a_user_who_cannot_reach_the_db_gets_an_error_not_a_clean_bill(shared: Runtime) -> None:
    """Without the files' identities no holder can be recognised: that is an error, never "none"."""
    rt = shared
    rt.db.parent.chmod(0o700)  # nobody's own directory, as the DB's is on the VPS
    r = subprocess.run(
        ["runuser", "-u", "daemon", "--", SYSTEM_PYTHON, str(NEO_DB), "--config", str(rt.config_path), "holders", "--gate"],
        capture_output=True,
        text=True,
        env=_env(rt, None),
        check=False,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"cannot look at {rt.db}: Permission denied" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "no other process" not in r.stdout
    assert as_nobody(rt, "holders", "--gate").rc == 0  # positive control: the owner can
