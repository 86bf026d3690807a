"""What one server process stands on: its database, its event hub and, on PostgreSQL, the
listener that brings other replicas' events and work into that hub.

The server's composition root (server/app.py) builds one ``Backing`` and hands its ``db`` and
``hub`` to the core services; it opens, reads the few figures it reports and closes the
database through here, so no server module reaches into the store or the event package.
"""

from __future__ import annotations

from collections.abc import Mapping

from taskorch.events.hub import EventHub
from taskorch.events.postgres import PostgresListener
from taskorch.store import counts
from taskorch.store import keys as key_store
from taskorch.store import subtasks as subtask_store
from taskorch.store.database import Database
from taskorch.store.queue import Turns
from taskorch.store.sqlite_lock import SqliteLock


class Backing:
    """The database and event hub of one server process, opened and closed together."""

    def __init__(self, database_url: str, *, pool_size: int) -> None:
        self.db = Database(database_url, pool_size=pool_size)
        self.hub = EventHub()
        self.listener: PostgresListener | None = None
        self._sqlite_lock: SqliteLock | None = None

    def lock(self) -> None:
        """One SQLite file has one server: takes the file's lock before anything touches it
        (a second server would re-queue this one's work). Nothing to do on PostgreSQL.

        Raises:
            DatabaseInUse: another process serves the file (the message names its pid).
        """
        if (database_file := self.db.sqlite_file) is not None:
            lock = SqliteLock(database_file)
            lock.acquire()
            self._sqlite_lock = lock

    async def open(self) -> None:
        """Opens the database (migrating it) and, on PostgreSQL, starts listening to the
        other replicas: their events for watchers here, their work for idle takers."""
        await self.db.open()
        if not self.db.is_sqlite:
            self.listener = PostgresListener(self.db, self.hub)
            self.listener.start()

    async def close(self) -> None:
        """Stops listening, closes the database and releases the SQLite file's lock."""
        if self.listener is not None:
            await self.listener.stop()
        await self.db.close()
        if self._sqlite_lock is not None:
            self._sqlite_lock.release()

    @staticmethod
    def turns(*, fair: bool, weights: Mapping[str, float]) -> Turns:
        """How new work gets its place in the queue (``--fair-sharing``, ``--tenant-weight``)."""
        return Turns(fair=fair, weights=dict(weights))

    async def active_key_count(self) -> int:
        """How many API keys are not revoked (reported at start-up, never deciding access)."""
        return await self.db.read(key_store.active_count)

    async def compact_counts(self) -> int:
        """Folds the appended task-count deltas into the counts; returns how many."""
        return await self.db.write(lambda tx: counts.compact(tx.conn))

    async def queue_depth(self) -> dict[str, int]:
        """Runnable subtasks by kind, every tenant (for the queue-depth gauge)."""
        return await self.db.read(subtask_store.queue_depth)
