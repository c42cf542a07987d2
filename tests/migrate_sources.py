#!/usr/bin/python3
"""Build, on the controller, the databases that molecule's verify migrates (tasks/migrate.yml).

    migrate_sources.py DIR [--seed N]

DIR/live/neo_live_stage1.db (+ -wal): the demo engine's schema, sessions S001..S048 recorded,
    and the last ticks committed only in the -wal (the files are copied while the writer still
    holds the DB, as a crash would leave them);
DIR/corrupt/neo_live_stage1.db: a copy whose page 2 has an invalid b-tree page type;
DIR/legacy/: Windows-era backups in the FLAG-049 naming: two good ones (.bak. and .post.),
    one corrupt, one with an impossible date, and a file that is not a backup.
Prints a JSON summary (paths, row counts, the ticks held only in the -wal) on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path

NAME = "neo_live_stage1.db"


def _demo_engine_schema() -> str:
    """The demo engine's own schema, so it carries on writing into the migrated DB."""
    loader = SourceFileLoader("demo_engine", str(Path(__file__).resolve().parent.parent / "scripts" / "demo-engine"))
    spec = spec_from_loader("demo_engine", loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return str(module.SCHEMA)


SCHEMA = _demo_engine_schema()


def fill(conn: sqlite3.Connection, rng: random.Random, first: int, n: int, session: str) -> None:
    conn.execute("BEGIN")
    for seq in range(first, first + n):
        conn.execute("INSERT INTO ticks VALUES (?, ?, ?, ?)", (seq, session, 1_770_000_000.0 + seq, f"p{rng.randrange(10**6)}"))
    conn.execute("COMMIT")


def build(path: Path, rng: random.Random, *, checkpointed: int, wal_only: int) -> None:
    """checkpointed ticks in the main file, then wal_only ticks left in the -wal beside it."""
    tmp = path.parent / ".build"
    tmp.mkdir(parents=True)
    conn = sqlite3.connect(tmp / NAME, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.executescript(SCHEMA)
    conn.execute("BEGIN")
    for i in range(1, 49):
        conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (f"S{i:03d}", 1_770_000_000.0 + i, 1_770_000_100.0 + i, 0))
    conn.execute("INSERT INTO positions VALUES ('NEO', 10, 1770000000.0)")
    conn.execute("COMMIT")
    fill(conn, rng, 1, checkpointed, "S048")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if wal_only:
        fill(conn, rng, checkpointed + 1, wal_only, "S048")
    # Copy while the connection is open: the -wal still holds the last commits.
    shutil.copyfile(tmp / NAME, path)
    if wal_only:
        shutil.copyfile(tmp / f"{NAME}-wal", path.parent / f"{NAME}-wal")
    conn.close()
    shutil.rmtree(tmp)


def corrupt(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(16)
        psize = int.from_bytes(f.read(2), "big")
        f.seek(psize)
        f.write(b"\x07")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path)
    p.add_argument("--seed", type=int, default=14)
    args = p.parse_args()
    print(f"migrate_sources: seed {args.seed}", file=sys.stderr)
    rng = random.Random(args.seed)
    live, bad, legacy = args.dir / "live", args.dir / "corrupt", args.dir / "legacy"
    for d in (live, bad, legacy):
        d.mkdir(parents=True)
    build(live / NAME, rng, checkpointed=300, wal_only=40)
    build(bad / NAME, rng, checkpointed=300, wal_only=0)
    corrupt(bad / NAME)
    build(legacy / f"{NAME}.bak.20260421T165223Z", rng, checkpointed=250, wal_only=0)
    build(legacy / f"{NAME}.post.20260421T171502Z", rng, checkpointed=260, wal_only=0)
    build(legacy / f"{NAME}.bak.20260420T090000Z", rng, checkpointed=200, wal_only=0)
    corrupt(legacy / f"{NAME}.bak.20260420T090000Z")
    build(legacy / f"{NAME}.bak.20261341T250000Z", rng, checkpointed=10, wal_only=0)
    (legacy / "notes.txt").write_text("not a backup\n")
    summary = {
        "seed": args.seed,
        "live": str(live / NAME),
        "live_ticks": 340,
        "wal_only_ticks": 40,
        "corrupt": str(bad / NAME),
        "legacy_dir": str(legacy),
        "legacy_good": [f"{NAME}.bak.20260421T165223Z", f"{NAME}.post.20260421T171502Z"],
        "legacy_corrupt": f"{NAME}.bak.20260420T090000Z",
        "legacy_impossible": f"{NAME}.bak.20261341T250000Z",
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
