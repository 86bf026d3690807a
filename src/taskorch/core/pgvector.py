"""The pgvector backend: collections' vectors searched inside PostgreSQL, so every replica
sharing the database searches one index, always as current as the last commit.

Each chunk's vector is written to ``collection_vectors`` (store/pgvector.py) in the
transaction that stores the chunk, and deleted with it. A collection below
``HNSW_MIN_VECTORS`` chunks is searched exactly (every distance computed, as FAISS's flat
index does); from there on its partial HNSW index answers. Collections stored before this
backend was chosen are filled in from ``collection_chunks`` at start-up (the database
remains the source of truth: the side table can always be rebuilt from it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

import structlog

from taskorch.core.vectors import HNSW_EF_SEARCH, HNSW_MIN_VECTORS, Hit, Vectors
from taskorch.store import pgvector as side
from taskorch.store.collections import ChunkChange, CollectionRecord
from taskorch.store.database import Connection, Database, Transaction

log = structlog.get_logger("taskorch.collections")

# Vectors copied into the side table per transaction when filling it in.
FILL_BATCH = 5000


async def install_extension(db: Database) -> str | None:
    """Makes sure the ``vector`` extension is installed; None, or why it cannot be."""
    problem, needed = await db.read(side.extension_problem)
    if problem is not None or not needed:
        return problem
    try:
        await db.write(lambda tx: side.create_extension(tx.conn))
    except Exception as exc:
        reason = getattr(exc, "orig", None) or exc
        return f"CREATE EXTENSION vector failed ({reason})"
    return None


class PgvectorBackend:
    name = "pgvector"

    def __init__(self, db: Database) -> None:
        self.db = db
        # Collections whose side-table rows this process has checked (or written) all.
        self._filled: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    async def open(self) -> None:
        await self.db.write(lambda tx: side.create_table(tx.conn))

    async def warm(self, collections: Sequence[CollectionRecord]) -> None:
        for record in collections:
            try:
                filled = await self._ensure(record)
            except Exception as exc:
                log.warning("index rebuild failed", collection=record.name, error=str(exc))
                continue
            log.info(
                "collection index rebuilt",
                collection=record.name,
                tenant=record.tenant_id,
                backend=self.name,
                vectors_added=filled,
                index=self.index_kind(record),
            )

    async def close(self) -> None:
        pass

    def index_kind(self, record: CollectionRecord) -> str:
        return "hnsw" if record.chunk_count >= HNSW_MIN_VECTORS else "flat"

    def created_in_transaction(self, conn: Connection, record: CollectionRecord) -> None:
        side.create_index(conn, record.collection_id, record.dimensions)

    def changed_in_transaction(
        self, conn: Connection, record: CollectionRecord, change: ChunkChange
    ) -> None:
        # (Removed chunks took their rows with them: ON DELETE CASCADE.)
        side.insert(conn, record.collection_id, change.added)

    def deleted_in_transaction(self, conn: Connection, record: CollectionRecord) -> None:
        side.drop_index(conn, record.collection_id)

    async def created(self, record: CollectionRecord) -> None:
        self._filled.add(record.collection_id)

    async def changed(self, record: CollectionRecord, change: ChunkChange) -> None:
        pass

    async def deleted(self, record: CollectionRecord) -> None:
        self._filled.discard(record.collection_id)

    async def search(
        self, record: CollectionRecord, query: Vectors, k: int, among: Sequence[int] | None
    ) -> list[Hit]:
        if k <= 0 or (among is not None and not among):
            return []
        await self._ensure(record)
        rows = await self._query(record, query, k, among, explain=False)
        assert not isinstance(rows, str)
        return [Hit(chunk_id, score) for chunk_id, score in rows]

    async def plan(
        self, record: CollectionRecord, query: Vectors, k: int, among: Sequence[int] | None
    ) -> str:
        """PostgreSQL's plan for :meth:`search` (EXPLAIN): which index answers."""
        plan = await self._query(record, query, k, among, explain=True)
        assert isinstance(plan, str)
        return plan

    async def _query(
        self,
        record: CollectionRecord,
        query: Vectors,
        k: int,
        among: Sequence[int] | None,
        *,
        explain: bool,
    ) -> list[tuple[int, float]] | str:
        values = [float(x) for x in query.reshape(-1)]
        return await self.db.read(
            lambda conn: side.search(
                conn,
                record.collection_id,
                record.dimensions,
                values,
                k,
                exact=record.chunk_count < HNSW_MIN_VECTORS,
                among=among,
                ef_search=max(HNSW_EF_SEARCH, 2 * k),
                explain=explain,
            )
        )

    async def rebuild(self, record: CollectionRecord) -> None:
        async with self._lock(record.collection_id):
            await self._fill(record)
            self._filled.add(record.collection_id)

    def _lock(self, collection_id: str) -> asyncio.Lock:
        return self._locks.setdefault(collection_id, asyncio.Lock())

    async def _ensure(self, record: CollectionRecord) -> int:
        """Fills in the collection's missing rows once per process (a collection stored
        before pgvector was chosen, or by a writer that bypassed it); the rows added."""
        if record.collection_id in self._filled:
            return 0
        async with self._lock(record.collection_id):
            if record.collection_id in self._filled:
                return 0
            added = await self._fill(record)
            self._filled.add(record.collection_id)
            return added

    async def _fill(self, record: CollectionRecord) -> int:
        """Copies the vectors the side table lacks, then makes sure the collection has its
        HNSW index (built after the copy: a bulk build is faster than row by row)."""
        added = 0
        while True:
            rows = await self.db.read(
                lambda conn: side.missing(conn, record.collection_id, FILL_BATCH)
            )
            if not rows:
                break
            await self.db.write(partial(_insert, collection_id=record.collection_id, rows=rows))
            added += len(rows)
        await self.db.write(
            lambda tx: side.create_index(tx.conn, record.collection_id, record.dimensions)
        )
        return added


def _insert(tx: Transaction, collection_id: str, rows: list[tuple[int, bytes]]) -> None:
    side.insert(tx.conn, collection_id, rows)
