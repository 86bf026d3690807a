"""Health, metrics and logs as operators use them."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from taskorch.v1 import task_service_pb2 as task_pb
from taskorch.v1 import task_service_pb2_grpc as task_grpc
from taskorch.v1 import worker_service_pb2 as worker_pb
from taskorch.v1 import worker_service_pb2_grpc as worker_grpc
from tests.conftest import ServerFactory
from tests.servers import ServerProcess


def test_health_reports_serving_for_the_server_and_each_service(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "taskorch.v1.TaskService"):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
    names = {s.name for s in answer.list_services_response.service}
    assert {"taskorch.v1.TaskService", "grpc.health.v1.Health"} <= names


def test_metrics_have_the_seed_names(server: ServerProcess) -> None:
    with server.client() as client:
        client.wait_for_task(client.create_task(text="count me").task_id, timeout=30)
    # The counters follow a batch's events right after its watchers and callers have had
    # their turn on the loop (EventHub.publish_all), so a scrape may come a moment early.
    completed = 'task_manager_tasks_total{status="completed"}'
    deadline = time.monotonic() + 5
    while completed not in (body := _metrics(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert completed in body
    assert 'task_manager_tasks_total{status="pending"}' in body
    assert "task_manager_processing_time_seconds_bucket" in body
    assert (
        'taskorch_rpc_duration_seconds_count{code="OK",method="/taskorch.v1.TaskService/CreateTask"}'
        in body
    )


def test_logs_are_json_with_request_ids(server: ServerProcess) -> None:
    with server.client() as client:
        client.create_task(text="log me")
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "taskorch is serving" for line in lines)
    routes = [line["http"] for line in lines if line.get("event") == "route"]
    assert "POST /v1/tasks" in routes and "GET /v1/tasks/{task_id}:watch" in routes


def _metrics(server: ServerProcess) -> str:
    return urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()


def _sample(body: str, name: str) -> float | None:
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def test_queue_depth_and_lease_expiries_are_exported(server_factory: ServerFactory) -> None:
    server = server_factory("--workers", "0")
    kind = "metrics-probe"
    with server.client() as client, grpc.insecure_channel(server.grpc_addr) as channel:
        tasks = task_grpc.TaskServiceStub(channel)
        for _ in range(3):
            task = client.create_task(task_type="container")
            tasks.CreateSubtask(task_pb.CreateSubtaskRequest(task_id=task.task_id, kind=kind))
        depth = f'taskorch_queue_depth{{kind="{kind}"}}'
        deadline = time.monotonic() + 15
        while _sample(_metrics(server), depth) != 3.0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _sample(_metrics(server), depth) == 3.0
        # A lease nobody heartbeats expires and is counted.
        workers = worker_grpc.WorkerServiceStub(channel)
        workers.Take(worker_pb.TakeRequest(worker_id="w", kinds=[kind], lease_seconds=1))
        deadline = time.monotonic() + 15
        while (_sample(_metrics(server), "taskorch_lease_expiries_total") or 0) < 1:
            assert time.monotonic() < deadline, "no lease expiry counted"
            time.sleep(0.5)


def test_every_answer_carries_its_request_id(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = task_grpc.TaskServiceStub(channel)
        _, call = stub.ListTasks.with_call(
            task_pb.ListTasksRequest(limit=1), metadata=(("x-request-id", "probe-123"),)
        )
        assert dict(call.trailing_metadata())["x-request-id"] == "probe-123"
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetTask(task_pb.GetTaskRequest(task_id=str(uuid.uuid4())))
        generated = dict(raised.value.trailing_metadata())["x-request-id"]
        assert generated.startswith("req_")
        status = rpc_status.from_call(raised.value)
        assert status is not None
        info = error_details_pb2.RequestInfo()
        assert any(d.Unpack(info) for d in status.details)
        assert info.request_id == generated


def _reflect(channel: grpc.Channel, service: str, request: object) -> object:
    """One reflection call under ``service`` (v1 or v1alpha: the same messages)."""
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return next(iter(call(iter([request]), timeout=5)))


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_answers_under_v1_and_v1alpha(server: ServerProcess, version: str) -> None:
    """Newer grpcurl and Postman ask grpc.reflection.v1 first."""
    service = f"grpc.reflection.{version}.ServerReflection"
    with grpc.insecure_channel(server.grpc_addr) as channel:
        listed = _reflect(
            channel, service, reflection_pb2.ServerReflectionRequest(list_services="")
        )
        names = {s.name for s in listed.list_services_response.service}  # type: ignore[attr-defined]
        assert {"taskorch.v1.TaskService", "grpc.reflection.v1.ServerReflection"} <= names
        for symbol in ("taskorch.v1.TaskService", service):
            found = _reflect(
                channel,
                service,
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol),
            )
            files = found.file_descriptor_response.file_descriptor_proto  # type: ignore[attr-defined]
            assert files, (symbol, found)
