"""The collection service on both databases (SQLite and PostgreSQL) with a deterministic
embedder (bag of words): what is stored is what is searched, keyword search on each
database's full-text engine, hybrid fusion, filters, replace and delete, and an index that a
second service (another replica, or the same database after a restart) rebuilds alike."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from taskorch.core.collections import CollectionService, NewCollection, NewDocument, SearchSpec
from taskorch.domain.caller import Caller
from taskorch.domain.errors import CollectionNotFound, InvalidArgument
from taskorch.store.database import Database
from tests import databases

DIMS = 64
ACME = Caller(tenant_id="acme")
GLOBEX = Caller(tenant_id="globex")


class BagOfWords:
    """Each word adds a fixed random unit vector: texts sharing words are near."""

    def resolve(self, model_name: str) -> str:
        if model_name not in ("", "bow"):
            raise InvalidArgument("not an embedding model", field="model_name")
        return "bow"

    async def embed(self, model_name: str, texts: Sequence[str], *, field: str) -> np.ndarray:
        rows = []
        for text in texts:
            vector = np.zeros(DIMS, dtype=np.float32)
            for word in text.lower().split():
                seed = int.from_bytes(hashlib.sha256(word.strip(".,?").encode()).digest()[:4])
                vector += np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32)
            rows.append(vector / max(float(np.linalg.norm(vector)), 1e-12))
        return np.vstack(rows)


@pytest.fixture(params=["sqlite", "postgresql"])
async def url(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[str]:
    made = databases.new_database(tmp_path, request.param)  # type: ignore[arg-type]
    yield made
    databases.discard(made)


async def _service(url: str) -> tuple[Database, CollectionService]:
    db = Database(url)
    await db.open()
    service = CollectionService(db, BagOfWords())
    await service.start()
    return db, service


DOCS = [
    NewDocument("cats purr and sleep all day", "cats", {"kind": "pet"}),
    NewDocument("dogs bark and fetch sticks", "dogs", {"kind": "pet"}),
    NewDocument("green tea is brewed hot", "tea", {"kind": "drink", "hot": True}),
    NewDocument("iced coffee is served cold", "coffee", {"kind": "drink", "hot": False}),
]


async def test_search_modes_filters_and_changes_on_each_database(url: str) -> None:
    db, service = await _service(url)
    try:
        made = await service.create(ACME, NewCollection("kb", "bow"))
        assert made.dimensions == DIMS
        added = await service.add(ACME, "kb", DOCS)
        assert added.document_ids == ["cats", "dogs", "tea", "coffee"] and added.chunks == 4

        vector = await service.search(ACME, "kb", SearchSpec(query="cats purr", top_k=2))
        assert vector.results[0].document_id == "cats"
        keyword = await service.search(ACME, "kb", SearchSpec(query="brewed tea!", mode="keyword"))
        assert [r.document_id for r in keyword.results] == ["tea"]
        assert keyword.results[0].score > 0
        hybrid = await service.search(ACME, "kb", SearchSpec(query="dogs fetch", mode="hybrid"))
        assert hybrid.results[0].document_id == "dogs"
        hot = await service.search(
            ACME, "kb", SearchSpec(query="coffee", filter={"kind": "drink", "hot": True})
        )
        assert [r.document_id for r in hot.results] == ["tea"]
        cold = await service.search(
            ACME, "kb", SearchSpec(query="tea", mode="keyword", filter={"hot": False})
        )
        assert [r.document_id for r in cold.results] == []

        await service.add(ACME, "kb", [NewDocument("parrots talk", "dogs", {"kind": "bird"})])
        await service.delete_document(ACME, "kb", "cats")
        keyword = await service.search(
            ACME, "kb", SearchSpec(query="cats dogs parrots", mode="keyword")
        )
        assert [r.document_id for r in keyword.results] == ["dogs"]
        assert keyword.results[0].text == "parrots talk"
        stored = await service.get(ACME, "kb")
        assert (stored.document_count, stored.chunk_count) == (3, 3)

        with pytest.raises(CollectionNotFound):
            await service.search(GLOBEX, "kb", SearchSpec(query="cats"))

        # Another service on the same database (a replica, or this one after a restart)
        # rebuilds the index from the database and answers alike.
        other_db, other = await _service(url)
        try:
            for query in ("parrots", "green tea", "coffee cold"):
                mine = await service.search(ACME, "kb", SearchSpec(query=query))
                theirs = await other.search(ACME, "kb", SearchSpec(query=query))
                assert [(r.document_id, round(r.score, 5)) for r in mine.results] == [
                    (r.document_id, round(r.score, 5)) for r in theirs.results
                ]
            # A change made through one is seen by the other (its index is behind the
            # stored revision, so it is rebuilt before it answers).
            await other.add(ACME, "kb", [NewDocument("zebras have stripes", "zebra")])
            found = await service.search(ACME, "kb", SearchSpec(query="zebras stripes", top_k=1))
            assert found.results[0].document_id == "zebra"
        finally:
            await other.close()
            await other_db.close()

        await service.delete(ACME, "kb")
        with pytest.raises(CollectionNotFound):
            await service.get(ACME, "kb")
    finally:
        await service.close()
        await db.close()
