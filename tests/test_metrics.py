"""neo_db.prom for node_exporter's textfile collector: written by every hook and by `neo-db metrics`,
on real WAL files, real processes and a real tmpfs, and checked with `promtool check metrics`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import NEO_DB, SYSTEM_PYTHON, Runtime, make_db

PROMTOOL = shutil.which("promtool")
TS_RE = re.compile(r"_(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)\.db$")


def promtool_check(path: Path) -> None:
    assert PROMTOOL, "promtool is missing: install the distro's prometheus package (make deps)"
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=path.read_bytes(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def parse(path: Path) -> dict[str, float]:
    """{'name{labels}': value} from a textfile."""
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def name_ts(path: Path) -> int:
    m = TS_RE.search(path.name)
    assert m, path
    return int(dt.datetime.strptime(m[1], "%Y-%m-%dT%H-%M-%SZ").replace(tzinfo=dt.timezone.utc).timestamp())


@pytest.fixture
def mrt(runtime: Runtime) -> Runtime:
    """A runtime with metrics on, and notifications configured (so events are queued)."""
    prom = runtime.root / "textfile"
    prom.mkdir()
    runtime.write_config(metrics_textfile_dir=str(prom), notify_secrets_path=str(runtime.root / "notify.yml"), hetzner_fact_path=None)
    return runtime


def prom_of(rt: Runtime) -> Path:
    return Path(rt.settings["metrics_textfile_dir"]) / "neo_db.prom"


def queued(rt: Runtime) -> list[dict]:
    d = rt.state / "notify-queue"
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.exists() else []


def test_a_clean_session_writes_the_contract_series_with_the_right_values(mrt: Runtime) -> None:
    make_db(mrt.db)
    assert not prom_of(mrt).exists()
    r = mrt.cli("session-start")
    assert r.rc == 0, r.err
    promtool_check(prom_of(mrt))
    m = parse(prom_of(mrt))
    [pre] = mrt.files("pre_session")
    assert m['neo_db_backup_last_success_timestamp_seconds{phase="pre"}'] == name_ts(pre)
    assert m['neo_db_backups{phase="pre",status="verified"}'] == 1
    assert m['neo_db_backup_last_failure_timestamp_seconds{phase="pre"}'] == 0
    assert m["neo_db_gate_last_exit_code"] == 0 and m["neo_db_gate_last_run_timestamp_seconds"] > 0
    assert m["neo_db_session_open"] == 1
    assert m["neo_db_session_last_start_timestamp_seconds"] <= name_ts(pre)
    assert m["neo_db_live_db_bytes"] == mrt.db.stat().st_size
    assert not [p for p in prom_of(mrt).parent.iterdir() if p.name != "neo_db.prom"], "a temp file was left beside neo_db.prom"
    assert prom_of(mrt).stat().st_mode & 0o777 == 0o644
    r = mrt.stop("exited", "0")
    assert r.rc == 0, r.err
    promtool_check(prom_of(mrt))
    m = parse(prom_of(mrt))
    [post] = mrt.files("post_session")
    assert m['neo_db_backup_last_success_timestamp_seconds{phase="post"}'] == name_ts(post)
    assert m["neo_db_session_open"] == 0 and m["neo_db_session_last_stop_abnormal"] == 0
    assert m["neo_db_session_last_stop_timestamp_seconds"] >= m["neo_db_session_last_start_timestamp_seconds"]
    assert [e["event"] for e in queued(mrt)] == ["session_ok"], "a clean session queues exactly its success ping"


def test_a_gate_refusal_and_an_abnormal_stop_show_in_the_metrics(mrt: Runtime) -> None:
    make_db(mrt.db)
    good = mrt.db.read_bytes()
    data = bytearray(good)
    data[int.from_bytes(data[16:18], "big")] = 0x07  # page 2 gets an invalid b-tree page type
    mrt.db.write_bytes(bytes(data))
    assert mrt.cli("session-start").rc == 3
    m = parse(prom_of(mrt))
    assert m["neo_db_gate_last_exit_code"] == 3 and m["neo_db_session_open"] == 0
    assert queued(mrt) == [], "a refused start fails the unit (OnFailure= notifies); nothing is queued"
    # Positive control: the good DB back, the same gate passes and the code goes back to 0.
    mrt.db.write_bytes(good)
    assert mrt.cli("session-start").rc == 0
    assert parse(prom_of(mrt))["neo_db_gate_last_exit_code"] == 0
    r = mrt.stop("killed", "KILL", "signal")
    assert r.rc == 0, r.err
    m = parse(prom_of(mrt))
    assert m["neo_db_session_last_stop_abnormal"] == 1
    [copy] = mrt.files("abnormal_stop")
    assert m['neo_db_backup_last_success_timestamp_seconds{phase="abnormal"}'] == name_ts(copy)
    events = queued(mrt)
    assert [e["event"] for e in events] == ["abnormal_stop"] and events[0]["session"] == "S001", events
    promtool_check(prom_of(mrt))


@pytest.fixture
def tiny_pre_fs(mrt: Runtime) -> Iterator[Path]:
    mnt = mrt.backups / "pre_session"
    mnt.mkdir(parents=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_failed_pre_session_backup_is_a_failure_timestamp_and_one_queued_event(mrt: Runtime, tiny_pre_fs: Path) -> None:
    make_db(mrt.db, rows=2000)
    r = mrt.cli("session-start")
    assert r.rc == 0 and "pre-session backup FAILED" in r.err, r.err
    m = parse(prom_of(mrt))
    assert m['neo_db_backup_last_failure_timestamp_seconds{phase="pre"}'] > 0
    assert m['neo_db_backup_last_success_timestamp_seconds{phase="pre"}'] == 0
    assert m["neo_db_session_last_start_timestamp_seconds"] > m['neo_db_backup_last_success_timestamp_seconds{phase="pre"}']
    # The tmpfs is its own filesystem: it gets its own series, nearly full.
    key = f'neo_db_backup_filesystem_size_bytes{{path="{tiny_pre_fs}"}}'
    assert m[key] == 64 * 1024
    assert m[f'neo_db_backup_filesystem_avail_bytes{{path="{tiny_pre_fs}"}}'] <= m[key]
    events = queued(mrt)
    assert [e["event"] for e in events] == ["pre_backup_failed"], events
    assert events[0]["session"] == "S001" and "disk" in events[0]["detail"].lower(), events[0]
    promtool_check(prom_of(mrt))
    # Positive control: a manual backup on the other filesystem succeeds and has no failure time.
    assert mrt.cli("backup").rc == 0
    m = parse(prom_of(mrt))
    assert m['neo_db_backup_last_success_timestamp_seconds{phase="manual"}'] > 0
    assert m['neo_db_backup_last_failure_timestamp_seconds{phase="manual"}'] == 0


def test_a_metrics_write_error_never_fails_the_session_and_is_counted(mrt: Runtime) -> None:
    prom_dir = Path(mrt.settings["metrics_textfile_dir"])
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(prom_dir)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        fd = os.open(prom_dir / "filler", os.O_WRONLY | os.O_CREAT, 0o644)  # fill the textfile dir
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)
        make_db(mrt.db)
        r = mrt.cli("session-start")
        assert r.rc == 0, r.err
        assert "metrics: could not write" in r.err and "Traceback" not in r.err, r.err
        assert json.loads((mrt.state / "current_session.json").read_text())["state"] == "open"
        assert not prom_of(mrt).exists() and sorted(p.name for p in prom_dir.iterdir()) == ["filler"], "no partial file"
        # `neo-db metrics` itself reports the failure clearly (the timer's unit fails, OnFailure= notifies).
        r = mrt.cli("metrics")
        assert r.rc == 1 and "cannot write" in r.err and str(prom_dir) in r.err and "Traceback" not in r.err, r.err
        # Positive control: room again, the next run writes and shows both errors counted.
        (prom_dir / "filler").unlink()
        assert mrt.cli("metrics").rc == 0
        assert parse(prom_of(mrt))["neo_db_metrics_write_errors_total"] == 2
        promtool_check(prom_of(mrt))
    finally:
        subprocess.run(["umount", "-l", str(prom_dir)], check=False)


def test_future_dated_backups_are_counted_and_notified_once(mrt: Runtime) -> None:
    make_db(mrt.db)
    assert mrt.cli("backup").rc == 0
    assert parse(prom_of(mrt))["neo_db_future_dated_backups"] == 0
    assert queued(mrt) == []
    [manual] = mrt.files("manual")
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H-%M-%SZ")
    stem = TS_RE.sub("", manual.name)
    for suffix in (".db", ".json"):
        shutil.copy2(manual.with_suffix(suffix), manual.parent / f"{stem}_{future}{suffix}")
    assert mrt.cli("metrics").rc == 0
    m = parse(prom_of(mrt))
    assert m["neo_db_future_dated_backups"] == 1
    # A future-dated copy does not count as fresh.
    assert m['neo_db_backup_last_success_timestamp_seconds{phase="manual"}'] == name_ts(manual)
    assert mrt.cli("metrics").rc == 0
    assert [e["event"] for e in queued(mrt)] == ["future_dated_backups"], "notified once, not at every run"


def test_the_snapshots_layout_has_its_own_freshness_series(runtime: Runtime) -> None:
    prom = runtime.root / "textfile"
    prom.mkdir()
    runtime.write_config(layout="snapshots", metrics_textfile_dir=str(prom), hetzner_fact_path=None)
    make_db(runtime.db)
    assert runtime.cli("backup", "--trigger", "timer").rc == 0
    [snap] = [p for p in (runtime.backups / "snapshots").iterdir() if not p.name.startswith(".")]
    ts = int(dt.datetime.strptime(snap.name, "%Y-%m-%dT%H-%M-%SZ").replace(tzinfo=dt.timezone.utc).timestamp())
    m = parse(prom / "neo_db.prom")
    assert m["neo_db_snapshot_last_success_timestamp_seconds"] == ts
    assert m['neo_db_backup_last_success_timestamp_seconds{phase="timed"}'] == ts
    assert m['neo_db_snapshots{status="verified"}'] == 1
    assert not any(k.startswith("neo_db_session_") for k in m), "no sessions in the snapshots layout"
    promtool_check(prom / "neo_db.prom")


def test_metrics_without_a_textfile_dir_is_a_clear_usage_error(runtime: Runtime) -> None:
    make_db(runtime.db)
    r = runtime.cli("metrics")
    assert r.rc == 2 and "metrics_textfile_dir is null" in r.err and "Traceback" not in r.err, r.err
    # Positive control: --stdout needs no directory and is valid exposition text.
    r = runtime.cli("metrics", "--stdout")
    assert r.rc == 0 and "neo_db_metrics_last_write_timestamp_seconds" in r.out, r.err
    out = runtime.root / "stdout.prom"
    out.write_text(r.out)
    promtool_check(out)
    runtime.write_config(metrics_textfile_dir="relative/dir")
    r = runtime.cli("metrics")
    assert r.rc == 2 and "metrics_textfile_dir" in r.err and "absolute path" in r.err, r.err


def test_the_service_user_can_rewrite_a_textfile_root_wrote(tmp_path: Path) -> None:
    """Root (restore, by hand) and the service user (hooks, timer) share the textfile and the metrics state."""
    top = Path(tempfile.mkdtemp(prefix="neo-metrics-", dir="/tmp"))  # outside pytest's 0700 tree
    try:
        os.chmod(top, 0o755)  # noqa: S103 (the user "nobody" must traverse it)
        rt = Runtime(top / "runtime", top / "db_safeguards.yml")
        (rt.root / "db").mkdir(parents=True)
        (top / "textfile").mkdir()
        rt.write_config(
            db_path=str(rt.root / "db" / "neo_live_stage1.db"),
            backup_dir=str(rt.root / "backups"),
            exports_dir=str(rt.root / "exports"),
            state_dir=str(rt.root / "state"),
            metrics_textfile_dir=str(top / "textfile"),
            hetzner_fact_path=None,
        )
        make_db(rt.db)
        assert rt.cli("backup").rc == 0 and rt.cli("metrics").rc == 0  # as root: root owns the file and the state
        assert (top / "textfile" / "neo_db.prom").stat().st_uid == 0
        for p in [rt.root, *rt.root.rglob("*"), top / "textfile"]:
            os.chown(p, 65534, 65534, follow_symlinks=False)
        rt.config_path.chmod(0o644)
        cmd = ["runuser", "-u", "nobody", "--", "/usr/bin/python3", str(Path(__file__).parent.parent / "scripts" / "neo-db")]
        proc = subprocess.run([*cmd, "metrics"], env=rt.env(), capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert (top / "textfile" / "neo_db.prom").stat().st_uid == 65534
        m = parse(top / "textfile" / "neo_db.prom")
        assert m["neo_db_metrics_write_errors_total"] == 0 and m['neo_db_backups{phase="manual",status="verified"}'] == 1
        # Negative check beside it: a textfile dir the user cannot write is a clear error, not a traceback.
        os.chown(top / "textfile", 0, 0)
        proc = subprocess.run([*cmd, "metrics"], env=rt.env(), capture_output=True, text=True, check=False)
        assert proc.returncode == 1 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_monitoring_hook_in_cli_main_prints_nothing_twice(mrt: Runtime) -> None:
    """cli.main re-reads the arguments after the command for the metrics: --help, --version and a
    usage error must still print once (the first version printed the help twice)."""
    r = mrt.cli("--help")
    assert r.rc == 0 and r.out.count("usage: neo-db") == 1, r.out
    r = mrt.cli("--version")
    assert r.rc == 0 and r.out.count("neo-db ") == 1, r.out
    r = mrt.cli("bogus")
    assert r.rc == 2 and r.err.count("usage: neo-db") == 1, r.err
    assert not prom_of(mrt).exists(), "nothing ran, nothing to write"
    # Positive control: a real command after the same hook writes the file once, quietly.
    r = mrt.cli("prune")
    assert r.rc == 0 and prom_of(mrt).exists() and "metrics" not in r.err, r.err


def test_the_textfile_is_world_readable_whatever_the_umask(mrt: Runtime) -> None:
    """The engine unit runs its hooks with UMask=0027, but node_exporter (its own user) must read
    neo_db.prom: the file is 0644 whatever the umask (the first version left it 0640)."""
    make_db(mrt.db)
    cmd = [SYSTEM_PYTHON, str(NEO_DB), "session-start"]
    r = subprocess.run(cmd, env=mrt.env(), capture_output=True, text=True, check=False, umask=0o027)
    assert r.returncode == 0, r.stderr
    assert prom_of(mrt).stat().st_mode & 0o777 == 0o644
    assert (mrt.state / "metrics_state.json").stat().st_mode & 0o777 == 0o644, "root and the service user share it"
    # Positive control: the umask did apply to what the hook writes for the service user only.
    [pre] = mrt.files("pre_session")
    assert pre.stat().st_mode & 0o007 == 0
