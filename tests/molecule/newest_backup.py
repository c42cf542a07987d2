"""molecule monitoring.yml: print the newest *.db backup in DIR.

Newest by the time in the name (sorting whole names would sort by session first).
"""

import glob
import re
import sys


def stamp(path: str) -> str:
    m = re.search(r"(\d{4}-[\dT-]+Z)[.]db$", path)
    if m is None:
        raise SystemExit(f"{path}: no timestamp in the name")
    return m.group(1)


def main(argv: list[str]) -> int:
    print(max(glob.glob(argv[0] + "/*.db"), key=stamp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
