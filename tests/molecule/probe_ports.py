"""molecule host.yml: probe HOST's SSH port (22) and a port the firewall does not open (18099).

Prints one line per port: "22 open b'SSH-2.0'", "18099 dropped" (timed out) or "PORT error ...".
"""

import socket
import sys


def main(argv: list[str]) -> int:
    for port in (22, 18099):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect((argv[0], port))
            print(port, "open", s.recv(8) if port == 22 else b"")
        except TimeoutError:
            print(port, "dropped")
        except OSError as exc:
            print(port, "error", exc)
        finally:
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
