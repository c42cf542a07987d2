"""Logging that lands in the journal with the right priority.

Under systemd, stderr is connected to the journal (``$JOURNAL_STREAM`` names its
device and inode). The journal reads a ``<N>`` prefix as the syslog priority, so an
error from a hook shows up as an error in ``journalctl -p err``. On a terminal the
lines are plain.

Output never depends on the locale: the journal stores UTF-8, so a stream that is the
journal is written in UTF-8 whatever the locale says (the em dash of the FLAG-049 message
stays an em dash), and anything a terminal's encoding (ASCII, Latin-1) cannot show is
written as a backslash escape instead of failing with UnicodeEncodeError.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from typing import TextIO

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def _is_journal(stream: TextIO | None) -> bool:
    """True if stream is the journal's stream socket, which systemd names in $JOURNAL_STREAM."""
    journal = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in journal or stream is None:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    dev, _, ino = journal.partition(":")
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def stderr_is_journal() -> bool:
    return _is_journal(sys.stderr)


def setup_streams() -> None:
    """stdout and stderr that cannot fail on a character: UTF-8 to the journal, escapes elsewhere."""
    for stream in (sys.stdout, sys.stderr):
        if not isinstance(stream, io.TextIOWrapper):
            continue
        try:
            if _is_journal(stream):
                stream.reconfigure(encoding="utf-8", errors="backslashreplace")
            else:
                stream.reconfigure(errors="backslashreplace")
        except (OSError, ValueError):
            continue


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        # Every line of a multi-line message carries the priority.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


class _TerminalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if getattr(record, "plain", False):
            return text
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text


def audit(message: str) -> None:
    """Log an operator action, and make sure it reaches the journal even from a terminal."""
    logging.getLogger("neo_db.audit").warning("%s", message)
    if stderr_is_journal() or not os.path.exists("/dev/log"):
        return
    try:
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.ident = "neo-db: "
        handler.emit(logging.LogRecord("neo_db.audit", logging.WARNING, __file__, 0, message, None, None))
        handler.close()
    except OSError:
        pass


def setup(verbosity: int = 0, *, dry_run: bool = False) -> None:
    """Configure the root logger: INFO by default, DEBUG with -v, WARNING with -q."""
    level = logging.INFO
    if verbosity > 0:
        level = logging.DEBUG
    elif verbosity < 0:
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(message)s"
    if dry_run:
        fmt = "[dry-run] %(message)s"
    handler.setFormatter(_JournalFormatter(fmt) if stderr_is_journal() else _TerminalFormatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
