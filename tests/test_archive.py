"""`neo-db archive-dir`: the Chroma cold archive (issue 17.12), on real files, a real full disk."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import Runtime


def chroma(tmp_path: Path) -> Path:
    src = tmp_path / "data" / "chroma"
    src.mkdir(parents=True)
    (src / "chroma.sqlite3").write_text("stand-in vector store\n")
    (src / "index.bin").write_bytes(bytes(range(256)) * 8)
    return src


def archive(runtime: Runtime, src: Path, dest: Path, *extra: str) -> tuple[int, str, str]:
    r = runtime.cli("archive-dir", str(src), "--dest", str(dest), *extra)
    return r.rc, r.out, r.err


def names(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir())


def test_the_archive_is_complete_and_its_record_matches_it(runtime: Runtime, tmp_path: Path) -> None:
    src, dest = chroma(tmp_path), tmp_path / "backups" / "chroma"
    dest.mkdir(parents=True)
    rc, out, err = archive(runtime, src, dest, "--keep", "4", "--json", "--meta", "service_state_at_archive=inactive")
    assert rc == 0, err
    doc = json.loads(out)
    [tgz, rec] = sorted(dest.iterdir(), key=lambda p: p.suffix)  # .gz, .json
    assert tgz.name == doc["archive"] and rec.name == tgz.name.replace(".tar.gz", ".json")
    record = json.loads(rec.read_text())
    assert record["sha256"] == hashlib.sha256(tgz.read_bytes()).hexdigest() and record["size"] == tgz.stat().st_size
    assert record["service_state_at_archive"] == "inactive" and record["source"] == str(src)
    with tarfile.open(tgz) as tar:
        assert sorted(tar.getnames()) == ["chroma", "chroma/chroma.sqlite3", "chroma/index.bin"]
        member = tar.extractfile("chroma/index.bin")
        assert member is not None and member.read() == (src / "index.bin").read_bytes()


def test_keep_zero_is_refused_and_keep_n_keeps_the_newest_n_with_their_records(runtime: Runtime, tmp_path: Path) -> None:
    src, dest = chroma(tmp_path), tmp_path / "archives"
    dest.mkdir()
    rc, _, err = archive(runtime, src, dest, "--keep", "0")
    assert rc == 2 and "--keep 0: at least 1" in err and "Traceback" not in err, err
    assert names(dest) == []
    # Older archives (and one orphan-free pair per time), as earlier runs left them.
    for stamp in ("2026-01-01T00-00-00Z", "2026-02-01T00-00-00Z", "2026-03-01T00-00-00Z"):
        (dest / f"chroma-{stamp}.tar.gz").write_bytes(b"old")
        (dest / f"chroma-{stamp}.json").write_text("{}")
    (dest / "unrelated.txt").write_text("not ours")
    rc, out, err = archive(runtime, src, dest, "--keep", "2", "--json")
    assert rc == 0, err  # positive control: the same command with --keep 2
    kept = [n for n in names(dest) if n.startswith("chroma-")]
    new = json.loads(out)["archive"]
    assert kept == sorted(["chroma-2026-03-01T00-00-00Z.json", "chroma-2026-03-01T00-00-00Z.tar.gz", new, new.replace(".tar.gz", ".json")])
    assert (dest / "unrelated.txt").exists()


def test_bad_paths_are_refused_by_name_and_leave_nothing(runtime: Runtime, tmp_path: Path) -> None:
    src, dest = chroma(tmp_path), tmp_path / "archives"
    dest.mkdir()
    link = tmp_path / "link"
    link.symlink_to(src)
    for args, message in (
        ([str(tmp_path / "missing"), "--dest", str(dest)], "No such file or directory"),
        ([str(link), "--dest", str(dest)], "not a real directory"),
        ([str(src), "--dest", str(tmp_path / "nowhere")], "--dest"),
        ([str(src), "--dest", str(src / "inside")], "No such file or directory"),
    ):
        r = runtime.cli("archive-dir", *args, "--keep", "1")
        assert r.rc == 2 and message in r.err and "Traceback" not in r.err, (args, r.err)
    (src / "inside").mkdir()
    r = runtime.cli("archive-dir", str(src), "--dest", str(src / "inside"), "--keep", "1")
    assert r.rc == 2 and "lies inside SRC" in r.err, r.err
    assert names(dest) == []
    assert runtime.cli("archive-dir", str(src), "--dest", str(dest), "--keep", "1").rc == 0  # positive control


@pytest.fixture
def small_fs(tmp_path: Path) -> object:
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_leaves_no_partial_archive_and_no_record(runtime: Runtime, tmp_path: Path, small_fs: Path) -> None:
    src = chroma(tmp_path)
    (src / "big.bin").write_bytes(__import__("random").Random(17).randbytes(256 * 1024))  # seed 17: incompressible
    r = runtime.cli("archive-dir", str(src), "--dest", str(small_fs), "--keep", "1")
    assert r.rc != 0 and "No space left on device" in r.err and "Traceback" not in r.err, r.err
    assert names(small_fs) == [], "no temp file, no archive, no record"
    (src / "big.bin").unlink()
    r = runtime.cli("archive-dir", str(src), "--dest", str(small_fs), "--keep", "1")  # positive control: it fits
    assert r.rc == 0, r.err
    assert len(names(small_fs)) == 2
