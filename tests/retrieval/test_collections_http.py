"""Collections over REST through the real Envoy, at the paths of the issue's contract:
create, list, read, add documents, search (text, vector, keyword, hybrid, filter), read and
delete a document, delete the collection; JSON errors that name the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway._http import RFC3339, UUID4, assert_json_error, field_violations
from tests.servers import ServerProcess, sqlite_url

from .conftest import EMBEDDER

pytestmark = pytest.mark.xdist_group("retrieval-gateway")


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, retrieval_models: Path
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("collections-gateway")
    process = ServerProcess(
        workdir=workdir,
        database_url=sqlite_url(workdir / "db.sqlite"),
        models_dir=retrieval_models,
        gateway=True,
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def rest(gateway: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.http_url, timeout=60) as client:
        yield client


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, dict)
    return body


def test_the_collection_flow_over_rest(rest: httpx.Client) -> None:
    created = _ok(rest.post("/v1/collections", json={"name": "kb", "model_name": EMBEDDER}))
    assert created["name"] == "kb" and created["dimensions"] == 384
    assert created["metric"] == "cosine" and RFC3339.match(created["created_at"])
    assert "kb" in [c["name"] for c in _ok(rest.get("/v1/collections"))["collections"]]

    added = _ok(
        rest.post(
            "/v1/collections/kb/documents",
            json={
                "documents": [
                    {
                        "id": "cats",
                        "text": "Cats purr and chase mice.",
                        "metadata": {"kind": "pet", "legs": 4},
                    },
                    {
                        "id": "tea",
                        "text": "Green tea is brewed at 80 degrees.",
                        "metadata": {"kind": "drink"},
                    },
                    {
                        "text": "Bicycles have two wheels and pedals.",
                        "metadata": {"kind": "vehicle"},
                    },
                ]
            },
        )
    )
    assert added["document_ids"][:2] == ["cats", "tea"] and UUID4.match(added["document_ids"][2])
    assert added["chunks"] == 3

    found = _ok(
        rest.post("/v1/collections/kb:search", json={"query": "a purring animal", "top_k": 2})
    )
    assert found["mode"] == "vector" and len(found["results"]) == 2
    best = found["results"][0]
    assert best["document_id"] == "cats" and best["text"] == "Cats purr and chase mice."
    assert best["metadata"] == {"kind": "pet", "legs": 4} and best["score"] > 0

    keyword = _ok(rest.post("/v1/collections/kb:search", json={"query": "tea", "mode": "keyword"}))
    assert [r["document_id"] for r in keyword["results"]] == ["tea"]
    hybrid = _ok(
        rest.post("/v1/collections/kb:search", json={"query": "wheels to ride", "mode": "hybrid"})
    )
    assert hybrid["results"][0]["document_id"] == added["document_ids"][2]
    filtered = _ok(
        rest.post(
            "/v1/collections/kb:search",
            json={"query": "purring animal", "filter": {"kind": "drink"}},
        )
    )
    assert [r["document_id"] for r in filtered["results"]] == ["tea"]
    by_vector = _ok(
        rest.post("/v1/collections/kb:search", json={"vector": [0.1] * 384, "top_k": 3})
    )
    assert len(by_vector["results"]) == 3

    document = _ok(rest.get("/v1/collections/kb/documents/tea"))
    assert document["text"] == "Green tea is brewed at 80 degrees." and document["chunk_count"] == 1
    assert _ok(rest.delete("/v1/collections/kb/documents/tea"))["document_id"] == "tea"
    assert_json_error(rest.get("/v1/collections/kb/documents/tea"), 404, "DOCUMENT_NOT_FOUND")
    collection = _ok(rest.get("/v1/collections/kb"))
    assert collection["document_count"] == 2 and collection["chunk_count"] == 2

    assert _ok(rest.delete("/v1/collections/kb"))["name"] == "kb"
    assert_json_error(rest.get("/v1/collections/kb"), 404, "COLLECTION_NOT_FOUND")
    assert_json_error(
        rest.post("/v1/collections/kb:search", json={"query": "x"}), 404, "COLLECTION_NOT_FOUND"
    )


def test_rest_errors_name_the_field(rest: httpx.Client) -> None:
    rest.post("/v1/collections", json={"name": "errs", "model_name": EMBEDDER})
    again = assert_json_error(
        rest.post("/v1/collections", json={"name": "errs", "model_name": EMBEDDER}), 409
    )
    assert again["reason"] == "ALREADY_EXISTS"
    cases = [
        ("/v1/collections", {"name": "no spaces", "model_name": EMBEDDER}, "name"),
        ("/v1/collections/errs/documents", {"documents": [{"text": ""}]}, "documents[0].text"),
        ("/v1/collections/errs:search", {"query": "x", "mode": "semantic"}, "mode"),
        ("/v1/collections/errs:search", {"query": "x", "top_k": 1001}, "top_k"),
        ("/v1/collections/errs:search", {"vector": [1, 2, 3]}, "vector"),
    ]
    for path, body, field in cases:
        error = assert_json_error(rest.post(path, json=body), 400, "VALIDATION_ERROR")
        assert field_violations(error)[0] == field, (path, body, error)
    unknown = assert_json_error(
        rest.post("/v1/collections", json={"name": "m", "model_name": "nope"}), 404
    )
    assert unknown["reason"] == "MODEL_NOT_FOUND"
