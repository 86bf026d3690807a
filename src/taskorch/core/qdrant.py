"""The Qdrant backend: each collection's vectors in a Qdrant collection of its own
(``taskorch_<collection id>``, dot product over L2-normalised vectors, so scores are
cosines), on a Qdrant server or in qdrant-client's local mode.

``--qdrant-url`` chooses where: ``http://HOST:6333`` or ``https://...`` is a server
(``TASKORCH_QDRANT_API_KEY`` its key); ``:memory:`` is local mode in memory (rebuilt from the
database at every start); anything else (``path:/srv/qdrant`` or a plain directory) is
local mode persisted in that directory, which only one process may open at a time.

The database stays the source of truth. Changes are sent after their commit; a point with
id 0 (chunk ids start at 1) holds the database revision the Qdrant collection reflects, so
a server that finds it behind (a change of another replica not seen yet, a crash between
commit and send, a Qdrant collection lost) rebuilds the collection from the database.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import numpy as np
import structlog

from taskorch.core.vector_backends import BackendUnavailable
from taskorch.core.vectors import HNSW_EF_SEARCH, HNSW_MIN_VECTORS, Hit, Vectors, as_matrix
from taskorch.store import collections as store
from taskorch.store.collections import ChunkChange, CollectionRecord
from taskorch.store.database import Connection, Database

log = structlog.get_logger("taskorch.collections")

REVISION_POINT = 0
UPLOAD_BATCH = 1000
PREFIX = "taskorch_"


def client_arguments(url: str) -> dict[str, Any]:
    """qdrant-client's constructor arguments for a ``--qdrant-url``.

    Raises:
        BackendUnavailable: no URL.
    """
    url = url.strip()
    if not url:
        raise BackendUnavailable(
            "--vector-backend qdrant needs --qdrant-url: http://HOST:6333 for a Qdrant "
            "server, ':memory:' or a directory (path:/dir) for qdrant-client's local mode"
        )
    if url.startswith(("http://", "https://")):
        return {"url": url, "api_key": os.environ.get("TASKORCH_QDRANT_API_KEY") or None}
    if url == ":memory:":
        return {"location": ":memory:"}
    return {"path": url.removeprefix("path:")}


class QdrantBackend:
    name = "qdrant"

    def __init__(self, db: Database, client: Any, where: str) -> None:
        from qdrant_client import models

        self.db = db
        self.client = client
        self.where = where
        # Local mode compares every vector (and warns that search parameters do nothing).
        self.local = not where.startswith(("http://", "https://"))
        self.models = models
        # The database revision each Qdrant collection reflects, as far as this process
        # knows (absent: read it from the collection's revision point).
        self._synced: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def at(cls, db: Database, url: str) -> QdrantBackend:
        """The backend on the Qdrant ``url`` names (see :func:`client_arguments`).

        Raises:
            BackendUnavailable: no URL, no qdrant-client, or a local folder in use.
        """
        arguments = client_arguments(url)
        try:
            from qdrant_client import AsyncQdrantClient
        except ImportError:
            raise BackendUnavailable(
                "--vector-backend qdrant needs qdrant-client: pip install 'taskorch[qdrant]'"
            ) from None
        try:
            client = AsyncQdrantClient(**arguments)
        except Exception as exc:  # local mode: a folder another process holds, ...
            raise BackendUnavailable(f"--qdrant-url {url}: {exc}") from None
        return cls(db, client, url)

    async def open(self) -> None:
        try:
            await self.client.get_collections()
        except Exception as exc:
            raise BackendUnavailable(
                f"--qdrant-url {self.where}: Qdrant does not answer ({exc})"
            ) from None

    async def warm(self, collections: Sequence[CollectionRecord]) -> None:
        for record in collections:
            try:
                rebuilt = await self._ensure(record)
            except Exception as exc:
                log.warning("index rebuild failed", collection=record.name, error=str(exc))
                continue
            log.info(
                "collection index rebuilt" if rebuilt else "collection index current",
                collection=record.name,
                tenant=record.tenant_id,
                backend=self.name,
                revision=self._synced.get(record.collection_id),
            )

    async def close(self) -> None:
        await self.client.close()

    def index_kind(self, record: CollectionRecord) -> str:
        if self.local:
            return "flat"
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
        async with self._lock(record.collection_id):
            await self._recreate(record, revision=record.revision)

    async def changed(self, record: CollectionRecord, change: ChunkChange) -> None:
        async with self._lock(record.collection_id):
            if self._synced.get(record.collection_id) != change.revision_before:
                # Behind (or unknown): the next search compares and rebuilds.
                self._synced.pop(record.collection_id, None)
                return
            name = _name(record)
            if change.removed:
                await self.client.delete(
                    name,
                    points_selector=self.models.PointIdsList(points=list(change.removed)),
                    wait=True,
                )
            for start in range(0, len(change.added), UPLOAD_BATCH):
                batch = change.added[start : start + UPLOAD_BATCH]
                await self.client.upsert(
                    name,
                    points=[
                        self.models.PointStruct(
                            id=chunk_id, vector=np.frombuffer(vector, dtype="<f4").tolist()
                        )
                        for chunk_id, vector in batch
                    ],
                    wait=True,
                )
            await self._mark(record, change.revision_after)

    async def deleted(self, record: CollectionRecord) -> None:
        async with self._lock(record.collection_id):
            self._synced.pop(record.collection_id, None)
            await self.client.delete_collection(_name(record))

    async def search(
        self, record: CollectionRecord, query: Vectors, k: int, among: Sequence[int] | None
    ) -> list[Hit]:
        if k <= 0 or (among is not None and not among):
            return []
        async with self._lock(record.collection_id):
            await self._ensure(record)
        models = self.models
        # The revision point (a zero vector, score 0) is dropped from the answers rather
        # than filtered out: a filter costs local mode a Python test per point (162 ms a
        # search at 10,000 chunks).
        query_filter = None
        if among is not None:
            query_filter = models.Filter(must=[models.HasIdCondition(has_id=list(among))])
        exact = among is not None or record.chunk_count < HNSW_MIN_VECTORS
        found = await self.client.query_points(
            _name(record),
            query=[float(x) for x in query.reshape(-1)],
            limit=k + 1,
            query_filter=query_filter,
            search_params=None
            if self.local
            else models.SearchParams(hnsw_ef=max(HNSW_EF_SEARCH, 2 * k), exact=exact),
            with_payload=False,
            with_vectors=False,
        )
        hits = [
            Hit(int(point.id), float(point.score))
            for point in found.points
            if int(point.id) != REVISION_POINT
        ]
        return hits[:k]

    async def rebuild(self, record: CollectionRecord) -> None:
        async with self._lock(record.collection_id):
            await self._rebuild(record)

    def _lock(self, collection_id: str) -> asyncio.Lock:
        return self._locks.setdefault(collection_id, asyncio.Lock())

    async def _stored_revision(self, record: CollectionRecord) -> int | None:
        name = _name(record)
        if not await self.client.collection_exists(name):
            return None
        points = await self.client.retrieve(name, ids=[REVISION_POINT], with_payload=True)
        if not points or not points[0].payload:
            return None
        return int(points[0].payload.get("revision", -1))

    async def _ensure(self, record: CollectionRecord) -> bool:
        """Rebuilds the Qdrant collection unless it reflects ``record``'s revision (for a
        caller that holds the collection's lock); True when it rebuilt."""
        synced = self._synced.get(record.collection_id)
        if synced is not None and synced >= record.revision:
            return False
        stored = await self._stored_revision(record)
        if stored is not None and stored >= record.revision:
            self._synced[record.collection_id] = stored
            return False
        await self._rebuild(record)
        return True

    async def _rebuild(self, record: CollectionRecord) -> None:
        revision, rows = await self.db.read(lambda conn: store.vectors(conn, record.collection_id))
        await self._recreate(record, revision=None)
        ids = [chunk_id for chunk_id, _ in rows]
        matrix = as_matrix((vector for _, vector in rows), record.dimensions)
        for start in range(0, len(ids), UPLOAD_BATCH):
            await self.client.upsert(
                _name(record),
                points=self.models.Batch(
                    ids=list[int | str | UUID](ids[start : start + UPLOAD_BATCH]),
                    vectors=matrix[start : start + UPLOAD_BATCH].tolist(),
                ),
                wait=True,
            )
        await self._mark(record, revision)

    async def _recreate(self, record: CollectionRecord, revision: int | None) -> None:
        name = _name(record)
        if await self.client.collection_exists(name):
            await self.client.delete_collection(name)
        await self.client.create_collection(
            name,
            vectors_config=self.models.VectorParams(
                size=record.dimensions, distance=self.models.Distance.DOT
            ),
        )
        if revision is not None:
            await self._mark(record, revision)

    async def _mark(self, record: CollectionRecord, revision: int) -> None:
        await self.client.upsert(
            _name(record),
            points=[
                self.models.PointStruct(
                    id=REVISION_POINT,
                    vector=[0.0] * record.dimensions,
                    payload={"revision": revision},
                )
            ],
            wait=True,
        )
        self._synced[record.collection_id] = revision


def _name(record: CollectionRecord) -> str:
    return PREFIX + record.collection_id
