"""Collections over gRPC on a real server with the default embedding model: create, add,
search by text, vector, keyword and both, filter by metadata, read and delete documents,
delete collections; errors that name the field; another tenant sees NOT_FOUND; an index
rebuilt after a restart answers as before. Every test runs on each vector backend: FAISS
(on SQLite), pgvector (on an embedded PostgreSQL) and Qdrant (qdrant-client's local mode)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_status import rpc_status

from taskorch.client import NewDocument, NotFoundError
from taskorch.v1 import collection_service_pb2 as pb
from taskorch.v1 import collection_service_pb2_grpc as pb_grpc
from tests.security.conftest import create_key
from tests.servers import ServerProcess

from .conftest import CHAT_MODEL, EMBEDDER, VectorBackend

pytestmark = pytest.mark.xdist_group("retrieval")

DOCS = [
    ("cats", "Cats are small domesticated felines that purr and chase mice.", {"kind": "animal"}),
    ("dogs", "Dogs are loyal companions that bark and love to fetch sticks.", {"kind": "animal"}),
    ("rust", "Rust is a systems programming language focused on memory safety.", {"kind": "code"}),
    ("soup", "A warm tomato soup recipe with basil, garlic and olive oil.", {"kind": "food"}),
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    retrieval_models: Path,
    vector_backend: VectorBackend,
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"collections-{vector_backend.name}")
    process = vector_backend.server(workdir, retrieval_models)
    try:
        process.start()
        yield process
    finally:  # also when it never became healthy
        process.kill()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.CollectionServiceStub]:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        yield pb_grpc.CollectionServiceStub(channel)


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def _fill(stub: pb_grpc.CollectionServiceStub, name: str, **create: Any) -> pb.Collection:
    collection = stub.CreateCollection(
        pb.CreateCollectionRequest(name=name, model_name=EMBEDDER, **create)
    )
    added = stub.AddDocuments(
        pb.AddDocumentsRequest(
            name=name,
            documents=[pb.NewDocument(id=i, text=t, metadata=_struct(m)) for i, t, m in DOCS],
        )
    )
    assert list(added.document_ids) == [i for i, _, _ in DOCS] and added.chunks == 4
    return collection


def _ids(response: pb.SearchResponse) -> list[str]:
    return [r.document_id for r in response.results]


def _error(call: Any) -> tuple[grpc.StatusCode, str, str]:
    """(code, ErrorInfo reason, first field violation) of a failed call."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(info.value)
    reason, field = "", ""
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            found = error_details_pb2.ErrorInfo()
            detail.Unpack(found)
            reason = found.reason
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            field = bad.field_violations[0].field
    return info.value.code(), reason, field


def test_a_collection_answers_a_question_by_meaning(
    stub: pb_grpc.CollectionServiceStub, vector_backend: VectorBackend
) -> None:
    collection = _fill(stub, "meaning")
    assert collection.dimensions == 384 and collection.metric == "cosine"
    assert collection.index == "flat" and collection.backend == vector_backend.name
    found = stub.Search(pb.SearchRequest(name="meaning", query="which pet purrs?", top_k=2))
    assert found.mode == "vector" and len(found.results) == 2
    best = found.results[0]
    assert best.document_id == "cats" and best.text == DOCS[0][1]
    assert best.metadata["kind"] == "animal" and 0 < best.score <= 1
    assert found.results[0].score >= found.results[1].score
    got = stub.GetCollection(pb.GetCollectionRequest(name="meaning"))
    assert got.document_count == 4 and got.chunk_count == 4
    assert "meaning" in [
        c.name for c in stub.ListCollections(pb.ListCollectionsRequest()).collections
    ]


def test_search_by_vector_keyword_hybrid_and_filter(stub: pb_grpc.CollectionServiceStub) -> None:
    _fill(stub, "modes")
    # The vector of a stored chunk finds that chunk first, with cosine 1.
    by_text = stub.Search(pb.SearchRequest(name="modes", query="memory safe systems language"))
    assert _ids(by_text)[0] == "rust"

    keyword = stub.Search(pb.SearchRequest(name="modes", query="basil garlic", mode="keyword"))
    assert keyword.mode == "keyword" and _ids(keyword) == ["soup"]
    assert keyword.results[0].score > 0

    hybrid = stub.Search(
        pb.SearchRequest(name="modes", query="loyal animal that fetches", mode="hybrid", top_k=3)
    )
    assert hybrid.mode == "hybrid" and _ids(hybrid)[0] == "dogs"

    filtered = stub.Search(
        pb.SearchRequest(name="modes", query="which pet purrs?", filter=_struct({"kind": "food"}))
    )
    assert _ids(filtered) == ["soup"]
    nothing = stub.Search(
        pb.SearchRequest(name="modes", query="purr", filter=_struct({"kind": "nope"}))
    )
    assert _ids(nothing) == []


def test_a_query_vector_finds_its_own_chunk(stub: pb_grpc.CollectionServiceStub) -> None:
    _fill(stub, "vectors")
    first = stub.Search(pb.SearchRequest(name="vectors", query=DOCS[2][1], top_k=1))
    assert _ids(first) == ["rust"] and first.results[0].score == pytest.approx(1.0, abs=1e-4)
    # A vector of the right dimensions searches as well (any scale: it is normalised).
    vector = [0.0] * 384
    vector[5] = 3.0
    found = stub.Search(pb.SearchRequest(name="vectors", vector=vector, top_k=4))
    assert sorted(_ids(found)) == sorted(i for i, _, _ in DOCS)


def test_documents_are_read_replaced_and_deleted(stub: pb_grpc.CollectionServiceStub) -> None:
    _fill(stub, "docs")
    document = stub.GetDocument(pb.GetDocumentRequest(name="docs", document_id="dogs"))
    assert document.text == DOCS[1][1] and document.metadata["kind"] == "animal"
    assert document.chunk_count == 1 and document.collection == "docs"

    stub.AddDocuments(
        pb.AddDocumentsRequest(
            name="docs", documents=[pb.NewDocument(id="dogs", text="Parrots can talk.")]
        )
    )
    assert stub.GetDocument(pb.GetDocumentRequest(name="docs", document_id="dogs")).text == (
        "Parrots can talk."
    )
    assert stub.GetCollection(pb.GetCollectionRequest(name="docs")).document_count == 4

    deleted = stub.DeleteDocument(pb.DeleteDocumentRequest(name="docs", document_id="cats"))
    assert deleted.document_id == "cats"
    found = stub.Search(pb.SearchRequest(name="docs", query="which pet purrs?", top_k=10))
    assert "cats" not in _ids(found) and len(found.results) == 3
    keyword = stub.Search(pb.SearchRequest(name="docs", query="mice purr", mode="keyword"))
    assert _ids(keyword) == []
    code, reason, _ = _error(
        lambda: stub.GetDocument(pb.GetDocumentRequest(name="docs", document_id="cats"))
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "DOCUMENT_NOT_FOUND")

    stub.DeleteCollection(pb.DeleteCollectionRequest(name="docs"))
    code, reason, _ = _error(lambda: stub.GetCollection(pb.GetCollectionRequest(name="docs")))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")


def test_a_long_document_is_split_into_overlapping_chunks(
    stub: pb_grpc.CollectionServiceStub,
) -> None:
    stub.CreateCollection(
        pb.CreateCollectionRequest(
            name="long", model_name=EMBEDDER, chunk_size=200, chunk_overlap=40
        )
    )
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(60)]
    added = stub.AddDocuments(
        pb.AddDocumentsRequest(name="long", documents=[pb.NewDocument(text=" ".join(sentences))])
    )
    assert added.chunks > 10 and len(added.document_ids[0]) == 36  # a UUID was given
    found = stub.Search(pb.SearchRequest(name="long", query="topic 42", mode="keyword", top_k=3))
    assert all(len(r.text) <= 200 for r in found.results)
    assert any("topic 42." in r.text for r in found.results)


@pytest.mark.parametrize(
    ("request_", "code", "reason", "field"),
    [
        (
            pb.CreateCollectionRequest(name="bad name!", model_name=EMBEDDER),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "name",
        ),
        (
            pb.CreateCollectionRequest(name="..", model_name=EMBEDDER),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "name",
        ),
        (
            pb.CreateCollectionRequest(name="trailing\n", model_name=EMBEDDER),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "name",
        ),
        (
            pb.CreateCollectionRequest(name="x", model_name="nope"),
            "NOT_FOUND",
            "MODEL_NOT_FOUND",
            "",
        ),
        (
            pb.CreateCollectionRequest(name="x", model_name=CHAT_MODEL),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "model_name",
        ),
        (
            pb.CreateCollectionRequest(
                name="x", model_name=EMBEDDER, chunk_size=100, chunk_overlap=100
            ),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "chunk_overlap",
        ),
        (
            pb.AddDocumentsRequest(
                name="errors", documents=[pb.NewDocument(text="ok"), pb.NewDocument(text=" ")]
            ),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "documents[1].text",
        ),
        (
            pb.AddDocumentsRequest(name="errors"),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "documents",
        ),
        (
            pb.AddDocumentsRequest(name="missing", documents=[pb.NewDocument(text="ok")]),
            "NOT_FOUND",
            "COLLECTION_NOT_FOUND",
            "",
        ),
        (
            pb.SearchRequest(name="errors", query="q", mode="fuzzy"),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "mode",
        ),
        (
            pb.SearchRequest(name="errors", query="q", top_k=5000),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "top_k",
        ),
        (pb.SearchRequest(name="errors"), "INVALID_ARGUMENT", "VALIDATION_ERROR", "query"),
        (
            pb.SearchRequest(name="errors", vector=[1.0, 2.0]),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "vector",
        ),
        (
            pb.SearchRequest(name="errors", vector=[1.0] * 384, mode="keyword"),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "query",
        ),
        (
            pb.SearchRequest(name="errors", query="q", filter=_struct({"kind": {"a": 1}})),
            "INVALID_ARGUMENT",
            "VALIDATION_ERROR",
            "filter.kind",
        ),
    ],
)
def test_bad_requests_name_the_field(
    stub: pb_grpc.CollectionServiceStub, request_: Any, code: str, reason: str, field: str
) -> None:
    try:
        stub.CreateCollection(pb.CreateCollectionRequest(name="errors", model_name=EMBEDDER))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.ALREADY_EXISTS
    method = {
        pb.CreateCollectionRequest: stub.CreateCollection,
        pb.AddDocumentsRequest: stub.AddDocuments,
        pb.SearchRequest: stub.Search,
    }[type(request_)]
    assert _error(lambda: method(request_)) == (getattr(grpc.StatusCode, code), reason, field)


def test_another_tenants_collection_is_not_found(
    tmp_path: Path, retrieval_models: Path, vector_backend: VectorBackend
) -> None:
    url = vector_backend.database_url(tmp_path)
    acme, globex = create_key(url, "acme"), create_key(url, "globex")
    server = vector_backend.server(tmp_path, retrieval_models, database_url=url, auth="keys")
    try:
        server.start()
        with grpc.insecure_channel(server.grpc_addr) as channel:
            stub = pb_grpc.CollectionServiceStub(channel)
            as_acme = (("x-api-key", acme),)
            as_globex = (("x-api-key", globex),)
            stub.CreateCollection(
                pb.CreateCollectionRequest(name="secret", model_name=EMBEDDER), metadata=as_acme
            )
            stub.AddDocuments(
                pb.AddDocumentsRequest(name="secret", documents=[pb.NewDocument(id="d", text="x")]),
                metadata=as_acme,
            )
            for call in (
                lambda: stub.GetCollection(
                    pb.GetCollectionRequest(name="secret"), metadata=as_globex
                ),
                lambda: stub.Search(pb.SearchRequest(name="secret", query="x"), metadata=as_globex),
                lambda: stub.GetDocument(
                    pb.GetDocumentRequest(name="secret", document_id="d"), metadata=as_globex
                ),
                lambda: stub.DeleteCollection(
                    pb.DeleteCollectionRequest(name="secret"), metadata=as_globex
                ),
            ):
                assert _error(call)[:2] == (grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")
            listed = stub.ListCollections(pb.ListCollectionsRequest(), metadata=as_globex)
            assert list(listed.collections) == []
            # globex may use the same name for its own collection.
            stub.CreateCollection(
                pb.CreateCollectionRequest(name="secret", model_name=EMBEDDER), metadata=as_globex
            )
            found = stub.Search(pb.SearchRequest(name="secret", query="x"), metadata=as_acme)
            assert [r.document_id for r in found.results] == ["d"]
    finally:
        server.kill()


def test_the_index_rebuilt_after_a_restart_answers_as_before(
    tmp_path: Path, retrieval_models: Path, vector_backend: VectorBackend
) -> None:
    server = vector_backend.server(tmp_path, retrieval_models)
    queries = ["which pet purrs?", "programming", "dinner recipe"]
    try:
        server.start()
        with grpc.insecure_channel(server.grpc_addr) as channel:
            stub = pb_grpc.CollectionServiceStub(channel)
            _fill(stub, "kept")
            stub.DeleteDocument(pb.DeleteDocumentRequest(name="kept", document_id="dogs"))
            before = [stub.Search(pb.SearchRequest(name="kept", query=q)) for q in queries]
        server.stop()
        server.start()
        with grpc.insecure_channel(server.grpc_addr) as channel:
            stub = pb_grpc.CollectionServiceStub(channel)
            after = [stub.Search(pb.SearchRequest(name="kept", query=q)) for q in queries]
        assert [_ids(r) for r in after] == [_ids(r) for r in before]
        for old, new in zip(before, after, strict=True):
            assert [r.score for r in new.results] == pytest.approx([r.score for r in old.results])
        # FAISS rebuilt its index; pgvector checked its side table; Qdrant's local mode kept
        # its collection on disk, at the revision of the database.
        expected = {"qdrant": "collection index current"}.get(
            vector_backend.name, "collection index rebuilt"
        )
        assert expected in server.logs()
    finally:
        server.kill()


def _cli(server: ServerProcess, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskorch", "collections", *args, "--server", server.grpc_addr],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_sdk_creates_adds_and_searches(server: ServerProcess) -> None:
    with server.client() as client:
        created = client.collections.create("sdk", EMBEDDER, chunk_size=300)
        assert created.dimensions == 384 and created.chunk_size == 300
        added = client.collections.add(
            "sdk",
            [
                NewDocument(text=DOCS[0][1], id="cats", metadata={"kind": "animal"}),
                {"id": "soup", "text": DOCS[3][1], "metadata": {"kind": "food"}},
                "A document with an id chosen by the server.",
            ],
        )
        ids = added.document_ids
        assert ids[:2] == ["cats", "soup"] and len(ids[2]) == 36
        assert added.chunks == 3 and added.task_id == ""
        best = client.collections.search("sdk", "something to eat", top_k=1)[0]
        assert best.document_id == "soup" and best.metadata == {"kind": "food"}
        hybrid = client.collections.search("sdk", "purr", mode="hybrid", filter={"kind": "animal"})
        assert [r.document_id for r in hybrid] == ["cats"]
        assert client.collections.get_document("sdk", "cats").text == DOCS[0][1]
        assert client.collections.get("sdk").document_count == 3
        client.collections.delete_document("sdk", "cats")
        with pytest.raises(NotFoundError) as info:
            client.collections.get_document("sdk", "cats")
        assert info.value.reason == "DOCUMENT_NOT_FOUND"
        assert "sdk" in [c.name for c in client.collections.list()]
        client.collections.delete("sdk")


def test_the_cli_manages_collections(server: ServerProcess, tmp_path: Path) -> None:
    made = _cli(server, "create", "cli", "--model", EMBEDDER, "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["dimensions"] == 384
    note = tmp_path / "tea.txt"
    note.write_text("Green tea is brewed at 80 degrees for two minutes.")
    added = _cli(server, "add", "cli", str(note), "--metadata", "kind=drink")
    assert added.returncode == 0 and added.stdout.split() == ["tea.txt"]
    piped = _cli(server, "add", "cli", "--id", "bike", stdin="Bicycles have two wheels.")
    assert piped.returncode == 0 and piped.stdout.split() == ["bike"]
    found = _cli(server, "search", "cli", "a hot drink", "--json", "-k", "2")
    rows = [json.loads(line) for line in found.stdout.splitlines()]
    assert rows[0]["document_id"] == "tea.txt" and rows[0]["metadata"] == {"kind": "drink"}
    filtered = _cli(server, "search", "cli", "wheels", "--filter", "kind=drink")
    assert (
        filtered.returncode == 0 and "tea.txt" in filtered.stdout and "bike" not in filtered.stdout
    )
    listed = _cli(server, "list")
    assert "cli" in listed.stdout
    missing = _cli(server, "search", "nope", "x")
    assert missing.returncode == 2 and "not found" in missing.stderr
    assert _cli(server, "delete", "cli").returncode == 0
