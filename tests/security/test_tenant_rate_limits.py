"""Request rate limits per tenant (issue 23): a tenant over its rate gets 429 (REST, with
Retry-After and seed 001's X-RateLimit-*) or RESOURCE_EXHAUSTED (gRPC) while another tenant is
served; it is served again after the time it was told; limits set with ``taskorch keys limit``
reach running servers (every replica) within the cache time; bad values are refused by name."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from taskorch.client import ResourceExhaustedError
from taskorch.core.rate_limits import CACHE_SECONDS
from taskorch.v1 import task_service_pb2 as task_pb
from taskorch.v1 import task_service_pb2_grpc as task_grpc
from tests import databases
from tests.conftest import ServerFactory
from tests.gateway._http import assert_json_error
from tests.security.conftest import create_key, taskorch
from tests.servers import ServerProcess, sqlite_url

pytestmark = pytest.mark.xdist_group("tenant_rate_limits")


def set_limit(database_url: str, tenant: str, *args: str) -> None:
    taskorch("keys", "limit", "--tenant", tenant, *args, "--database-url", database_url)


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A server (with Envoy) where tenants ``a`` and ``g`` may make 1 request/s with a burst
    of 3 and 2, and ``b`` has no limit."""
    workdir = tmp_path_factory.mktemp("tenant_rates")
    url = databases.new_database(workdir)
    keys = {tenant: create_key(url, tenant) for tenant in ("a", "b", "g")}
    set_limit(url, "a", "--rate", "1", "--burst", "3")
    set_limit(url, "g", "--rate", "1", "--burst", "2")
    server = ServerProcess(
        workdir=workdir, database_url=url, gateway=True, auth="keys", args=("--workers", "0")
    )
    server.start()
    yield server, keys
    server.stop()
    databases.discard(url)


def test_a_tenant_over_its_rate_gets_429_while_another_is_served(
    limited: tuple[ServerProcess, dict[str, str]],
) -> None:
    server, keys = limited
    with httpx.Client(base_url=server.http_url, timeout=10) as rest:
        a, b = {"X-API-Key": keys["a"]}, {"X-API-Key": keys["b"]}
        started = time.monotonic()
        answers_a, answers_b = [], []
        for _ in range(8):  # the two tenants' calls interleaved
            answers_a.append(rest.get("/v1/tasks", params={"limit": 1}, headers=a))
            answers_b.append(rest.get("/v1/tasks", params={"limit": 1}, headers=b))
        elapsed = time.monotonic() - started
        refused_on_seed_001 = rest.get("/tasks", headers=a)
    assert [r.status_code for r in answers_b] == [200] * 8
    codes = [r.status_code for r in answers_a]
    served = codes.count(200)
    assert codes[:3] == [200] * 3 and 3 <= served <= 3 + elapsed + 1, (codes, elapsed)
    refused = answers_a[codes.index(429)]
    body = assert_json_error(refused, 429, "RATE_LIMITED")
    assert "'a'" in body["message"] and "1 requests/s (burst 3)" in body["message"]
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    # Seed 001: the Unix time the limit resets (the bucket of 3 is full again within 3 s).
    assert time.time() - 1 <= int(refused.headers["x-ratelimit-reset"]) <= time.time() + 4
    # Every surface gets its seed's error body: seed 001's names the code.
    seed_001 = assert_json_error(refused_on_seed_001, 429, "RATE_LIMITED")
    assert seed_001["error"]["code"] == "RATE_LIMITED"
    assert refused_on_seed_001.headers["x-ratelimit-remaining"] == "0"


def _list(channel: grpc.Channel, key: str) -> grpc.Call:
    stub = task_grpc.TaskServiceStub(channel)
    _, call = stub.ListTasks.with_call(
        task_pb.ListTasksRequest(limit=1), metadata=(("x-api-key", key),), timeout=10
    )
    return call


def test_grpc_callers_get_resource_exhausted_then_are_served_after_retry_after(
    limited: tuple[ServerProcess, dict[str, str]],
) -> None:
    server, keys = limited
    with grpc.insecure_channel(server.grpc_addr) as channel:
        refused: grpc.RpcError | None = None
        for _ in range(6):
            try:
                _list(channel, keys["g"])
            except grpc.RpcError as exc:
                refused = exc
                break
            _list(channel, keys["b"])  # the other tenant is served meanwhile
        assert isinstance(refused, grpc.Call)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "'g'" in refused.details() and "burst 2" in refused.details()
        trailers = dict(refused.trailing_metadata() or ())
        assert trailers["x-ratelimit-limit"] == "2"
        assert trailers["x-ratelimit-remaining"] == "0"
        assert int(trailers["x-ratelimit-reset"]) >= int(time.time())
        status = rpc_status.from_call(refused)
        assert status is not None
        infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
        info = error_details_pb2.ErrorInfo()
        infos[0].Unpack(info)
        assert info.reason == "RATE_LIMITED" and info.metadata["tenant"] == "g"
        # Health is never limited, whoever asks.
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), metadata=(("x-api-key", keys["g"]),), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # Waiting the time it was told is enough.
        time.sleep(int(trailers["retry-after"]))
        _list(channel, keys["g"])
    with server.client(api_key=keys["g"]) as client, pytest.raises(ResourceExhaustedError) as sdk:
        for _ in range(4):
            client.list_tasks(limit=1)
    assert sdk.value.reason == "RATE_LIMITED" and sdk.value.retry_after is not None


def _until(check: Callable[[], bool], seconds: float) -> float:
    """Calls ``check`` until it holds (bounded); returns how long that took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - started


def _refused(server: ServerProcess, key: str) -> bool:
    with server.client(api_key=key, timeout=10) as client:
        try:
            client.list_tasks(limit=1)
        except ResourceExhaustedError as exc:
            assert exc.reason == "RATE_LIMITED"
            return True
    return False


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_limit_set_with_keys_limit_reaches_every_replica_within_the_cache_time(
    server_factory: ServerFactory, replicas: int
) -> None:
    if replicas > 1 and databases.backend() != "postgresql":
        pytest.skip("replicas share a PostgreSQL database (one server per SQLite file)")
    servers = [server_factory("--workers", "0", auth="keys") for _ in range(replicas)]
    url = servers[0].database_url
    key = create_key(url, "c")
    for server in servers:
        for _ in range(5):
            assert not _refused(server, key)  # no limit of its own, none by default
    set_limit(url, "c", "--rate", "0.2", "--burst", "1")
    for server in servers:
        took = _until(lambda s=server: _refused(s, key), CACHE_SECONDS + 3)
        assert took <= CACHE_SECONDS + 1.5
    set_limit(url, "c", "--default")  # the server's default: no limit
    for server in servers:
        _until(lambda s=server: not _refused(s, key), CACHE_SECONDS + 3)
        for _ in range(5):
            assert not _refused(server, key)


def test_the_server_default_limits_tenants_without_their_own(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--workers", "0", "--tenant-rate-limit", "0.2:2", auth="keys")
    plain, free = create_key(server.database_url, "d"), create_key(server.database_url, "e")
    # Explicitly unlimited; read by the server's first limited call, which comes after.
    set_limit(server.database_url, "e", "--rate", "0")
    assert [_refused(server, plain) for _ in range(3)] == [False, False, True]
    assert not any(_refused(server, free) for _ in range(10))
    metrics = httpx.get(server.metrics_url, timeout=10).text
    assert 'taskorch_rate_limited_requests_total{tenant="d"} 1.0' in metrics
    assert 'tenant="e"' not in metrics


def test_envoys_per_address_headers_give_way_to_the_tenants_on_its_refusal(
    server_factory: ServerFactory,
) -> None:
    """With the gateway's own limiter on, a tenant's 429 carries the tenant's X-RateLimit-*
    once (not the per-address bucket's too), its reset a Unix time."""
    server = server_factory(
        "--workers", "0", "--rate-limit", "1000/60s,500/10s", gateway=True, auth="keys"
    )
    key = create_key(server.database_url, "f")
    set_limit(server.database_url, "f", "--rate", "0.5", "--burst", "2")
    with httpx.Client(base_url=server.http_url, timeout=10) as rest:
        answers: list[httpx.Response] = []

        def refused() -> bool:
            answers.append(rest.get("/v1/tasks", headers={"X-API-Key": key}))
            return answers[-1].status_code == 429

        _until(refused, CACHE_SECONDS + 6)
    # gRPC through the gateway (no Lua there): the tenant's values come first in the
    # trailers, the address bucket's after them; ErrorInfo says whose limit it is.
    with grpc.insecure_channel(server.http_addr) as channel, pytest.raises(grpc.RpcError) as rpc:
        _list(channel, key)
    assert rpc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = list(rpc.value.trailing_metadata() or ())
    assert [v for k, v in trailers if k == "x-ratelimit-limit"][:1] == ["2"]
    assert ("x-ratelimit-scope", "tenant") in trailers
    last = answers[-1]
    assert_json_error(last, 429, "RATE_LIMITED")
    assert last.headers.get_list("x-ratelimit-limit") == ["2"]
    assert last.headers.get_list("x-ratelimit-remaining") == ["0"]
    assert last.headers["retry-after"] == "2"
    assert time.time() - 1 <= int(last.headers["x-ratelimit-reset"]) <= time.time() + 5
    assert answers[0].headers["x-ratelimit-limit"] == "500"  # served: the address's bucket


def test_bad_limits_are_refused_naming_the_flag(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "keys.db")
    for args, named in (
        (("--rate", "-1"), "--rate"),
        (("--rate", "inf"), "--rate"),
        (("--rate", "1", "--burst", "0"), "--burst"),
        (("--rate", "0", "--burst", "5"), "--burst"),
        (("--rate", "1", "--default"), "--default"),
    ):
        done = taskorch("keys", "limit", "--tenant", "x", *args, "--database-url", url, check=False)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert named in done.stderr, (args, done.stderr)
    for value in ("fast", "5:0", "-2", "1:x"):
        done = taskorch("serve", "--tenant-rate-limit", value, "--no-gateway", check=False)
        assert done.returncode == 2, (value, done.stderr)
        assert "--tenant-rate-limit" in done.stderr and value in done.stderr, done.stderr
    assert taskorch("keys", "limits", "--database-url", url).stdout == ""
