"""`/openapi.json` through the gateway: a valid OpenAPI 3 document with every http binding of
every RPC, and every documented operation is routed by Envoy."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from taskorch.gateway import openapi
from taskorch.gateway.routes import routes

pytestmark = pytest.mark.xdist_group("gateway_openapi")

_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")


@pytest.fixture(scope="module")
def document(rest: httpx.Client) -> dict[str, Any]:
    response = rest.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return dict(response.json())


def test_it_is_a_valid_openapi_3_document(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    validate(document)  # raises on any violation of the OpenAPI 3 schema


def test_every_binding_of_every_rpc_is_documented(document: dict[str, Any]) -> None:
    bindings = list(routes())
    assert len(bindings) >= 25
    for route in bindings:
        path = _VARIABLE.sub(r"{\1}", route.path)
        operation = document["paths"].get(path, {}).get(route.http_method.lower())
        assert operation is not None, f"{route.http_method} {route.path} ({route.rpc})"
        assert operation["x-grpc-method"] == f"{route.service}/{route.rpc}"
        if route.server_streaming:
            assert "text/event-stream" in operation["responses"]["200"]["content"]
    documented = sum(len(ops) for ops in document["paths"].values())
    assert documented == len(bindings)


def test_the_served_document_matches_the_compiled_protos(document: dict[str, Any]) -> None:
    # `make proto` writes gateway/openapi.json; a stale one would describe another API.
    generated = openapi.document()
    assert sorted(document["paths"]) == sorted(generated["paths"])
    for path, operations in generated["paths"].items():
        for verb, operation in operations.items():
            served = document["paths"][path][verb]
            assert served["operationId"] == operation["operationId"]
            names = [p["name"] for p in operation.get("parameters", [])]
            assert [p["name"] for p in served.get("parameters", [])] == names
    for name, schema in generated["components"]["schemas"].items():
        served_schema = document["components"]["schemas"][name]
        assert set(served_schema.get("properties", {})) == set(schema.get("properties", {})), name


def test_every_documented_operation_is_routed(rest: httpx.Client, document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for verb in operations:
            url = path.replace("{task_id}", str(uuid.uuid4()))
            body = {} if "requestBody" in operations[verb] else None
            # Streamed: worker Listen streams never end, so only the head and a bounded
            # part of the body are read.
            with rest.stream(verb.upper(), url, json=body) as response:
                text = next(response.iter_text(), "") if response.status_code >= 400 else ""
            assert response.status_code < 500, (verb, path, text)
            if response.status_code < 300:  # a success is one the document names
                assert str(response.status_code) in operations[verb]["responses"], (verb, path)
            if response.status_code == 404:
                assert "Could not resolve" not in text, (verb, path)


def _documented(document: dict[str, Any], verb: str, path: str) -> dict[str, Any]:
    return dict(document["paths"][path][verb]["responses"])


def test_every_documented_status_is_what_the_server_answers(
    rest: httpx.Client, document: dict[str, Any]
) -> None:
    """Each explicitly documented status of the bindings whose answers differ from the
    transcoder's 200 is what the server answers, and no other 2xx is documented there."""
    created = rest.post("/tasks", json={"text": "hello"})
    assert created.status_code == 201 and set(_documented(document, "post", "/tasks")) == {
        "201",
        "422",
        "429",
        "default",
    }
    slow = {"task_type": "echo", "input_data": {"delay_seconds": 30}}
    task = rest.post("/api/v1/tasks", json=slow)
    deleted = rest.delete(f"/api/v1/tasks/{task.json()['id']}")
    cancel = _documented(document, "delete", "/api/v1/tasks/{task_id}")
    assert deleted.status_code == 204 and deleted.content == b"" and "content" not in cancel["204"]
    assert rest.post("/v1/tasks", json={"text": "hi"}).status_code == 200
    assert "200" in _documented(document, "post", "/v1/tasks")
    for path in ("/tasks", "/v1/tasks", "/api/v1/tasks", "/task"):
        assert "422" in _documented(document, "post", path), path
        assert rest.post(path, json={"text": "a" * 4001}).status_code == 422, path
    health = _documented(document, "get", "/health")
    assert rest.get("/health").status_code == 200 and {"200", "503"} <= set(health)
    metrics = _documented(document, "get", "/metrics")
    answer = rest.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert "text/plain" in metrics["200"]["content"]


def test_every_rate_limited_operation_documents_429_with_the_rate_limit_headers(
    document: dict[str, Any],
) -> None:
    """What tests/security/test_tenant_rate_limits.py and the gateway's rate-limit tests see a
    refused call answer: 429 with Retry-After and X-RateLimit-*; health is never limited."""
    headers = {"Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
    for path, item in document["paths"].items():
        for verb, operation in item.items():
            if path.endswith("/health"):
                assert "429" not in operation["responses"]
                continue
            limited = operation["responses"].get("429")
            assert limited is not None, (verb, path)
            assert set(limited["headers"]) == headers, (verb, path)
