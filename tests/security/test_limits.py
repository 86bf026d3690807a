"""Limits: per-tenant quotas on unfinished tasks, oversized and deeply nested requests. Each
refusal is a clear error and the server stays healthy."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from taskorch.client import ResourceExhaustedError
from taskorch.v1 import task_service_pb2 as task_pb
from taskorch.v1 import task_service_pb2_grpc as task_grpc
from tests import databases
from tests.gateway._http import assert_json_error
from tests.security.conftest import Secured, create_key
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("secured")

QUOTA = 3


@pytest.fixture(scope="module")
def quota_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str, str]]:
    """A server allowing QUOTA unfinished tasks per tenant, with keys of two tenants."""
    workdir = tmp_path_factory.mktemp("quota")
    url = databases.new_database(workdir)
    first, second = create_key(url, "small"), create_key(url, "other")
    process = ServerProcess(
        workdir=workdir,
        database_url=url,
        gateway=True,
        auth="keys",
        args=("--workers", "0", "--max-active-tasks", str(QUOTA)),
    )
    process.start()
    yield process, first, second
    process.stop()
    databases.discard(url)


def test_a_tenant_over_its_quota_is_refused_with_a_retry_hint(
    quota_server: tuple[ServerProcess, str, str],
) -> None:
    server, small, other = quota_server
    with server.client(api_key=small) as client:
        tasks = [client.create_task(task_type="echo", request_id=f"r{i}") for i in range(QUOTA)]
        with pytest.raises(ResourceExhaustedError) as refused:
            client.create_task(task_type="echo")
        assert refused.value.reason == "QUOTA_EXCEEDED"
        assert refused.value.retry_after == 5
        assert f"{QUOTA} unfinished tasks" in refused.value.message
        # Over REST: 429 with Retry-After, on every surface.
        for path, body in (("/v1/tasks", {"task_type": "echo"}), ("/tasks", {"text": "x"})):
            response = httpx.post(server.http_url + path, json=body, headers={"X-API-Key": small})
            assert_json_error(response, 429, "QUOTA_EXCEEDED")
            assert response.headers["retry-after"] == "5"
        # Another tenant is not affected.
        with server.client(api_key=other) as second:
            second.create_task(task_type="echo")
        # A retry of a request already accepted is not a new task: answered, not refused.
        assert client.create_task(task_type="echo", request_id="r0").task_id == tasks[0].task_id
        # Once a task finishes there is room again.
        client.cancel_task(tasks[0].task_id)
        client.create_task(task_type="echo")
        with pytest.raises(ResourceExhaustedError):
            client.create_task(task_type="echo")


def test_a_batch_that_would_pass_the_quota_is_refused_whole(
    quota_server: tuple[ServerProcess, str, str],
) -> None:
    server, _, other = quota_server
    with server.client(api_key=other) as client:
        room = QUOTA - client.list_tasks(status="pending").total
        with pytest.raises(ResourceExhaustedError) as refused:
            client.create_tasks([{"task_type": "echo"}] * (room + 1))
        assert refused.value.reason == "QUOTA_EXCEEDED" and refused.value.retry_after == 5
        assert client.list_tasks(status="pending").total == QUOTA - room  # none was stored
        assert len(client.create_tasks([{"task_type": "echo"}] * room)) == room


def test_the_quota_refusal_carries_retry_info_for_grpc_clients(
    quota_server: tuple[ServerProcess, str, str],
) -> None:
    server, small, _ = quota_server
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = task_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            for _ in range(QUOTA + 1):
                stub.CreateTask(
                    task_pb.CreateTaskRequest(task_type="echo"),
                    metadata=(("x-api-key", small),),
                    timeout=10,
                )
    error = raised.value
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(error)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status.details)
    assert retry.retry_delay.seconds == 5
    assert dict(error.trailing_metadata())["retry-after"] == "5"


def test_a_message_over_the_size_limit_is_refused_and_the_server_lives_on(
    secured: Secured,
) -> None:
    with secured.channel() as channel:
        stub = task_grpc.TaskServiceStub(channel)
        huge = task_pb.CreateTaskRequest(task_type="echo")
        huge.input_data.update({"blob": "x" * (17 * 1024 * 1024)})
        with pytest.raises(grpc.RpcError) as raised:
            stub.CreateTask(huge, metadata=(("x-api-key", secured.acme),), timeout=30)
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in (raised.value.details() or "")
        small = stub.CreateTask(
            task_pb.CreateTaskRequest(task_type="echo"),
            metadata=(("x-api-key", secured.acme),),
            timeout=10,
        )
        assert small.task_id


@pytest.mark.parametrize("depth", [40, 5000])
def test_deeply_nested_json_is_a_400_over_rest(secured: Secured, depth: int) -> None:
    body = '{"task_type": "echo", "input_data": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    response = httpx.post(
        secured.server.http_url + "/v1/tasks",
        content=body,
        headers={"X-API-Key": secured.acme, "Content-Type": "application/json"},
        timeout=30,
    )
    assert_json_error(response, 400)
    text = json.dumps(response.json())
    assert "input_data" in text or "nest" in text.lower() or "depth" in text.lower(), text
    assert httpx.get(secured.server.http_url + "/health").json()["status"] == "healthy"


def test_text_over_4000_characters_names_the_field_over_rest(secured: Secured) -> None:
    response = httpx.post(
        secured.server.http_url + "/api/v1/tasks",
        json={"text": "x" * 4001},
        headers={"X-API-Key": secured.acme},
    )
    body = assert_json_error(response, 422)  # seeds: "validation error"
    assert "text" in body["detail"]
