"""Exit codes and the exceptions that carry them.

systemd's ``RestartPreventExitStatus=`` lists the gate codes (3 to 6, and 8), so a
session that fails closed is not restarted in a loop.
"""

from __future__ import annotations

OK = 0
FAILURE = 1  # an operation failed (a backup could not be written, a check of a report failed)
USAGE = 2  # bad config, bad arguments, bad input
INTEGRITY = 3  # the DB is corrupt: the FLAG-049 gate
NETWORK_FS = 4  # the DB sits on a network filesystem
DB_IN_USE = 5  # another process has the DB, -wal or -shm open
DB_MISSING = 6  # the DB does not exist (and this is not a first run)
LOCKED = 7  # another neo-db run holds the state lock
PERMISSION = 8  # this user may not read the DB as SQLite must (not corruption: no restore)

GATE_EXIT_CODES = (INTEGRITY, NETWORK_FS, DB_IN_USE, DB_MISSING, PERMISSION)

INTEGRITY_MESSAGE = "DB integrity check failed — session aborted. Run a backup or restore from last known-good backup before continuing."


class NeoDbError(Exception):
    """An error with a message for the operator and an exit code."""

    exit_code = FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


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


class LockedError(NeoDbError):
    exit_code = LOCKED
