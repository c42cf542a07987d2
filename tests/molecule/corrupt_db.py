"""molecule checklist.yml and monitoring.yml: corrupt a SQLite DB (page 2 gets an invalid b-tree page type).

Usage: corrupt_db.py DB [FILE...]: each FILE is emptied afterwards (the receiver log).
"""

import sys


def corrupt(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(16)
        psize = int.from_bytes(f.read(2), "big")
        f.seek(psize)
        f.write(b"\x07")


def main(argv: list[str]) -> int:
    corrupt(argv[0])
    for emptied in argv[1:]:
        open(emptied, "w").close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
