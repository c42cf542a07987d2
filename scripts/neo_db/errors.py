"""Exit codes and the exceptions that carry them.

systemd's ``RestartPreventExitStatus=`` lists the gate codes (3 to 6, and 8), so a
session that fails closed is not restarted in a loop.
"""

from __future__ import annotations

import errno
import os

OK = 0
FAILURE = 1  # an operation failed (a backup could not be written, a check of a report failed)
USAGE = 2  # bad config, bad arguments, bad input
INTEGRITY = 3  # the DB is corrupt: the FLAG-049 gate
NETWORK_FS = 4  # the DB sits on a network filesystem
DB_IN_USE = 5  # another process has the DB, -wal or -shm open
DB_MISSING = 6  # the DB does not exist (and this is not a first run)
LOCKED = 7  # another neo-db run holds the state lock
PERMISSION = 8  # this user may not read the DB as SQLite must (not corruption: no restore)
HOT_JOURNAL = 9  # a hot rollback -journal: SQLite rolls it back on a read-write open (not corruption)

GATE_EXIT_CODES = (INTEGRITY, NETWORK_FS, DB_IN_USE, DB_MISSING, PERMISSION, HOT_JOURNAL)

INTEGRITY_MESSAGE = "DB integrity check failed — session aborted. Run a backup or restore from last known-good backup before continuing."


class NeoDbError(Exception):
    """An error with a message for the operator and an exit code."""

    exit_code = FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # What a --json run reports beside the failure (e.g. the holders found), in the one JSON document.
        self.details: dict[str, object] = {}


class UsageError(NeoDbError):
    exit_code = USAGE


class ConfigError(UsageError):
    """One or more config problems; each names the file, the key, the value and what is allowed."""

    def __init__(self, path: str, problems: list[str], hint: str | None = None) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"invalid config {path}:\n{lines}",
            hint=hint or f"fix the keys above under 'db_safeguards:' in {path}, then run 'neo-db config validate {path}'",
        )
        self.path = path
        self.problems = problems


class GateError(NeoDbError):
    """A session gate failed closed."""


class IntegrityError(GateError):
    exit_code = INTEGRITY

    def __init__(self, errors: list[str], *, preserve_raw: bool = False) -> None:
        detail = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{INTEGRITY_MESSAGE}\nSQLite reported:\n{detail}")
        self.errors = errors
        # The raw files hold what no copy through SQLite would (commits after damage in the
        # -wal): session-start copies them byte for byte before refusing.
        self.preserve_raw = preserve_raw


class NetworkFilesystemError(GateError):
    exit_code = NETWORK_FS


class DbInUseError(GateError):
    exit_code = DB_IN_USE


class DbMissingError(GateError):
    exit_code = DB_MISSING


class PermissionProblemError(GateError):
    """This user lacks a permission SQLite needs to read the live DB. Not corruption: the
    FLAG-049 message would send the operator to restore and lose the session's commits."""

    exit_code = PERMISSION


class HotJournalError(GateError):
    """The live DB has a hot rollback -journal (a rollback-mode writer died mid-transaction).
    Not corruption: the first read-write open rolls it back. The read-only gate cannot, so it
    refuses, after checking that a rolled-back copy is intact; the raw files are preserved."""

    exit_code = HOT_JOURNAL
    preserve_raw = True


class LockedError(NeoDbError):
    exit_code = LOCKED


# A file or directory neo-db needs cannot be used: what the operator should do about it.
# ENOENT and ENOTDIR mean the configured path itself is wrong (exit 2, like any config error).
_PATH_HINTS: dict[int, str] = {
    errno.ENOENT: "create it, owned by the service user (the neo_runtime role does), or {fix}",
    errno.ENOTDIR: "a part of the path is a file, not a directory: {fix}",
    errno.ELOOP: "a symlink is in the way (neo-db does not follow symlinks it did not make): replace it with a real directory",
    errno.EISDIR: "a directory is where a file should be: move it away, or {fix}",
    errno.EACCES: "run neo-db as the service user (neo) or root, or give that user access to {dir}",
    errno.EPERM: "run neo-db as the service user (neo) or root, or give that user access to {dir}",
    errno.ENOSPC: "the filesystem holding {dir} is full: free space there (df -h {dir}; 'neo-db prune' drops expired backups), then retry",
    errno.EDQUOT: "the disk quota for {dir} is used up: free space there, then retry",
    errno.EROFS: "{dir} is on a read-only filesystem: remount it read-write, or {fix}",
}
_CONFIG_PATH_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR)


class PathError(NeoDbError):
    """A path neo-db must read or write cannot be used. The message names the path and the
    config key it comes from; the hint says what to do."""

    def __init__(self, message: str, *, hint: str, exit_code: int) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code

    @classmethod
    def from_os_error(cls, exc: OSError, *, key: str | None = None, key_path: object = None, source: str | None = None) -> PathError:
        """From an OSError. `key` is the config key the path comes from, `key_path` its value."""
        path = os.fsdecode(exc.filename) if exc.filename is not None else (str(key_path) if key_path is not None else None)
        if exc.strerror is None:  # a message of our own, e.g. "... is a symlink; refusing to follow it"
            message = str(exc) if path is None or path in str(exc) else f"{path}: {exc}"
        else:
            message = f"cannot use {path}: {exc.strerror}" if path is not None else exc.strerror
        if key is not None:
            message += f" ({key} is {key_path}, from {source or 'the config'})"
        fix = f"set {key} in {source or 'the config'} to a usable directory" if key is not None else "fix the path"
        parent = os.path.dirname(path) if path is not None else "it"
        where = str(key_path) if key_path is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else parent
        template = _PATH_HINTS.get(exc.errno or 0, "check {path} (owner, mode, filesystem), then retry")
        hint = template.format(fix=fix, dir=where, path=path or "it")
        code = USAGE if exc.errno in _CONFIG_PATH_ERRNOS and key is not None else FAILURE
        return cls(message, hint=hint, exit_code=code)
