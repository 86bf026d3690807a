"""Native gRPC on the gateway's port (Envoy passes it through): the SDK, a server stream, error
details, grpc.health.v1 and reflection all work as they do on the server's own port."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from taskorch.client import Client, ConflictError, InvalidArgumentError, NotFoundError
from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("gateway_grpc")


@pytest.fixture(scope="module")
def client(gateway_server: ServerProcess) -> Iterator[Client]:
    with Client(gateway_server.http_addr, timeout=15) as sdk:
        yield sdk


def test_sdk_calls_through_the_gateway_port(client: Client, gateway_server: ServerProcess) -> None:
    task = client.create_task(text="through envoy", priority=7)
    done = client.wait_for_task(task.task_id, timeout=30)
    assert done.status == "COMPLETED" and done.result is not None
    assert done.result["word_count"] == 2
    assert client.get_task(task.task_id).priority == 7
    page = client.list_tasks(status="completed", limit=5)
    assert task.task_id in {t.task_id for t in page.tasks}
    # The same task is visible over REST and on the server's own port.
    with Client(gateway_server.grpc_addr) as direct:
        assert direct.get_task(task.task_id).status == "COMPLETED"


def test_a_server_stream_through_the_gateway(client: Client) -> None:
    task = client.create_task(
        task_type="echo", input_data={"delay_seconds": 1.0, "progress_steps": 4}
    )
    events = list(client.watch_task(task.task_id))
    assert events[0].type == "SNAPSHOT"
    assert [e.progress for e in events if e.type == "PROGRESS"] == [25, 50, 75, 100]
    assert events[-1].status == "COMPLETED" and events[-1].is_terminal


def test_errors_keep_their_code_reason_and_details(
    client: Client, gateway_server: ServerProcess
) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(NotFoundError) as not_found:
        client.get_task(missing)
    assert not_found.value.reason == "TASK_NOT_FOUND" and not_found.value.request_id
    with pytest.raises(InvalidArgumentError) as invalid:
        client.create_task(text="x" * 4001)
    assert invalid.value.reason == "TEXT_TOO_LONG"
    assert [v.field for v in invalid.value.field_violations] == ["text"]
    # The raw status: google.rpc.Status in grpc-status-details-bin survived the proxy.
    with grpc.insecure_channel(gateway_server.http_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateTask(pb.CreateTaskRequest(task_type="nope"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details)
    assert info.reason == "UNSUPPORTED_TASK_TYPE"


def test_cancelling_a_completed_task_is_a_conflict(client: Client) -> None:
    task = client.create_task(text="finish first")
    client.wait_for_task(task.task_id, timeout=30)
    with pytest.raises(ConflictError) as caught:
        client.cancel_task(task.task_id)
    assert caught.value.reason == "TASK_NOT_CANCELLABLE"


def test_health_check_and_reflection_through_the_gateway(gateway_server: ServerProcess) -> None:
    with grpc.insecure_channel(gateway_server.http_addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "taskorch.v1.TaskService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=5)))
    names = {s.name for s in answer.list_services_response.service}
    assert {"taskorch.v1.TaskService", "taskorch.v1.SystemService"} <= names


def test_grpc_answers_keep_their_trailers(gateway_server: ServerProcess) -> None:
    # The header_mutation that strips grpc-* from REST answers is off for gRPC, and the
    # request id Envoy gave the call comes back in the trailers.
    with grpc.insecure_channel(gateway_server.http_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        _, call = stub.ListTasks.with_call(pb.ListTasksRequest(limit=1), timeout=5)
    assert call.code() == grpc.StatusCode.OK
    assert re.match(r"^[0-9a-f-]{36}$", dict(call.trailing_metadata() or ())["x-request-id"])
