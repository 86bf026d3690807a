"""Where collections' vectors are searched: one small protocol, :class:`VectorBackend`, and
its three implementations, chosen by ``serve --vector-backend``:

- ``faiss`` (:class:`FaissBackend`): an index in each server's memory, rebuilt from the
  database whenever it is behind (exact below ``HNSW_MIN_VECTORS`` chunks, HNSW above).
- ``pgvector`` (:class:`~taskorch.core.pgvector.PgvectorBackend`): a side table of the
  PostgreSQL database with one HNSW index per collection, written in the same transaction
  as the chunks, so every replica searches the one index.
- ``qdrant`` (:class:`~taskorch.core.qdrant.QdrantBackend`): one Qdrant collection per
  collection, on a Qdrant server or in qdrant-client's local mode.

In each, the database (documents, chunks and their vectors) stays the source of truth: a
backend can always be rebuilt from it. ``auto`` picks pgvector when the database is a
PostgreSQL that has (or lets us create) the ``vector`` extension, else FAISS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from enum import Enum
from typing import Protocol

import numpy as np
import structlog

from taskorch.core.vectors import HNSW_MIN_VECTORS, Hit, VectorIndex, Vectors, as_matrix
from taskorch.store import collections as store
from taskorch.store.collections import ChunkChange, CollectionRecord
from taskorch.store.database import Connection, Database

log = structlog.get_logger("taskorch.collections")


class BackendName(Enum):
    AUTO = "auto"
    FAISS = "faiss"
    PGVECTOR = "pgvector"
    QDRANT = "qdrant"


class BackendUnavailable(Exception):
    """The chosen vector backend cannot run here: a start-up error that names the flag and
    the fix (``serve`` prints it and exits)."""


class VectorBackend(Protocol):
    """The vector index of every collection of one server.

    The ``*_in_transaction`` methods run inside the database transaction that creates,
    changes or deletes a collection (a backend that lives in the database writes there);
    the others run after it committed.
    """

    name: str

    async def open(self) -> None:
        """Readies the backend before the server answers (tables, a connection).

        Raises:
            BackendUnavailable: it cannot run (the message names the flag and the fix).
        """
        ...

    async def warm(self, collections: Sequence[CollectionRecord]) -> None:
        """Brings the index of each stored collection up to date with the database (in the
        background: a search that comes first does it for its collection)."""
        ...

    async def close(self) -> None: ...

    def index_kind(self, record: CollectionRecord) -> str:
        """What searches the collection: "flat" (exact) or "hnsw" (approximate)."""
        ...

    def created_in_transaction(self, conn: Connection, record: CollectionRecord) -> None: ...

    def changed_in_transaction(
        self, conn: Connection, record: CollectionRecord, change: ChunkChange
    ) -> None: ...

    def deleted_in_transaction(self, conn: Connection, record: CollectionRecord) -> None: ...

    async def created(self, record: CollectionRecord) -> None: ...

    async def changed(self, record: CollectionRecord, change: ChunkChange) -> None:
        """Adds ``change.added`` (chunk ids and vectors) and removes ``change.removed`` (the
        chunks of replaced or deleted documents)."""
        ...

    async def deleted(self, record: CollectionRecord) -> None: ...

    async def search(
        self, record: CollectionRecord, query: Vectors, k: int, among: Sequence[int] | None
    ) -> list[Hit]:
        """The ``k`` chunks nearest to ``query`` (normalised; score: cosine), best first;
        only among the chunk ids ``among`` (a metadata filter's candidates) when given."""
        ...

    async def rebuild(self, record: CollectionRecord) -> None:
        """Rebuilds the collection's index from the database."""
        ...


class FaissBackend:
    """A FAISS index per collection in this process: a cache rebuilt from the database
    whenever it is behind the collection's stored revision (so replicas answer alike)."""

    name = "faiss"

    def __init__(self, db: Database) -> None:
        self.db = db
        self._indexes: dict[str, VectorIndex] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def open(self) -> None:
        pass

    async def warm(self, collections: Sequence[CollectionRecord]) -> None:
        for record in collections:
            try:
                index = await self._index(record)
            except Exception as exc:
                log.warning("index rebuild failed", collection=record.name, error=str(exc))
                continue
            log.info(
                "collection index rebuilt",
                collection=record.name,
                tenant=record.tenant_id,
                backend=self.name,
                vectors=len(index),
                index=index.kind,
            )

    async def close(self) -> None:
        self._indexes.clear()

    def index_kind(self, record: CollectionRecord) -> str:
        index = self._indexes.get(record.collection_id)
        if index is not None:
            return index.kind
        return "hnsw" if record.chunk_count >= HNSW_MIN_VECTORS else "flat"

    def created_in_transaction(self, conn: Connection, record: CollectionRecord) -> None:
        pass

    def changed_in_transaction(
        self, conn: Connection, record: CollectionRecord, change: ChunkChange
    ) -> None:
        pass

    def deleted_in_transaction(self, conn: Connection, record: CollectionRecord) -> None:
        pass

    async def created(self, record: CollectionRecord) -> None:
        self._indexes[record.collection_id] = VectorIndex(record.dimensions, 0)

    async def changed(self, record: CollectionRecord, change: ChunkChange) -> None:
        async with self._lock(record.collection_id):
            index = self._indexes.get(record.collection_id)
            if index is None:
                return
            if index.revision != change.revision_before:
                # Another replica changed the collection in between: rebuild on next use.
                del self._indexes[record.collection_id]
                return
            added = [
                (chunk_id, np.frombuffer(vector, dtype="<f4").astype(np.float32))
                for chunk_id, vector in change.added
            ]
            await asyncio.to_thread(index.apply, change.revision_after, added, change.removed)

    async def deleted(self, record: CollectionRecord) -> None:
        self._indexes.pop(record.collection_id, None)

    async def search(
        self, record: CollectionRecord, query: Vectors, k: int, among: Sequence[int] | None
    ) -> list[Hit]:
        # Under the collection's lock: FAISS must not search an index while a write changes
        # it (searches of one collection take turns; each is a millisecond or less).
        async with self._lock(record.collection_id):
            index = await self._current_index(record)
            if among is None:
                return await asyncio.to_thread(index.search, query, k)
            return await asyncio.to_thread(index.search_among, query, among, k)

    async def rebuild(self, record: CollectionRecord) -> None:
        async with self._lock(record.collection_id):
            self._indexes.pop(record.collection_id, None)
            await self._current_index(record)

    def _lock(self, collection_id: str) -> asyncio.Lock:
        return self._locks.setdefault(collection_id, asyncio.Lock())

    async def _index(self, record: CollectionRecord) -> VectorIndex:
        async with self._lock(record.collection_id):
            return await self._current_index(record)

    async def _current_index(self, record: CollectionRecord) -> VectorIndex:
        """The collection's index, rebuilt from the database if it is behind ``record``
        (for a caller that holds the collection's lock)."""
        index = self._indexes.get(record.collection_id)
        if index is not None and index.revision >= record.revision:
            return index
        revision, rows = await self.db.read(lambda conn: store.vectors(conn, record.collection_id))
        ids = [chunk_id for chunk_id, _ in rows]
        matrix = as_matrix((vector for _, vector in rows), record.dimensions)
        index = await asyncio.to_thread(VectorIndex.build, record.dimensions, revision, ids, matrix)
        self._indexes[record.collection_id] = index
        return index


async def open_backend(db: Database, choice: str, qdrant_url: str = "") -> VectorBackend:
    """The vector backend ``choice`` (a :class:`BackendName` value) on this database.

    ``auto`` is pgvector when the database is PostgreSQL with the ``vector`` extension
    installed (or installable by this user), else FAISS.

    Raises:
        BackendUnavailable: pgvector asked for on SQLite or without the extension; qdrant
            without ``--qdrant-url`` or without qdrant-client installed.
    """
    try:
        name = BackendName(choice.strip().lower())
    except ValueError:
        raise BackendUnavailable(
            f"--vector-backend must be auto, faiss, pgvector or qdrant, not {choice!r}"
        ) from None
    if name is BackendName.QDRANT:
        from taskorch.core.qdrant import QdrantBackend

        return QdrantBackend.at(db, qdrant_url)
    if name is BackendName.FAISS:
        return FaissBackend(db)
    from taskorch.core.pgvector import PgvectorBackend, install_extension

    if db.is_sqlite:
        if name is BackendName.AUTO:
            return FaissBackend(db)
        raise BackendUnavailable(
            "--vector-backend pgvector needs a PostgreSQL database (--database-url "
            "postgresql+asyncpg://...); this one is SQLite. Use --vector-backend faiss."
        )
    problem = await install_extension(db)
    if problem is None:
        return PgvectorBackend(db)
    if name is BackendName.AUTO:
        log.info("pgvector not available; collections are searched with FAISS", reason=problem)
        return FaissBackend(db)
    raise BackendUnavailable(
        f"--vector-backend pgvector: {problem}. Install pgvector on the PostgreSQL server "
        "(https://github.com/pgvector/pgvector) and run CREATE EXTENSION vector in this "
        "database as a superuser, or start with --vector-backend faiss."
    )
