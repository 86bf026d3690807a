"""What every REST surface shares: JSON error bodies (also for the transcoder's own 400 and 404),
request ids, no gRPC headers on REST answers, refused path overrides, idempotency keys."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.gateway._http import assert_json_error, field_violations, json_once
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("gateway_errors")

PREFIXES = ["/v1/tasks", "/tasks", "/api/v1/tasks", "/task"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/v2/tasks"),
        ("GET", "/tasks/a/b/c"),
        ("GET", "/api/v1/nope"),
        ("PUT", "/v1/tasks"),
        ("PATCH", "/tasks/00000000-0000-4000-8000-000000000000"),
        ("POST", "/health"),
        ("GET", "/taskorch.v1.TaskService/GetTask"),
    ],
)
def test_unknown_paths_and_methods_are_json_404s(
    rest: httpx.Client, method: str, path: str
) -> None:
    body = assert_json_error(rest.request(method, path), 404, "NOT_FOUND")
    assert "Could not resolve" in body["message"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_unknown_query_parameters_are_json_400s(rest: httpx.Client, prefix: str) -> None:
    body = assert_json_error(rest.get(prefix, params={"colour": "red"}), 400, "VALIDATION_ERROR")
    assert "colour" in body["message"]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b'{"text": 5}', b'{"priority": "high"}', b'{"input_data": [1]}'],
)
def test_bodies_the_transcoder_cannot_parse_are_json_400s(
    rest: httpx.Client, prefix: str, raw: bytes
) -> None:
    response = rest.post(prefix, content=raw, headers={"content-type": "application/json"})
    assert_json_error(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("prefix", ["/v1/tasks", "/tasks"])
@pytest.mark.parametrize(
    "huge",
    [
        b'{"text": "' + b"x" * (20 * 1024 * 1024) + b'"}',
        # 3.6 MB of JSON that is a 19 MB message: every number becomes a protobuf Value.
        b'{"task_type": "echo", "input_data": {"n": [' + b"1," * 1_800_000 + b"1]}}",
    ],
    ids=["20MB-string", "numbers"],
)
def test_a_request_too_large_for_the_server_is_a_json_413_not_a_429(
    rest: httpx.Client, prefix: str, huge: bytes
) -> None:
    # The gRPC server refuses messages over 16 MiB with RESOURCE_EXHAUSTED, which the
    # transcoder maps to 429: a client would take it for a rate limit and retry.
    response = rest.post(prefix, content=huge, headers={"content-type": "application/json"})
    body = assert_json_error(response, 413)
    assert "larger than max" in body["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tasks/{id}"),
        ("GET", "/tasks/{id}"),
        ("GET", "/api/v1/tasks/{id}"),
        ("GET", "/task/{id}"),
        ("DELETE", "/v1/tasks/{id}"),
        ("DELETE", "/api/v1/tasks/{id}"),
        ("GET", "/v1/tasks/{id}:watch"),
        ("PATCH", "/api/v1/tasks/{id}/priority?priority=3&"),
    ],
)
def test_a_query_parameter_may_not_override_the_id_in_the_path(
    rest: httpx.Client, method: str, path: str
) -> None:
    victim = rest.post("/v1/tasks", json={"task_type": "echo", "input_data": {"delay_seconds": 5}})
    other = rest.post("/v1/tasks", json={"task_type": "echo"}).json()["task_id"]
    url = path.format(id=other) + ("" if "?" in path else "?") + f"task_id={victim.json()['id']}"
    body = assert_json_error(rest.request(method, url), 400, "VALIDATION_ERROR")
    assert field_violations(body) == ["task_id"]
    assert rest.get(f"/v1/tasks/{victim.json()['id']}").json()["status"] != "CANCELLED"
    rest.delete(f"/v1/tasks/{victim.json()['id']}")


def test_a_body_field_may_not_contradict_the_path(rest: httpx.Client) -> None:
    task_id = rest.post("/v1/tasks", json={"task_type": "echo"}).json()["task_id"]
    response = rest.post(f"/v1/tasks/{task_id}:cancel", json={"task_id": str(uuid.uuid4())})
    body = assert_json_error(response, 400, "VALIDATION_ERROR")
    assert "conflicting" in body["message"]


def test_the_callers_request_id_is_kept_and_reaches_the_server(rest: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    response = rest.get(f"/v1/tasks/{missing}", headers={"X-Request-Id": "order-42.retry-1"})
    body = assert_json_error(response, 404, "TASK_NOT_FOUND")
    assert response.headers["x-request-id"] == "order-42.retry-1" == body["request_id"]
    info = next(d for d in body["details"] if d["@type"].endswith("ErrorInfo"))
    assert info["metadata"]["request_id"] == "order-42.retry-1"
    ok = rest.get("/v1/tasks", params={"limit": 1})
    assert re.match(r"^[0-9a-f-]{36}$", ok.headers["x-request-id"])


@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/tasks/00000000-0000-4000-8000-000000000000"])
def test_rest_answers_carry_no_grpc_headers(rest: httpx.Client, path: str) -> None:
    response = rest.get(path)
    assert not [h for h in response.headers if h.startswith("grpc-")], response.headers


def test_an_idempotency_key_header_returns_the_first_task(rest: httpx.Client) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = rest.post("/v1/tasks", json={"text": "once"}, headers=key).json()
    again = rest.post("/v1/tasks", json={"text": "once"}, headers=key).json()
    assert again["task_id"] == first["task_id"]
    different = rest.post("/v1/tasks", json={"text": "twice"}, headers=key)
    assert different.status_code == 409, different.text


def test_the_gateway_started_within_its_ready_timeout(gateway_server: ServerProcess) -> None:
    # `taskorch serve` announces it serves only once Envoy was seen ready.
    logs = gateway_server.logs()
    assert '"event": "gateway ready"' in logs and '"event": "taskorch is serving"' in logs
    assert "envoy not ready" not in logs


def test_a_wrong_handler_input_is_a_json_400_naming_the_field(rest: httpx.Client) -> None:
    response = rest.post(
        "/v1/tasks", json={"task_type": "echo", "input_data": {"delay_seconds": None}}
    )
    body = assert_json_error(response, 400, "VALIDATION_ERROR")
    assert field_violations(body) == ["input_data.delay_seconds"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/tasks", {"task_type": "v" * 17_000}),
        ("/tasks", {"task_type": "v" * 100_000, "model_name": "m"}),
        ("/api/v1/tasks", {"template": "t" * 100_000}),
        ("/v1/tasks", {"text": "x", "request_id": "r" * 17_000}),
    ],
)
def test_a_long_value_in_a_body_is_a_400_quoting_a_bounded_prefix(
    rest: httpx.Client, path: str, body: dict[str, object]
) -> None:
    response = rest.post(path, json=body)
    assert response.status_code in (400, 404), response.text[:300]
    assert len(response.content) < 4000, len(response.content)
    for value in body.values():
        assert isinstance(value, str)
        assert len(value) < 200 or value[:200] not in response.text


@pytest.mark.parametrize("param", ["status", "sort_by"])
def test_a_long_query_value_is_a_400_quoting_a_bounded_prefix(
    rest: httpx.Client, param: str
) -> None:
    response = rest.get("/v1/tasks", params={param: "s" * 6_000})
    assert_json_error(response, 400, "VALIDATION_ERROR")
    assert len(response.content) < 4000


INTERNALS = ("metadata size", "x-envoy", ":authority", "soft limit", "hard limit", ":path:")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_url_over_16_kib_is_a_400_in_the_surfaces_error_shape(
    rest: httpx.Client, prefix: str
) -> None:
    response = rest.get(f"{prefix}/{'a' * 20_000}")
    body = assert_json_error(response, 400, "VALIDATION_ERROR")
    assert "URL is longer than 16 KiB" in body["message"]
    assert not any(word in response.text for word in INTERNALS), response.text[:500]


@pytest.mark.parametrize("header", ["x-api-key", "authorization", "x-request-id", "x-custom"])
def test_a_header_over_16_kib_is_a_400_naming_it(rest: httpx.Client, header: str) -> None:
    response = rest.get("/v1/tasks", headers={header: "k" * 20_000})
    if header == "x-request-id":  # Envoy echoes the caller's id, whatever the server says
        assert response.status_code == 400
        body = json_once(response.text)
    else:
        body = assert_json_error(response, 400, "VALIDATION_ERROR")
    assert header in body["message"]
    assert not any(word in response.text for word in INTERNALS), response.text[:500]


def test_a_url_and_headers_over_32_kib_are_a_json_431_with_nothing_internal(
    rest: httpx.Client,
) -> None:
    response = rest.get(f"/v1/tasks/{'a' * 40_000}")
    assert response.status_code == 431
    body = json_once(response.text)
    assert body["reason"] == "VALIDATION_ERROR"
    assert "larger than 32 KiB" in body["error"] == body["message"]
    assert not any(word in response.text for word in INTERNALS), response.text[:500]


@pytest.mark.parametrize("prefix", ["", *PREFIXES])
@pytest.mark.parametrize(
    ("method", "suffix", "raw"),
    [("GET", "", None), ("GET", "/a/b/c/d", None), ("POST", "", b"{bad json")],
)
def test_no_error_body_repeats_a_key(
    rest: httpx.Client, prefix: str, method: str, suffix: str, raw: bytes | None
) -> None:
    """Unknown routes (`GET /` among them) and bodies the transcoder cannot parse: each key of
    the surface's error shape once."""
    path = f"{prefix}{suffix}" or "/"
    response = rest.request(
        method, path, content=raw, headers={"content-type": "application/json"} if raw else {}
    )
    if response.status_code < 400:
        return  # a real listing
    json_once(response.text)
    assert_json_error(response, response.status_code)


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/tasks", {"text": "a\u0000b"}, "text"),
        ("POST", "/tasks", {"task_type": "echo", "input_data": {"x": "\u0000"}}, "input_data.x"),
        ("POST", "/api/v1/tasks", {"template": "t", "parameters": {"p": "\u0000"}}, "parameters.p"),
        ("GET", "/v1/tasks?status=a%00b", None, "status"),
        ("POST", "/chat", {"title": "\u0000"}, "title"),
    ],
)
def test_a_nul_character_is_a_400_naming_the_field(
    rest: httpx.Client, method: str, path: str, body: object, field: str
) -> None:
    response = rest.request(method, path, json=body)
    found = assert_json_error(response, 400, "VALIDATION_ERROR")
    assert field_violations(found) == [field]
    assert "NUL" in found["message"]
