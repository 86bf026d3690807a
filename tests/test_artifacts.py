"""Task artifacts: binary results stored beside their task, listed by name in the result, served
raw with their content type over gRPC, REST (Envoy), the SDK and the CLI; deleted with the task.

A remote worker process (tests/workers/handlers.py ``artifacts``) returns them as a media
handler does, so the bytes cross a real gRPC stream, the store and Envoy.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from taskorch.client import Client, InvalidArgumentError, NotFoundError, Task
from tests import databases
from tests.servers import ServerProcess, WorkerProcess

pytestmark = pytest.mark.xdist_group("artifacts")

WAV = b"RIFF" + bytes(range(256)) * 40 + b"\x00\xff" * 7  # arbitrary bytes, every value
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str]]:
    """A server with Envoy and one remote worker running the test handlers."""
    workdir = tmp_path_factory.mktemp("artifacts")
    url = databases.new_database(workdir)
    server = ServerProcess(workdir=workdir, database_url=url, gateway=True)
    server.start()
    worker = WorkerProcess(
        server=server.grpc_addr,
        log_path=workdir / "worker.log",
        args=("--handlers", "tests.workers.handlers:registry"),
    )
    worker.start()
    worker.wait_connected()
    yield server, url
    worker.kill()
    server.stop()
    databases.discard(url)


def _entry(name: str, content_type: str, data: bytes) -> dict[str, str]:
    return {
        "name": name,
        "content_type": content_type,
        "data_base64": base64.b64encode(data).decode(),
    }


def _run(server: ServerProcess, artifacts: list[dict[str, str]], note: str = "") -> Task:
    """A task whose one subtask (run by the remote worker) returns ``artifacts``."""
    from taskorch.v1 import task_service_pb2 as pb
    from taskorch.v1 import task_service_pb2_grpc as pb_grpc

    with server.client() as client:
        task = client.create_task(task_type="container")
        with grpc.insecure_channel(server.grpc_addr) as channel:
            request = pb.CreateSubtaskRequest(task_id=task.task_id, kind="artifacts")
            request.input.update({"artifacts": artifacts, "note": note})
            pb_grpc.TaskServiceStub(channel).CreateSubtask(request, timeout=10)
        return client.wait_for_task(task.task_id, timeout=60)


def test_artifacts_are_listed_by_name_and_served_byte_identical_everywhere(
    stack: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    server, _ = stack
    done = _run(server, [_entry("speech.wav", "audio/wav", WAV), _entry("a.png", "image/png", PNG)])
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    assert done.result["artifacts"] == [
        {"name": "speech.wav", "content_type": "audio/wav", "size": len(WAV)},
        {"name": "a.png", "content_type": "image/png", "size": len(PNG)},
    ]
    # REST through Envoy: raw bytes with the artifact's content type.
    with httpx.Client(base_url=server.http_url, timeout=15) as rest:
        for name, content_type, data in (
            ("speech.wav", "audio/wav", WAV),
            ("a.png", "image/png", PNG),
        ):
            response = rest.get(f"/v1/tasks/{done.task_id}/artifacts/{name}")
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == content_type
            assert response.content == data
        body = rest.get(f"/v1/tasks/{done.task_id}").json()
        assert body["result"]["artifacts"][0]["size"] == len(WAV)
    # The SDK, sync and async.
    with server.client() as client:
        got = client.get_task_artifact(done.task_id, "speech.wav")
        assert (got.name, got.content_type, got.data) == ("speech.wav", "audio/wav", WAV)

    async def fetch() -> bytes:
        async with server.async_client() as client:
            return (await client.get_task_artifact(done.task_id, "a.png")).data

    assert asyncio.run(fetch()) == PNG
    # The CLI.
    out = tmp_path / "speech.wav"
    env = {**os.environ, "TASKORCH_SERVER": server.grpc_addr}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskorch",
            "task",
            "artifact",
            done.task_id,
            "speech.wav",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == WAV
    assert f"wrote {len(WAV)} bytes (audio/wav)" in run.stdout


def test_no_list_get_or_watch_response_carries_the_bytes(stack: tuple[ServerProcess, str]) -> None:
    server, _ = stack
    big = os.urandom(300_000)
    done = _run(server, [_entry("big.bin", "application/octet-stream", big)], note="big")
    encoded = base64.b64encode(big).decode()[:64]
    with server.client() as client:
        listed = [t for t in client.list_tasks(task_type="container", limit=100).tasks]
        assert any(t.task_id == done.task_id for t in listed)
        for task in [*listed, client.get_task(done.task_id)]:
            assert encoded not in repr(task.result)
        events = list(client.watch_task(done.task_id))
    assert events and all(encoded not in repr(e) for e in events)
    with httpx.Client(base_url=server.http_url, timeout=15) as rest:
        page = rest.get("/v1/tasks", params={"task_type": "container", "limit": 100})
        assert page.status_code == 200 and encoded not in page.text
        assert len(page.content) < len(big)


def test_unknown_artifact_or_task_answers_404_naming_it(stack: tuple[ServerProcess, str]) -> None:
    server, _ = stack
    done = _run(server, [_entry("one.wav", "audio/wav", WAV)])
    with server.client() as client, pytest.raises(NotFoundError) as caught:
        client.get_task_artifact(done.task_id, "two.wav")
    assert caught.value.reason == "ARTIFACT_NOT_FOUND" and "two.wav" in caught.value.message
    with server.client() as client:
        for name in ("one.wav\n", "x" * 10_000, "../one.wav", ""):
            with pytest.raises(NotFoundError) as caught:
                client.get_task_artifact(done.task_id, name)
            assert caught.value.reason == "ARTIFACT_NOT_FOUND", name
            assert len(caught.value.message) < 400
        with pytest.raises(InvalidArgumentError) as refused:  # as every string field
            client.get_task_artifact(done.task_id, "a\x00b")
        assert refused.value.field_violations[0].field == "name"
    with httpx.Client(base_url=server.http_url, timeout=15) as rest:
        missing = rest.get(f"/v1/tasks/{done.task_id}/artifacts/two.wav")
        assert missing.status_code == 404
        assert "ARTIFACT_NOT_FOUND" in missing.text
        unknown = rest.get("/v1/tasks/00000000-0000-4000-8000-000000000000/artifacts/one.wav")
        assert unknown.status_code == 404 and "TASK_NOT_FOUND" in unknown.text


def test_a_malformed_artifact_fails_the_task_naming_the_field(
    stack: tuple[ServerProcess, str],
) -> None:
    server, _ = stack
    bad: list[dict[str, Any]] = [
        {"name": "../etc/passwd", "content_type": "a/b", "data_base64": "AA=="}
    ]
    done = _run(server, bad)
    assert done.status == "FAILED"
    assert "result.artifacts[0].name" in (done.error or "")
    done = _run(server, [{"name": "x.bin", "content_type": "a/b", "data_base64": "not base64!"}])
    assert done.status == "FAILED" and "result.artifacts[0].data_base64" in (done.error or "")


def _sql(url: str, sql: str) -> list[tuple[object, ...]]:
    """Runs ``sql`` on the server's database directly (SQLite with foreign keys enforced, as
    the server's own connections are)."""
    if not url.startswith("sqlite"):
        return databases.fetch(url, sql)
    with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        return [tuple(row) for row in conn.execute(sql)]


def test_artifacts_are_deleted_with_their_task(stack: tuple[ServerProcess, str]) -> None:
    server, url = stack
    done = _run(server, [_entry("gone.wav", "audio/wav", WAV)])
    count = f"SELECT count(*) FROM task_artifacts WHERE task_id = '{done.task_id}'"
    assert _sql(url, count) == [(1,)]
    _sql(url, f"DELETE FROM tasks WHERE task_id = '{done.task_id}'")
    assert _sql(url, count) == [(0,)]
    with server.client() as client, pytest.raises(NotFoundError):
        client.get_task_artifact(done.task_id, "gone.wav")


def test_the_sdk_reaches_the_same_bytes_as_rest_for_another_client(
    stack: tuple[ServerProcess, str],
) -> None:
    server, _ = stack
    done = _run(server, [_entry("x.png", "image/png", PNG)])
    with Client(server.grpc_addr) as client:
        assert client.get_task_artifact(done.task_id, "x.png").data == PNG
