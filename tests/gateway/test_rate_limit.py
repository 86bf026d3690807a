"""Rate limits in Envoy (seed 001): per client address, X-RateLimit-* headers, 429 with a JSON
body and Retry-After, RESOURCE_EXHAUSTED for gRPC clients, /health exempt, no fresh bucket for
a forged X-Forwarded-For.

Each test speaks from its own loopback address (127.0.0.N), so each starts with a full bucket.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from taskorch.client import Client, ResourceExhaustedError
from tests.conftest import ServerFactory
from tests.gateway._http import assert_json_error
from tests.servers import ServerProcess, sqlite_url

pytestmark = pytest.mark.xdist_group("gateway_rate_limit")

LIMIT = 5  # per 10 s: one token every 2 s


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("limited")
    server = ServerProcess(
        workdir=workdir,
        database_url=sqlite_url(workdir / "taskorch.db"),
        args=("--rate-limit", f"{LIMIT}/10s"),
        gateway=True,
    )
    server.start()
    yield server
    server.kill()


def _client(server: ServerProcess, address: str) -> httpx.Client:
    """A REST client whose connections come from ``address``."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.http_url, transport=transport, timeout=10)


def _exhaust(rest: httpx.Client, path: str = "/v1/tasks?limit=1") -> httpx.Response:
    """Calls until refused (bounded); returns the refusal."""
    for _ in range(LIMIT * 3):
        response = rest.get(path)
        if response.status_code == 429:
            return response
    raise AssertionError(f"never limited after {LIMIT * 3} calls")


def test_headers_count_down_then_a_json_429_with_retry_after(limited: ServerProcess) -> None:
    with _client(limited, "127.0.0.2") as rest:
        remaining = []
        for _ in range(LIMIT):
            response = rest.get("/v1/tasks", params={"limit": 1})
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == str(LIMIT)
            remaining.append(int(response.headers["x-ratelimit-remaining"]))
            assert int(response.headers["x-ratelimit-reset"]) >= 0
        assert remaining == list(range(LIMIT - 1, -1, -1))
        refused = rest.get("/v1/tasks", params={"limit": 1})
    body = assert_json_error(refused, 429, "RATE_LIMITED")
    assert body["code"] == 429 and "rate limit" in body["message"]
    assert int(refused.headers["retry-after"]) == 2  # 10 s / 5 tokens
    assert refused.headers["x-ratelimit-remaining"] == "0"


@pytest.mark.parametrize(
    ("address", "path"),
    [
        ("127.0.0.3", "/tasks"),
        ("127.0.0.4", "/api/v1/tasks"),
        ("127.0.0.5", "/task"),
    ],
)
def test_each_surface_gets_its_seed_error_body_when_limited(
    limited: ServerProcess, address: str, path: str
) -> None:
    with _client(limited, address) as rest:
        assert_json_error(_exhaust(rest, path), 429, "RATE_LIMITED")


def test_the_bucket_refills_one_token_per_retry_after(limited: ServerProcess) -> None:
    with _client(limited, "127.0.0.6") as rest:
        refused = _exhaust(rest)
        time.sleep(int(refused.headers["retry-after"]) + 0.2)
        assert rest.get("/v1/tasks", params={"limit": 1}).status_code == 200
        assert rest.get("/v1/tasks", params={"limit": 1}).status_code == 429


def test_health_and_metrics_are_never_limited(limited: ServerProcess) -> None:
    with _client(limited, "127.0.0.7") as rest:
        _exhaust(rest)
        for _ in range(LIMIT * 2):
            health = rest.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "healthy"
            assert "x-ratelimit-remaining" not in health.headers
        assert rest.get("/metrics").status_code == 200


def test_a_forged_x_forwarded_for_gets_no_fresh_bucket(limited: ServerProcess) -> None:
    with _client(limited, "127.0.0.8") as rest:
        _exhaust(rest)
        for forged in ("10.9.9.9", "203.0.113.7, 10.0.0.1", "127.0.0.200"):
            response = rest.get("/v1/tasks", headers={"X-Forwarded-For": forged})
            assert response.status_code == 429, forged
    with _client(limited, "127.0.0.9") as other:  # a really different client is not limited
        assert other.get("/v1/tasks").headers["x-ratelimit-remaining"] == str(LIMIT - 1)


def test_grpc_clients_get_resource_exhausted(limited: ServerProcess) -> None:
    # gRPC through the gateway comes from 127.0.0.1, which no other test here uses.
    with Client(limited.http_addr, timeout=10) as client:
        for _ in range(LIMIT):
            client.list_tasks(limit=1)
        with pytest.raises(ResourceExhaustedError):
            client.list_tasks(limit=1)
    with grpc.insecure_channel(limited.http_addr) as channel:
        call = channel.unary_unary("/taskorch.v1.TaskService/ListTasks")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server's own port is not behind the gateway's limit.
    with Client(limited.grpc_addr, timeout=10) as direct:
        direct.list_tasks(limit=1)


def test_the_default_is_seed_001s_burst_of_20(server_factory: ServerFactory) -> None:
    server = server_factory("--rate-limit", "100/60s,20/10s", gateway=True)
    with httpx.Client(base_url=server.http_url, timeout=10) as rest:
        started = time.monotonic()
        calls = 0
        while (response := rest.get("/v1/tasks", params={"limit": 1})).status_code == 200:
            calls += 1
            assert response.headers["x-ratelimit-limit"] == "20"
            assert calls < 40
        refilled = int((time.monotonic() - started) / 0.5)  # one token per 0.5 s
    assert 20 <= calls <= 20 + refilled
    assert_json_error(response, 429, "RATE_LIMITED")


def test_a_refusal_by_the_sustained_limit_names_that_limit(server_factory: ServerFactory) -> None:
    server = server_factory("--rate-limit", "3/60s,10/10s", gateway=True)
    with httpx.Client(base_url=server.http_url, timeout=10) as rest:
        for _ in range(3):
            assert rest.get("/v1/tasks").status_code == 200
        refused = rest.get("/v1/tasks")
    assert_json_error(refused, 429, "RATE_LIMITED")
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["retry-after"] == "20"  # 60 s / 3 tokens


def test_x_ratelimit_reset_is_the_unix_time_the_bucket_is_full_again(
    limited: ServerProcess,
) -> None:
    """Seed 001: "X-RateLimit-Reset: Unix timestamp when limit resets". The bucket refills
    continuously (LIMIT tokens per 10 s) from the first call on, so after ``used`` calls it is
    full again 2 s per token after the first call, however long the calls took (a slow machine
    sees a token come back between them, and the header moves with it)."""
    with _client(limited, "127.0.0.10") as rest:
        rest.get("/health")  # exempt: only opens the connection
        before_first = time.time()
        answers = [rest.get("/v1/tasks", params={"limit": 1})]
        after_first = time.time()
        answers += [rest.get("/v1/tasks", params={"limit": 1}) for _ in range(LIMIT - 1)]
        for used, response in enumerate(answers, start=1):
            assert response.status_code == 200
            reset = int(response.headers["x-ratelimit-reset"])
            # Rounding: whole seconds on the Unix clock (-1), whole tokens remaining (+2).
            assert before_first - 1 <= reset - 2 * used <= after_first + 3, (used, reset)
        refused = _exhaust(rest)
        refused_at = time.time()
    assert abs(int(refused.headers["x-ratelimit-reset"]) - (refused_at + 10)) <= 2
    assert int(refused.headers["retry-after"]) == 2  # the next token, not the full bucket


def test_a_refusal_by_the_minute_bucket_says_when_it_is_full_again(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--rate-limit", "3/60s,10/10s", gateway=True)
    with httpx.Client(base_url=server.http_url, timeout=10) as rest:
        for _ in range(3):
            assert rest.get("/v1/tasks").status_code == 200
        refused = rest.get("/v1/tasks")
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert abs(int(refused.headers["x-ratelimit-reset"]) - (time.time() + 60)) <= 2
    assert refused.headers["retry-after"] == "20"  # one token of the minute bucket
