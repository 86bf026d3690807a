"""One SQLite file, one server: an exclusive lock on a file beside the database, taken before
anything else touches it and held for the life of the process.

A second ``taskorch serve`` on the same file used to re-queue the live server's running work
(its start-up expires the leases of local workers) before failing on a port in use, so that
work ran twice. With the lock it refuses to start, having changed nothing. The operating system
releases the lock when the process ends, however it ends (even SIGKILL), so no stale lock is
left to clean up.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; one server per file is then the user's care
    fcntl = None  # type: ignore[assignment]


class DatabaseInUse(Exception):
    """Another process holds the SQLite database's lock."""


class SqliteLock:
    """The lock of one SQLite database file: ``<database>.lock``, holding the owner's pid."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock without waiting.

        Raises:
            DatabaseInUse: another process holds it (the message names its pid).
        """
        if fcntl is None or self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not inherited by children (Python's default), so Envoy never holds it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DatabaseInUse(
                f"{self.database} is in use by another taskorch server (pid {holder}); "
                "stop it first, or give this one another --database-url"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
