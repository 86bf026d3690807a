"""A large add runs as a task: it answers at once with the task, which stores the documents
32 at a time with progress events; a crash mid-add loses nothing acknowledged and the task
resumes without embedding again what it stored; cancelling it keeps what it stored."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskorch.client import Client
from tests.servers import ServerProcess, sqlite_url

from .conftest import EMBEDDER

pytestmark = pytest.mark.xdist_group("retrieval-large")


def _documents(count: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"doc-{i}",
            "text": f"Document {i} is about topic {i % 7}. " * 8,
            "metadata": {"topic": i % 7},
        }
        for i in range(count)
    ]


@pytest.fixture
def server(tmp_path: Path, retrieval_models: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        workdir=tmp_path,
        database_url=sqlite_url(tmp_path / "db.sqlite"),
        models_dir=retrieval_models,
    )
    process.start()
    yield process
    process.kill()


def _wait_progress(client: Client, task_id: str, deadline: float = 120) -> float:
    """Waits until the task has stored some but not all documents; its progress then."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        task = client.get_task(task_id)
        assert task.status in ("PENDING", "RUNNING"), task
        if 0 < task.progress < 100:
            return task.progress
        time.sleep(0.05)
    raise AssertionError("the ingest task made no progress")


def test_a_large_add_runs_as_a_task_with_progress(server: ServerProcess) -> None:
    with server.client() as client:
        client.collections.create("big", EMBEDDER)
        added = client.collections.add("big", _documents(150))
        assert added.task_id and added.chunks == 0
        assert added.document_ids == [f"doc-{i}" for i in range(150)]
        progress = [e.progress for e in client.watch_task(added.task_id) if e.type == "PROGRESS"]
        assert progress == sorted(progress) and len(progress) >= 4 and progress[-1] == 100
        task = client.get_task(added.task_id)
        assert task.status == "COMPLETED" and task.task_type == "collection_ingest"
        assert task.result == {"collection": "big", "documents": 150, "chunks": 150, "skipped": 0}
        assert task.input_data == {"collection": "big", "documents": 150}
        assert client.collections.get("big").document_count == 150
        found = client.collections.search("big", "topic 3", mode="keyword", filter={"topic": 3})
        assert found and all(r.metadata == {"topic": 3} for r in found)


def test_a_crash_mid_add_loses_nothing_and_the_task_resumes(server: ServerProcess) -> None:
    with server.client() as client:
        client.collections.create("crash", EMBEDDER)
        added = client.collections.add("crash", _documents(600))
        _wait_progress(client, added.task_id)
    server.kill()  # SIGKILL: no drain, the lease is left held
    server.start()
    with server.client() as client:
        task = client.wait_for_task(added.task_id, timeout=240)
        assert task.status == "COMPLETED", task
        assert task.result is not None and task.result["documents"] == 600
        # What the first run committed was not embedded again.
        assert task.result["skipped"] > 0
        assert task.result["chunks"] + task.result["skipped"] == 600
        stored = client.collections.get("crash")
        assert stored.document_count == 600 and stored.chunk_count == 600
        last = client.collections.get_document("crash", "doc-599")
        assert last.metadata == {"topic": 599 % 7}


def test_cancelling_a_large_add_keeps_what_it_stored(server: ServerProcess) -> None:
    with server.client() as client:
        client.collections.create("cancel", EMBEDDER)
        added = client.collections.add("cancel", _documents(600))
        _wait_progress(client, added.task_id)
        client.cancel_task(added.task_id)
        task = client.wait_for_task(added.task_id, timeout=60)
        assert task.status == "CANCELLED"
        # Each batch commits whole (a batch being stored when the cancel came may still).
        count = client.collections.get("cancel").document_count
        assert 0 < count < 600 and count % 32 == 0
