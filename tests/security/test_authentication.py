"""Who may call: API keys and OAuth bearer tokens, over gRPC and over REST through Envoy.

Missing or bad credentials are UNAUTHENTICATED (401); a credential whose role may not call a
method is PERMISSION_DENIED (403); health and reflection stay open.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskorch.client import NotFoundError
from taskorch.v1 import model_service_pb2 as model_pb
from taskorch.v1 import model_service_pb2_grpc as model_grpc
from taskorch.v1 import task_service_pb2 as task_pb
from taskorch.v1 import task_service_pb2_grpc as task_grpc
from tests.gateway._http import assert_json_error
from tests.security.conftest import Secured, create_key, taskorch
from tests.servers import free_port, sqlite_url

pytestmark = pytest.mark.xdist_group("secured")

Metadata = tuple[tuple[str, str], ...]


def _key(key: str) -> Metadata:
    return (("x-api-key", key),)


def _bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def _list_tasks(secured: Secured, metadata: Metadata) -> task_pb.ListTasksResponse:
    with secured.channel() as channel:
        stub = task_grpc.TaskServiceStub(channel)
        return stub.ListTasks(task_pb.ListTasksRequest(limit=1), metadata=metadata, timeout=10)


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


# Each refused credential and what the refusal says.
REFUSED: dict[str, tuple[Callable[[Secured], Metadata], str]] = {
    "no credential": (lambda s: (), "Missing credentials"),
    "unknown key": (lambda s: _key("tko_not-a-key-of-this-server"), "Invalid or revoked"),
    "expired token": (lambda s: _bearer(s.issuer.token(lifetime=-120)), "expired"),
    "wrong audience": (lambda s: _bearer(s.issuer.token(audience="another-api")), "audience"),
    "wrong issuer": (lambda s: _bearer(s.issuer.token(issuer="https://evil.test")), "issuer"),
    "wrongly signed": (lambda s: _bearer(s.issuer.token(forged=True)), "Signature"),
    "unknown signing key": (lambda s: _bearer(s.issuer.token(kid="nope")), "kid"),
    "not yet valid": (lambda s: _bearer(s.issuer.token(not_before=time.time() + 600)), "nbf"),
    "no tenant claim": (lambda s: _bearer(s.issuer.token(tenant=None)), "tenant"),
    "not a bearer": (lambda s: (("authorization", "Basic dXNlcjpwYXNz"),), "Bearer"),
    "garbage token": (lambda s: _bearer("not.a.jwt"), "Invalid bearer token"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_credentials_are_unauthenticated_over_grpc(secured: Secured, case: str) -> None:
    metadata, says = REFUSED[case]
    code, details = _code(lambda: _list_tasks(secured, metadata(secured)))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert says in details


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_credentials_are_401_over_rest(secured: Secured, case: str) -> None:
    metadata, _ = REFUSED[case]
    headers = dict(metadata(secured))
    for path in ("/v1/tasks", "/api/v1/tasks", "/tasks"):
        response = httpx.get(secured.server.http_url + path, headers=headers, timeout=10)
        assert_json_error(response, 401, "UNAUTHENTICATED")


def test_valid_keys_and_tokens_are_accepted(secured: Secured) -> None:
    for metadata in (
        _key(secured.acme),
        _bearer(secured.issuer.token()),
        _bearer(secured.issuer.token(algorithm="ES256")),
    ):
        _list_tasks(secured, metadata)
    for headers in (
        {"X-API-Key": secured.acme},
        {"Authorization": "Bearer " + secured.issuer.token()},
    ):
        response = httpx.get(secured.server.http_url + "/api/v1/tasks", headers=headers)
        assert response.status_code == 200, response.text


def test_a_token_acts_in_the_tenant_of_its_claim(secured: Secured) -> None:
    with secured.server.client(bearer_token=secured.issuer.token("initech")) as initech:
        task = initech.create_task(text="from a token")
    with (
        secured.server.client(api_key=secured.acme) as acme,
        pytest.raises(NotFoundError, match="TASK_NOT_FOUND"),
    ):
        acme.get_task(task.task_id)
    with secured.server.client(bearer_token=secured.issuer.token("initech")) as again:
        assert again.get_task(task.task_id).task_id == task.task_id


def test_a_worker_credential_may_only_do_worker_calls(secured: Secured) -> None:
    metadata = _key(secured.acme_worker)
    code, details = _code(lambda: _list_tasks(secured, metadata))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "ListTasks" in details
    with secured.channel() as channel:
        models = model_grpc.ModelServiceStub(channel).ListModels(
            model_pb.ListModelsRequest(), metadata=metadata, timeout=10
        )
    assert models.models
    token = secured.issuer.token(scope="taskorch:worker")
    code, _ = _code(lambda: _list_tasks(secured, _bearer(token)))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    response = httpx.post(
        secured.server.http_url + "/v1/tasks",
        json={"text": "workers do not submit"},
        headers={"X-API-Key": secured.acme_worker},
    )
    assert_json_error(response, 403, "PERMISSION_DENIED")


def test_health_and_reflection_stay_open(secured: Secured) -> None:
    with secured.channel() as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    health = httpx.get(secured.server.http_url + "/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    assert httpx.get(secured.server.http_url + "/openapi.json").status_code == 200


def test_a_revoked_key_is_refused_within_seconds(secured: Secured) -> None:
    key = create_key(secured.database_url, "acme")
    _list_tasks(secured, _key(key))
    taskorch("keys", "revoke", key, "--database-url", secured.database_url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _list_tasks(secured, _key(key))
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            break
        time.sleep(0.2)
    else:
        pytest.fail("the revoked key was still accepted after 10 s")
    response = httpx.get(secured.server.http_url + "/v1/tasks", headers={"X-API-Key": key})
    assert_json_error(response, 401, "UNAUTHENTICATED")


def test_keys_cli_shows_a_key_once_and_revokes_by_id(secured: Secured) -> None:
    url = secured.database_url
    created = taskorch(
        "keys", "create", "--tenant", "umbrella", "--name", "ci", "--database-url", url
    )
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("tko_") and len(key) > 40
    assert created.stdout.strip() == key  # stdout is the key alone; the rest went to stderr
    listed = taskorch("keys", "list", "--tenant", "umbrella", "--json", "--database-url", url)
    assert key not in listed.stdout
    assert '"tenant_id": "umbrella"' in listed.stdout and '"name": "ci"' in listed.stdout
    key_id = created.stderr.split("created key ")[1].split()[0]
    taskorch("keys", "revoke", key_id, "--database-url", url)
    again = taskorch("keys", "revoke", key_id, "--database-url", url, check=False)
    assert again.returncode == 2 and "no active key" in again.stderr
    bad_role = taskorch(
        "keys", "create", "--tenant", "x", "--role", "root", "--database-url", url, check=False
    )
    assert bad_role.returncode == 2 and "role must be one of" in bad_role.stderr


def test_a_public_address_without_credentials_is_refused(tmp_path: Path) -> None:
    database = sqlite_url(tmp_path / "open.db")
    done = taskorch(
        "serve",
        "--auth",
        "none",
        "--grpc-addr",
        f"0.0.0.0:{free_port()}",
        "--no-gateway",
        "--metrics-addr",
        f"127.0.0.1:{free_port()}",
        "--database-url",
        database,
        check=False,
    )
    assert done.returncode == 1
    assert "refusing to serve 0.0.0.0" in done.stderr
    assert "--insecure" in done.stderr and "taskorch keys create" in done.stderr


def test_issuer_settings_must_come_together() -> None:
    done = taskorch("serve", "--auth", "oauth", "--oauth-jwks", "/nonexistent.json", check=False)
    assert done.returncode == 2
    assert "--oauth-issuer" in done.stderr


def test_the_cli_sends_a_key_or_a_token(secured: Secured) -> None:
    server = ("--server", secured.server.grpc_addr)
    refused = taskorch("task", "list", *server, check=False)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    with_key = taskorch("task", "list", "--json", *server, "--api-key", secured.acme)
    assert with_key.returncode == 0
    token = secured.issuer.token("acme")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskorch",
            "task",
            "submit",
            "--text",
            "by token",
            "--no-watch",
            *server,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TASKORCH_TOKEN": token},
    )
    assert "task " in done.stdout, done.stderr
