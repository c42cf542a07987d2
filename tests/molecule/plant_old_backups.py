"""molecule checklist.yml: plant twelve old pre-session backups in DIR (copies of a real one, dated 2026-01-01)."""

import datetime as dt
import pathlib
import shutil
import sys


def main(argv: list[str]) -> int:
    d = pathlib.Path(argv[0])
    src = sorted(d.glob("neo_live_stage1_pre_S002_*.db"))[0]
    for i in range(12):
        ts = (dt.datetime(2026, 1, 1) + dt.timedelta(hours=i)).strftime("%Y-%m-%dT%H-%M-%SZ")
        dst = d / f"neo_live_stage1_pre_X{i:03d}_{ts}.db"
        shutil.copy2(src, dst)
        shutil.copy2(src.with_suffix(".json"), dst.with_suffix(".json"))
        shutil.chown(dst, "neo", "neo")
        shutil.chown(dst.with_suffix(".json"), "neo", "neo")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
