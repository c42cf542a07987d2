"""molecule verify.yml: the engine unit's last 30 journal lines, then confirm's verdict on the engine.

Prints the journal, then the list of `neo-db confirm --json` items named "the engine is installed".
"""

import json
import subprocess
import sys


def main() -> int:
    subprocess.run(["journalctl", "-u", "neo-engine.service", "-o", "cat", "--no-pager", "-n", "30"], check=False)
    sys.stdout.flush()
    confirm = subprocess.run(["neo-db", "confirm", "--json"], stdout=subprocess.PIPE, text=True, check=False)
    try:
        items = json.loads(confirm.stdout)["items"]
    except (ValueError, KeyError, TypeError):
        print(f"neo-db confirm --json printed no report (exit {confirm.returncode}): {confirm.stdout!r}")
        return 0
    print([i for i in items if i["item"] == "the engine is installed"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
