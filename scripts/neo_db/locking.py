"""One neo-db writer at a time: an flock on state_dir/neo-db.lock.

Every command that writes backups or session state holds it, so a `.tmp-` file
found while holding the lock was left by an interrupted run and is safe to remove.
Whoever takes the lock first completes or rolls back a restore that was interrupted
(see actions/restore.py), so no command ever runs on a half-restored DB.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from . import fsutil
from .config import Config
from .errors import LockedError, PathError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def state_lock(cfg: Config, timeout: float | None = None) -> Iterator[None]:
    wait = cfg.lock_timeout_seconds if timeout is None else timeout
    lock = Path(cfg.state_dir) / "neo-db.lock"
    try:
        os.makedirs(cfg.state_dir, mode=0o750, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o640)
        fsutil.chown_like_parent(lock)  # made by root first: still the service user's to open
    except OSError as exc:
        raise PathError.from_os_error(exc, key="state_dir", key_path=cfg.state_dir, source=cfg.source) from None
    deadline = time.monotonic() + wait
    announced = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"another neo-db run holds {cfg.state_dir}/neo-db.lock (waited {wait}s)",
                        hint="wait for it to finish (see 'journalctl -u neo-engine'), then retry",
                    ) from None
                if not announced:
                    log.info("waiting for another neo-db run to release %s/neo-db.lock", cfg.state_dir)
                    announced = True
                time.sleep(0.2)
        try:  # who holds it, for a person looking; the flock is what counts, so a full disk does not matter here
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            log.debug("could not write the PID into %s: %s", lock, exc.strerror)
        from .core import install, origin  # noqa: PLC0415  (here, not at the top: both take this lock themselves)

        install.recover(cfg)
        origin.finish_pending(cfg)  # an import killed half-way: finished (origin, counter) or rolled back
        yield
    finally:
        os.close(fd)
