"""Authentication is the server's explicit mode (``serve --auth``), never a consequence of how
many API keys exist: revoking the last key leaves a ``keys`` server refusing every call, and
creating the first key leaves a ``none`` server as it was. Runs on both backends (the keys
live in the server's database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from taskorch.client import UnauthenticatedError
from taskorch.v1 import chat_service_pb2 as chat_pb
from taskorch.v1 import chat_service_pb2_grpc as chat_grpc
from taskorch.v1 import model_service_pb2 as model_pb
from taskorch.v1 import model_service_pb2_grpc as model_grpc
from taskorch.v1 import system_service_pb2 as system_pb
from taskorch.v1 import system_service_pb2_grpc as system_grpc
from taskorch.v1 import task_service_pb2 as task_pb
from taskorch.v1 import task_service_pb2_grpc as task_grpc
from taskorch.v1 import template_service_pb2 as template_pb
from taskorch.v1 import template_service_pb2_grpc as template_grpc
from tests import databases
from tests.gateway._http import assert_json_error
from tests.security.conftest import create_key, taskorch
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("auth-mode")

# Longer than the server caches a key's lookup (core.auth.CACHE_SECONDS), so a change of
# the keys has had every chance to show.
SETTLE_SECONDS = 4.0
# /metrics is seed 001's path: it covers every tenant, so it is refused like the rest.
REST_PATHS = ("/v1/tasks", "/tasks", "/api/v1/tasks", "/v1/chat/sessions", "/v1/models", "/metrics")


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    url = databases.new_database(tmp_path)
    yield tmp_path, url
    databases.discard(url)


def _server(workdir: tuple[Path, str], **kwargs: object) -> ServerProcess:
    path, url = workdir
    return ServerProcess(workdir=path, database_url=url, args=("--workers", "0"), **kwargs)  # type: ignore[arg-type]


def _refusals_without_credentials(server: ServerProcess) -> dict[str, grpc.StatusCode]:
    """The code each service answers a call that carries no credentials."""
    calls = {
        "ListTasks": lambda ch: task_grpc.TaskServiceStub(ch).ListTasks(
            task_pb.ListTasksRequest(limit=1), timeout=10
        ),
        "CreateTask": lambda ch: task_grpc.TaskServiceStub(ch).CreateTask(
            task_pb.CreateTaskRequest(text="let me in"), timeout=10
        ),
        "ListSessions": lambda ch: chat_grpc.ChatServiceStub(ch).ListSessions(
            chat_pb.ListSessionsRequest(), timeout=10
        ),
        "ListModels": lambda ch: model_grpc.ModelServiceStub(ch).ListModels(
            model_pb.ListModelsRequest(), timeout=10
        ),
        "ListTemplates": lambda ch: template_grpc.TemplateServiceStub(ch).ListTemplates(
            template_pb.ListTemplatesRequest(), timeout=10
        ),
        "GetMetrics": lambda ch: system_grpc.SystemServiceStub(ch).GetMetrics(
            system_pb.GetMetricsRequest(), timeout=10
        ),
    }
    codes: dict[str, grpc.StatusCode] = {}
    with grpc.insecure_channel(server.grpc_addr) as channel:
        for name, call in calls.items():
            try:
                call(channel)
                codes[name] = grpc.StatusCode.OK
            except grpc.RpcError as error:
                codes[name] = error.code()
    return codes


def _assert_everything_but_health_and_reflection_refused(server: ServerProcess) -> None:
    codes = _refusals_without_credentials(server)
    assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes
    for path in REST_PATHS:
        assert_json_error(httpx.get(server.http_url + path, timeout=10), 401, "UNAUTHENTICATED")
    with grpc.insecure_channel(server.grpc_addr) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        services = {s.name for s in next(reflection).list_services_response.service}
        assert "taskorch.v1.TaskService" in services
    assert httpx.get(server.http_url + "/health", timeout=10).status_code == 200


def test_revoking_the_last_key_refuses_everyone_instead_of_reopening(
    workdir: tuple[Path, str],
) -> None:
    url = workdir[1]
    key = create_key(url, "acme")
    # The environment twin of --auth, as a deployment would set it.
    server = _server(workdir, gateway=True, auth=None, env={"TASKORCH_AUTH": "keys"}).start()
    try:
        with server.client(api_key=key) as client:
            task = client.create_task(text="made with the only key")
        taskorch("keys", "revoke", key, "--database-url", url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with server.client(api_key=key) as client:
                    client.get_task(task.task_id)
            except UnauthenticatedError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the revoked key was still accepted after 10 s")
        # No key is left: the server keeps refusing (it used to answer everyone here).
        settle = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < settle:
            _assert_everything_but_health_and_reflection_refused(server)
            time.sleep(0.5)
    finally:
        server.stop()


def test_a_server_started_without_auth_requires_keys_even_for_metrics(
    workdir: tuple[Path, str],
) -> None:
    server = _server(workdir, gateway=True, auth=None).start()
    try:
        _assert_everything_but_health_and_reflection_refused(server)
        with server.client() as client, pytest.raises(UnauthenticatedError) as refused:
            client.list_tasks(limit=1)
        says = refused.value.message
        assert "x-api-key" in says and "taskorch keys create" in says, says
        startup = [json.loads(line) for line in server.logs().splitlines() if line[:1] == "{"]
        assert any("no active API key" in entry["event"] for entry in startup), server.logs()
        # The first key lets its holder in, and only its holder.
        key = create_key(workdir[1], "acme")
        with server.client(api_key=key) as client:
            assert client.create_task(text="now with a key").task_id
        assert set(_refusals_without_credentials(server).values()) == {
            grpc.StatusCode.UNAUTHENTICATED
        }
        # Metrics sum every tenant's tasks: a user key may not read them, an admin key may.
        refused = httpx.get(server.http_url + "/metrics", headers={"X-API-Key": key}, timeout=10)
        assert_json_error(refused, 403, "PERMISSION_DENIED")
        admin = create_key(workdir[1], "ops", "admin")
        metrics = httpx.get(server.http_url + "/metrics", headers={"X-API-Key": admin}, timeout=10)
        assert metrics.status_code == 200, metrics.text
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "# TYPE task_manager_tasks_total counter" in metrics.text
        assert "# TYPE taskorch_tasks gauge" in metrics.text
        # Scrapers read the metrics port, which never goes through Envoy (keep it private).
        with urllib.request.urlopen(server.metrics_url, timeout=10) as scraped:
            assert "# TYPE taskorch_tasks gauge" in scraped.read().decode()
    finally:
        server.stop()


def test_creating_the_first_key_does_not_switch_authentication_on(
    workdir: tuple[Path, str],
) -> None:
    server = _server(workdir, auth=None, env={"TASKORCH_AUTH": "none"}).start()
    try:
        with server.client() as client:
            task = client.create_task(text="made before any key existed")
        create_key(workdir[1], "acme")
        settle = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < settle:
            # Still open, and the earlier task of the default tenant still reachable.
            with server.client() as client:
                assert client.get_task(task.task_id).task_id == task.task_id
                assert client.list_tasks(limit=5).total >= 1
            time.sleep(0.5)
        assert set(_refusals_without_credentials(server).values()) == {grpc.StatusCode.OK}
        startup = server.logs()
        assert "NO AUTHENTICATION (--auth none)" in startup
    finally:
        server.stop()


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskorch", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "300", **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (("--auth", "sometimes"), None, "is not none, keys, oauth or keys,oauth"),
        ((), {"TASKORCH_AUTH": "none,keys"}, "is not none, keys, oauth or keys,oauth"),
        (("--auth", "oauth"), None, "--auth oauth needs --oauth-jwks"),
        (
            ("--oauth-jwks", "jwks.json", "--oauth-issuer", "i", "--oauth-audience", "a"),
            None,
            "--auth does not accept them",
        ),
    ],
)
def test_an_unclear_auth_mode_is_a_usage_error(
    args: tuple[str, ...], env: dict[str, str] | None, says: str
) -> None:
    done = _serve(*args, env=env)
    assert done.returncode == 2, done.stderr
    assert "--auth" in done.stderr and says in done.stderr, done.stderr
