"""What each vector backend adds to the collection contract (tests/retrieval/
test_collections_api.py runs that on every backend): two pgvector replicas search one
index in the database; ``auto`` follows the database; a backend that cannot run stops the
server with an error naming the flag and the fix; pgvector fills in collections stored
before it was chosen and answers from its HNSW index from 10,000 chunks on; Qdrant catches
up with changes made while it was not watching."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from taskorch.client import Client, NewDocument
from taskorch.core.pgvector import PgvectorBackend
from taskorch.core.vector_backends import open_backend
from taskorch.core.vectors import HNSW_MIN_VECTORS
from taskorch.store import collections as store
from taskorch.store.collections import CollectionRecord, NewChunk, StoredDocument
from taskorch.store.database import Database
from taskorch.store.pgvector import index_name
from taskorch.store.schema import utcnow
from tests import databases
from tests.servers import ServerProcess, sqlite_url

from .conftest import EMBEDDER, EmbeddedPostgres, VectorBackend

pytestmark = pytest.mark.xdist_group("retrieval-backends")

DOCS = [
    NewDocument(id="cats", text="Cats are small felines that purr and chase mice."),
    NewDocument(id="soup", text="A warm tomato soup recipe with basil and garlic."),
    NewDocument(id="rust", text="Rust is a systems programming language focused on safety."),
]


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        server.kill()


def _server(
    started: list[ServerProcess], workdir: Path, models: Path, url: str, *args: str
) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(workdir=workdir, database_url=url, models_dir=models, args=args)
    started.append(server)
    return server


def _ids(client: Client, name: str, query: str, **kwargs: object) -> list[str]:
    return [r.document_id for r in client.collections.search(name, query, **kwargs)]


def _refused(server: ServerProcess) -> str:
    """Starts a server that must refuse to start; its log."""
    server.start(wait=False)
    assert server.proc is not None
    assert server.proc.wait(120) == 1, server.logs()
    return server.logs()


def test_two_pgvector_replicas_search_one_index(
    tmp_path: Path,
    retrieval_models: Path,
    embedded_postgres: EmbeddedPostgres,
    started: list[ServerProcess],
) -> None:
    url = embedded_postgres.new_database()
    flags = ("--vector-backend", "pgvector")
    first = _server(started, tmp_path / "a", retrieval_models, url, *flags).start()
    second = _server(started, tmp_path / "b", retrieval_models, url, *flags).start()
    with first.client() as one, second.client() as two:
        one.collections.create("shared", EMBEDDER)
        one.collections.add("shared", DOCS[:2])
        # Replica 2 has seen no change of this collection, and needs none: the index is
        # in the database.
        assert _ids(two, "shared", "which pet purrs?", top_k=1) == ["cats"]
        two.collections.add("shared", [DOCS[2]])
        assert _ids(one, "shared", "memory safe programming", top_k=1) == ["rust"]
        two.collections.delete_document("shared", "cats")
        assert "cats" not in _ids(one, "shared", "which pet purrs?", top_k=3)
        assert one.collections.get("shared").backend == "pgvector"
    # One row per chunk and one HNSW index for the collection, in the database itself.
    assert databases.fetch(url, "SELECT count(*) FROM collection_vectors") == [(2,)]
    indexes = databases.fetch(
        url, "SELECT indexdef FROM pg_indexes WHERE tablename = 'collection_vectors'"
    )
    assert any("USING hnsw" in row[0] and "vector_ip_ops" in row[0] for row in indexes)


def test_auto_follows_the_database(
    tmp_path: Path,
    retrieval_models: Path,
    embedded_postgres: EmbeddedPostgres,
    started: list[ServerProcess],
) -> None:
    on_postgres = _server(
        started, tmp_path / "pg", retrieval_models, embedded_postgres.new_database()
    ).start()
    on_sqlite = _server(
        started, tmp_path / "lite", retrieval_models, sqlite_url(tmp_path / "db.sqlite")
    ).start()
    for server, expected in ((on_postgres, "pgvector"), (on_sqlite, "faiss")):
        with server.client() as client:
            assert client.collections.create("auto", EMBEDDER).backend == expected
            client.collections.add("auto", DOCS)
            assert _ids(client, "auto", "dinner recipe", top_k=1) == ["soup"]


def test_pgvector_on_sqlite_is_refused_naming_the_flag(
    tmp_path: Path, retrieval_models: Path, started: list[ServerProcess]
) -> None:
    server = _server(
        started,
        tmp_path,
        retrieval_models,
        sqlite_url(tmp_path / "db.sqlite"),
        "--vector-backend",
        "pgvector",
    )
    logs = _refused(server)
    assert "--vector-backend pgvector needs a PostgreSQL database" in logs
    assert "--vector-backend faiss" in logs


def test_pgvector_without_the_extension_is_refused_naming_the_fix(
    tmp_path: Path, retrieval_models: Path, started: list[ServerProcess]
) -> None:
    # The machine's own PostgreSQL (15, without pgvector); skipped, saying so, where none runs.
    url = databases.create_postgres_database()
    try:
        if databases.fetch(url, "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"):
            pytest.skip("this PostgreSQL offers pgvector: no server without it to test")
        server = _server(started, tmp_path, retrieval_models, url, "--vector-backend", "pgvector")
        logs = _refused(server)
        assert "--vector-backend pgvector: the PostgreSQL server has no pgvector" in logs
        assert "CREATE EXTENSION vector" in logs and "--vector-backend faiss" in logs
        # auto falls back to FAISS there.
        fallback = _server(started, tmp_path / "auto", retrieval_models, url).start()
        with fallback.client() as client:
            assert client.collections.create("fallback", EMBEDDER).backend == "faiss"
    finally:
        for server in started:
            server.kill()
        databases.discard(url)


def test_qdrant_needs_a_url(
    tmp_path: Path, retrieval_models: Path, started: list[ServerProcess]
) -> None:
    server = _server(
        started,
        tmp_path,
        retrieval_models,
        sqlite_url(tmp_path / "db.sqlite"),
        "--vector-backend",
        "qdrant",
    )
    assert "--vector-backend qdrant needs --qdrant-url" in _refused(server)


def test_pgvector_fills_in_collections_stored_before_it(
    tmp_path: Path,
    retrieval_models: Path,
    embedded_postgres: EmbeddedPostgres,
    started: list[ServerProcess],
) -> None:
    url = embedded_postgres.new_database()
    before = _server(started, tmp_path / "a", retrieval_models, url, "--vector-backend", "faiss")
    with before.start().client() as client:
        client.collections.create("older", EMBEDDER)
        client.collections.add("older", DOCS)
        expected = client.collections.search("older", "which pet purrs?", top_k=3)
    before.stop()
    assert databases.fetch(url, "SELECT to_regclass('collection_vectors')") == [(None,)]
    after = _server(started, tmp_path / "b", retrieval_models, url, "--vector-backend", "pgvector")
    with after.start().client() as client:
        found = client.collections.search("older", "which pet purrs?", top_k=3)
    assert [r.document_id for r in found] == [r.document_id for r in expected]
    assert [r.score for r in found] == pytest.approx([r.score for r in expected], abs=1e-5)
    assert databases.fetch(url, "SELECT count(*) FROM collection_vectors") == [(3,)]


def test_qdrant_catches_up_with_changes_it_did_not_see(
    tmp_path: Path, retrieval_models: Path, started: list[ServerProcess]
) -> None:
    qdrant = VectorBackend("qdrant")
    url = sqlite_url(tmp_path / "db.sqlite")
    server = qdrant.server(tmp_path / "q", retrieval_models, database_url=url)
    started.append(server)
    (tmp_path / "q").mkdir()
    with server.start().client() as client:
        client.collections.create("drift", EMBEDDER)
        client.collections.add("drift", DOCS)
        assert _ids(client, "drift", "which pet purrs?", top_k=1) == ["cats"]
    server.stop()
    # Meanwhile a server on FAISS changes the collection; Qdrant's folder does not know.
    other = _server(started, tmp_path / "f", retrieval_models, url, "--vector-backend", "faiss")
    with other.start().client() as client:
        client.collections.delete_document("drift", "cats")
        client.collections.add("drift", [NewDocument(id="dogs", text="Dogs bark and fetch.")])
    other.stop()
    with server.start().client() as client:
        found = _ids(client, "drift", "which pet purrs?", top_k=4)
        assert "cats" not in found and "dogs" in found and len(found) == 3
    assert "collection index rebuilt" in server.logs()


async def test_pgvector_answers_from_its_hnsw_index_from_ten_thousand_chunks(
    embedded_postgres: EmbeddedPostgres,
) -> None:
    """Below HNSW_MIN_VECTORS every distance is computed; from there the collection's
    partial HNSW index answers (PostgreSQL's own statistics count its scans), and a
    filtered search stays exact."""
    db = Database(embedded_postgres.new_database())
    await db.open()
    try:
        rng = np.random.default_rng(3)
        data = rng.standard_normal((HNSW_MIN_VECTORS, 32)).astype(np.float32)
        data /= np.linalg.norm(data, axis=1, keepdims=True)
        now = utcnow()
        record = CollectionRecord(
            collection_id=str(uuid.uuid4()),
            tenant_id="default",
            name="big",
            model_name="m",
            dimensions=32,
            chunk_size=800,
            chunk_overlap=100,
            document_count=0,
            chunk_count=0,
            revision=0,
            created_at=now,
            updated_at=now,
        )
        await db.write(lambda tx: store.insert_collection(tx.conn, record))
        documents = [
            StoredDocument(f"d{i}", f"chunk {i}", {"even": i % 2 == 0}, [NewChunk(f"c{i}", v)])
            for i, v in enumerate(row.astype("<f4").tobytes() for row in data)
        ]
        await db.write(
            lambda tx: store.put_documents(tx.conn, record.collection_id, documents, now)
        )
        backend = await open_backend(db, "pgvector")
        assert isinstance(backend, PgvectorBackend)
        await backend.open()
        small = replace(record, chunk_count=HNSW_MIN_VECTORS - 1, revision=1)
        big = replace(record, chunk_count=HNSW_MIN_VECTORS, revision=1)
        ids = await db.read(lambda conn: store.chunk_ids_of(conn, record.collection_id, ["d7"]))

        assert backend.index_kind(small) == "flat" and backend.index_kind(big) == "hnsw"
        hnsw = index_name(record.collection_id)
        assert hnsw not in await backend.plan(small, data[7], 10, None)
        exact = await backend.search(small, data[7], 10, None)
        assert exact[0].chunk_id == ids[0] and exact[0].score == pytest.approx(1.0, abs=1e-5)

        assert f"Index Scan using {hnsw}" in await backend.plan(big, data[7], 10, None)
        approximate = await backend.search(big, data[7], 10, None)
        assert approximate[0].chunk_id == ids[0]
        chunk_of = dict(
            await db.read(
                lambda conn: [
                    (int(chunk_id), int(document_id[1:]))
                    for chunk_id, document_id in conn.execute(
                        text("SELECT chunk_id, document_id FROM collection_chunks")
                    )
                ]
            )
        )
        truth = np.argsort(-(data @ data[7]))[:10]
        assert len({chunk_of[h.chunk_id] for h in approximate} & set(truth.tolist())) >= 9

        odd = await db.read(
            lambda conn: store.chunk_ids_of(
                conn, record.collection_id, [f"d{i}" for i in range(1, HNSW_MIN_VECTORS, 2)]
            )
        )
        assert hnsw not in await backend.plan(big, data[7], 5, odd)
        filtered = await backend.search(big, data[7], 5, odd)
        expected = [int(i) for i in np.argsort(-(data @ data[7])) if i % 2 == 1][:5]
        assert [chunk_of[h.chunk_id] for h in filtered] == expected
    finally:
        await db.close()
