"""tests/stages.sh (make test's lanes) against a tiny Makefile of fake stages (sleep, echo, false):
each stage's log printed whole, the wall-time table, a failure stopping its lane only, the serial
mode, and Ctrl-C / SIGTERM leaving no process of any lane behind. No podman, no real stage."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, slow_tests

STAGES_SH = ROOT / "tests" / "stages.sh"

# A stage prints "<name> line i" five times, 0.1 s apart, so two lanes' stages overlap in time,
# and writes its start and end times (for the overlap check) and what PYTEST_WORKERS it got.
MAKEFILE = """\
SHELL := /bin/sh
define talk
@date +%s.%N >$(CURDIR)/$(1).start
@echo "$(1) workers=[$$PYTEST_WORKERS] setup=$$(cat $(CURDIR)/setup.done 2>/dev/null)"
@for i in 1 2 3 4 5; do echo "$(1) line $$i"; sleep 0.1; done
@date +%s.%N >$(CURDIR)/$(1).end
endef
setup:
\t@echo setting up; echo yes >$(CURDIR)/setup.done
badsetup:
\t@echo setup breaks; false
a:
\t$(call talk,a)
b:
\t$(call talk,b)
c:
\t$(call talk,c)
d:
\t$(call talk,d)
after:
\t$(call talk,after)
bad:
\t@date +%s.%N >$(CURDIR)/bad.start
\t@echo "bad line 1"; false
slow:
\t@sleep 1
\t$(call talk,slow)
nap:
	@date +%s.%N >$(CURDIR)/nap.start
	@sleep 300
hang:
\t@date +%s.%N >$(CURDIR)/hang.start
\t@sh -c 'sleep 300 & echo $$! >$(CURDIR)/hang.pid; wait'
stubborn:
\t@date +%s.%N >$(CURDIR)/stubborn.start
\t@sh -c "trap '' INT TERM; sleep 300 & echo \\$$! >$(CURDIR)/stubborn.pid; wait"
"""


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("NEO_TEST_", "MAKE", "MFLAGS", "PYTEST_WORKERS"))}
    return {**out, "MAKE": "make", "NEO_TEST_GRACE": "2", **extra}


def run(tmp_path: Path, *stages: str, **extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "Makefile").write_text(MAKEFILE)
    return subprocess.run(
        ["bash", str(STAGES_SH), *stages], cwd=tmp_path, env=env(**extra), capture_output=True, text=True, timeout=60, check=False
    )


def table(out: str) -> dict[str, tuple[str, str]]:
    """The wall-time table: stage -> (result, lane)."""
    rows = out.split("make test: wall time per stage\n", 1)[1]
    found = {}
    for line in rows.splitlines():
        m = re.match(r"^  (\S+)\s+(\S+)\s+(ok|FAILED|killed|not run)\s+lane (\d+)$", line)
        if m:
            found[m[1]] = (m[3], m[4])
    return found


def blocks(out: str) -> dict[str, list[str]]:
    """Each stage's printed log: the lines between its '==> lane N: make X: ... its output:' and
    '<== lane N: end of make X' lines, which must follow each other with nothing else between."""
    found: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        head = re.match(r"^==> lane \d+: make (\S+): (ok|FAILED|killed) in \d+m\d\ds; its output:$", line)
        if head:
            assert current is None, f"{head[1]}'s log starts inside {current}'s:\n{out}"
            current = head[1]
            found[current] = []
        elif re.match(r"^<== lane \d+: end of make (\S+)", line):
            assert current is not None and line.split()[-2] == current, f"an end line outside its log: {line}\n{out}"
            current = None
        elif current is not None:
            found[current].append(line)
    assert current is None, out
    return found


def span(tmp_path: Path, stage: str) -> tuple[float, float]:
    return float((tmp_path / f"{stage}.start").read_text()), float((tmp_path / f"{stage}.end").read_text())


def test_lanes_run_in_parallel_and_print_each_stage_log_whole_with_the_table(tmp_path: Path) -> None:
    r = run(tmp_path, "a", "c", "b", "d", NEO_TEST_LANES="a b | c | d", NEO_TEST_LANE_WORKERS="-n 1", NEO_TEST_SETUP="setup")
    assert r.returncode == 0, r.stdout + r.stderr
    # the lanes did overlap in time (else unmixed logs would prove nothing): a, c and d at once, b after a
    (a0, a1), (b0, _), (c0, c1), (d0, d1) = (span(tmp_path, s) for s in "abcd")
    assert max(a0, c0, d0) < min(a1, c1, d1), r.stdout
    assert b0 >= a1, r.stdout
    # every stage's log is one block: its own lines, in order, nothing of another stage inside
    logs = blocks(r.stdout)
    assert sorted(logs) == ["a", "b", "c", "d"], r.stdout
    for stage, lines in logs.items():
        assert lines == [f"{stage} workers=[-n 1] setup=yes", *(f"{stage} line {i}" for i in range(1, 6))], r.stdout
        assert (tmp_path / ".stages" / f"{stage}.log").read_text().splitlines() == lines
    # and no stage line anywhere else (streamed output would be here too, mixed)
    assert len(re.findall(r"^[a-d] line \d$", r.stdout, re.M)) == sum(len(lines) - 1 for lines in logs.values()) == 20, r.stdout
    assert r.stdout.index("setting up") < r.stdout.index("==> lane")
    assert table(r.stdout) == {"a": ("ok", "1"), "c": ("ok", "2"), "b": ("ok", "1"), "d": ("ok", "3")}
    assert list(table(r.stdout)) == ["a", "c", "b", "d"]  # TEST_STAGES' order
    assert re.search(r"^  total\s+\d+m\d\ds\s*$", r.stdout, re.M), r.stdout


def test_a_failure_stops_its_lane_the_other_lanes_run_on_and_the_exit_is_nonzero(tmp_path: Path) -> None:
    r = run(tmp_path, "a", "bad", "after", "slow", "c", NEO_TEST_LANES="a bad after | slow c")
    assert r.returncode != 0, r.stdout + r.stderr
    assert table(r.stdout) == {
        "a": ("ok", "1"),
        "bad": ("FAILED", "1"),
        "after": ("not run", "1"),
        "slow": ("ok", "2"),
        "c": ("ok", "2"),
    }, r.stdout
    assert not (tmp_path / "after.start").exists()
    # the other lane started its next stage after the failure and finished it (positive control)
    assert span(tmp_path, "c")[0] > float((tmp_path / "bad.start").read_text())
    bad_log = blocks(r.stdout)["bad"]
    assert bad_log[0] == "bad line 1" and "Error 1" in bad_log[-1], r.stdout
    assert re.search(r"^  total\s+\d+m\d\ds\s+failed: bad$", r.stdout, re.M), r.stdout


def test_fail_fast_stops_the_other_lanes_after_their_current_stage(tmp_path: Path) -> None:
    r = run(tmp_path, "bad", "slow", "c", NEO_TEST_LANES="bad | slow c", NEO_TEST_FAIL_FAST="1")
    assert r.returncode != 0, r.stdout + r.stderr
    assert table(r.stdout) == {"bad": ("FAILED", "1"), "slow": ("ok", "2"), "c": ("not run", "2")}, r.stdout


def test_lanes_1_runs_the_stages_serially_streaming_and_stops_at_the_first_failure(tmp_path: Path) -> None:
    r = run(tmp_path, "a", "c", "bad", "d", NEO_TEST_LANES="1", NEO_TEST_LANE_WORKERS="-n 1", PYTEST_WORKERS="-n auto")
    assert r.returncode != 0, r.stdout + r.stderr
    assert table(r.stdout) == {"a": ("ok", "1"), "c": ("ok", "1"), "bad": ("FAILED", "1"), "d": ("not run", "1")}, r.stdout
    assert span(tmp_path, "a")[1] <= span(tmp_path, "c")[0], r.stdout  # one after the other
    assert "a workers=[-n auto]" in r.stdout  # the lane workers apply to parallel lanes only
    assert r.stdout.index("==> make a\n") < r.stdout.index("a line 5") < r.stdout.index("==> make c\n")


def test_a_failed_setup_runs_no_stage(tmp_path: Path) -> None:
    r = run(tmp_path, "a", "c", NEO_TEST_LANES="a | c", NEO_TEST_SETUP="badsetup")
    assert r.returncode != 0 and "setup breaks" in r.stdout, r.stdout + r.stderr
    assert table(r.stdout) == {"a": ("not run", "1"), "c": ("not run", "2")}, r.stdout


def session_processes(sid: int) -> dict[int, str]:
    """Live (not zombie) processes of a session: pid -> command line."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found[int(stat.parent.name)] = cmdline
    return found


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_stages_sh_kills_every_lane_and_leaves_no_process(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "Makefile").write_text(MAKEFILE)
    proc = subprocess.Popen(
        ["bash", str(STAGES_SH), "a", "hang", "stubborn", "c", "nap"],
        cwd=tmp_path,
        env=env(NEO_TEST_LANES="a hang | stubborn | c nap", NEO_TEST_GRACE="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # As from a terminal: a test run started in the background of a non-interactive shell (`cmd &`, a CI
        # runner) inherits SIGINT ignored, and bash cannot trap a signal that was ignored when it started.
        preexec_fn=default_sigint,  # noqa: PLW1509 (one call, signal.signal only)
    )
    try:
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"{s}.pid").exists() for s in ("hang", "stubborn")) or not (tmp_path / "nap.start").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the fake stages did not start"
            time.sleep(0.05)
        sleepers = [int((tmp_path / f"{s}.pid").read_text()) for s in ("hang", "stubborn")]
        before = session_processes(proc.pid)
        # positive control: the lanes, their makes and both sleeps are alive before the signal
        assert all(pid in before for pid in sleepers), before
        assert sum("make --no-print-directory" in cmd for cmd in before.values()) == 3, before
        started = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        time.sleep(0.2)
        left = session_processes(proc.pid)
        for pid in left:  # a failed check leaves nothing behind either
            os.kill(pid, signal.SIGKILL)
    assert left == {}, out
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), out
    # a stage the signal ended is "killed", never FAILED (nap's make itself exits on it)
    assert table(out) == {
        "a": ("ok", "1"),
        "hang": ("killed", "1"),
        "stubborn": ("killed", "2"),
        "c": ("ok", "3"),
        "nap": ("killed", "3"),
    }, out
    assert took >= 2, out  # the stubborn one ignored the signal: SIGKILLed after NEO_TEST_GRACE
    # the killed stages' logs are printed (what they were doing), the finished ones' too
    # make itself got the signal (a bare SIGKILL leaves it no word), and said so in the printed log
    logs = blocks(out)
    assert sorted(logs) == ["a", "c", "hang", "nap", "stubborn"], out
    assert any(line.startswith("make: *** ") for line in logs["hang"]), out  # e.g. "[Makefile:33: hang] Terminated"


def test_every_slow_test_listed_exists() -> None:
    """tests/slow_tests.txt names test functions that exist (a renamed test would silently move
    back into make check); the list is not empty (positive control)."""
    listed = slow_tests()
    assert len(listed) > 10
    for entry in sorted(listed):
        path, _, name = entry.partition("::")
        assert (ROOT / path).is_file() and re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), (
            f"tests/slow_tests.txt: {entry} names no test function"
        )


def test_a_sigkilled_stages_sh_takes_every_lane_with_it(tmp_path: Path) -> None:
    """No trap runs on SIGKILL (a CI timeout's kill): each lane's watchdog kills its process group."""
    (tmp_path / "Makefile").write_text(MAKEFILE)
    proc = subprocess.Popen(
        ["bash", str(STAGES_SH), "hang", "stubborn"],
        cwd=tmp_path,
        env=env(NEO_TEST_LANES="hang | stubborn"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    left: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"{s}.pid").exists() for s in ("hang", "stubborn")):
            assert time.monotonic() < deadline and proc.poll() is None, "the fake stages did not start"
            time.sleep(0.05)
        sleepers = [int((tmp_path / f"{s}.pid").read_text()) for s in ("hang", "stubborn")]
        assert all(pid in session_processes(proc.pid) for pid in sleepers)  # positive control
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while (left := session_processes(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for pid in session_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)
    assert left == {}, left
