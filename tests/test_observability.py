"""Health, metrics and logs as operators use them."""

from __future__ import annotations

import json
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

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
    body = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    assert 'task_manager_tasks_total{status="completed"}' in body
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
