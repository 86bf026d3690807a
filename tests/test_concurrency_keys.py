"""Concurrency keys: at most the key's limit of tasks run at once; the rest wait in line."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from taskorch.client import Client, InvalidArgumentError, Task
from tests import databases
from tests.conftest import ServerFactory, WorkerFactory
from tests.servers import ServerProcess


def _keyed(
    client: Client, key: str, limit: int = 0, *, seconds: float = 0.3, **fields: Any
) -> Task:
    """A container task on ``key``, filled with one ``interval`` subtask of ``seconds``
    (remote workers)."""
    import grpc

    from taskorch.v1 import task_service_pb2 as pb
    from taskorch.v1 import task_service_pb2_grpc as pb_grpc

    task = client.create_task(
        task_type="container", concurrency_key=key, concurrency_limit=limit, **fields
    )
    with grpc.insecure_channel(client.target) as channel:
        request = pb.CreateSubtaskRequest(task_id=task.task_id, kind="interval")
        request.input.update({"seconds": seconds})
        pb_grpc.TaskServiceStub(channel).CreateSubtask(request, timeout=10)
    return task


def _most_at_once(results: list[dict[str, Any]]) -> int:
    """The most runs overlapping, from the workers' own start and finish times."""
    edges = sorted(
        [(r["started"], 1) for r in results] + [(r["finished"], -1) for r in results]
    )  # a finish sorts before a start at the same instant
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def _key_counts(server: ServerProcess, key: str) -> tuple[int, int] | None:
    """On PostgreSQL, the (admitted, waiting) counts the key's row keeps, checked against the
    rows of key_admitted and key_waiting (None on SQLite, which counts the rows)."""
    if not server.database_url.startswith("postgresql"):
        return None
    rows = databases.fetch(
        server.database_url,
        "SELECT c.admitted, c.waiting, "
        "(SELECT count(*) FROM key_admitted a WHERE a.tenant_id = c.tenant_id "
        "AND a.key = c.key), (SELECT count(*) FROM key_waiting w "
        "WHERE w.tenant_id = c.tenant_id AND w.key = c.key) "
        f"FROM concurrency_keys c WHERE c.key = '{key}'",
    )
    row = rows[0] if rows else None
    assert row is not None
    assert (row[0], row[1]) == (row[2], row[3]), f"counts {row[:2]} against rows {row[2:]}"
    return row[0], row[1]


def test_a_key_of_two_never_has_three_running_while_free_work_uses_every_slot(
    server_factory: ServerFactory, worker_factory: WorkerFactory
) -> None:
    server = server_factory("--workers", "0")
    worker_factory(server, "--concurrency", "3")
    worker_factory(server, "--concurrency", "3")
    with server.client() as client:
        keyed = [_keyed(client, "customer-7", 2) for _ in range(12)]
        # Long enough to overlap however slowly the six are created one after the other.
        free = [_keyed(client, "", seconds=1.0) for _ in range(6)]
        assert keyed[0].concurrency_key == "customer-7" and free[0].concurrency_key is None
        keyed_done = [client.wait_for_task(t.task_id, timeout=60) for t in keyed]
        free_done = [client.wait_for_task(t.task_id, timeout=60) for t in free]
    assert all(t.status == "COMPLETED" for t in keyed_done + free_done)
    keyed_runs = [t.result for t in keyed_done if t.result]
    assert _most_at_once(keyed_runs) == 2  # the limit, and used
    assert _most_at_once([t.result for t in free_done if t.result]) > 2


def test_waiting_tasks_are_admitted_by_priority_then_age(
    server_factory: ServerFactory, worker_factory: WorkerFactory
) -> None:
    server = server_factory("--workers", "0")
    worker_factory(server, "--concurrency", "4")
    with server.client() as client:
        first = _keyed(client, "model-x", 1)
        low = _keyed(client, "model-x", priority=2)
        older = _keyed(client, "model-x", priority=8)
        newer = _keyed(client, "model-x", priority=8)
        order = [client.wait_for_task(t.task_id, timeout=60) for t in (first, low, older, newer)]
    starts = [t.result["started"] for t in order if t.result]
    assert starts[0] < starts[2] < starts[3] < starts[1], starts


def test_the_last_limit_given_holds_and_a_new_key_defaults_to_one(
    server_factory: ServerFactory, worker_factory: WorkerFactory
) -> None:
    server = server_factory("--workers", "0")
    worker_factory(server, "--concurrency", "6")
    with server.client() as client:
        defaulted = [_keyed(client, "new-key") for _ in range(3)]
        raised = [_keyed(client, "raised", 1) for _ in range(2)]
        raised += [_keyed(client, "raised", 3) for _ in range(4)]
        one = [client.wait_for_task(t.task_id, timeout=60).result for t in defaulted]
        three = [client.wait_for_task(t.task_id, timeout=60).result for t in raised]
    for key in ("new-key", "raised"):
        assert _key_counts(server, key) in (None, (0, 0))
    assert _most_at_once([r for r in one if r]) == 1
    assert _most_at_once([r for r in three if r]) == 3


def test_an_ended_task_admits_the_next_and_a_cancelled_waiter_leaves_the_line(
    server: ServerProcess,
) -> None:
    with server.client() as client:
        holder = client.create_task(
            task_type="echo", input_data={"delay_seconds": 30}, concurrency_key="lock"
        )
        waiter = client.create_task(task_type="echo", concurrency_key="lock")
        after = client.create_task(task_type="echo", concurrency_key="lock")
        deadline = time.monotonic() + 10
        while client.get_task(holder.task_id).status != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # A task without a key, queued behind the waiter: once a free worker has run it, that
        # worker went past the waiter's place in the queue, so a waiter admitted beside the
        # holder would have started by now.
        probe = client.create_task(task_type="echo")
        assert client.wait_for_task(probe.task_id, timeout=30).status == "COMPLETED"
        assert client.get_task(waiter.task_id).status == "PENDING"
        assert _key_counts(server, "lock") in (None, (1, 2))
        assert client.cancel_task(waiter.task_id).status == "CANCELLED"
        assert _key_counts(server, "lock") in (None, (1, 1))
        client.cancel_task(holder.task_id)
        done = client.wait_for_task(after.task_id, timeout=30)
        failing = client.create_task(
            task_type="echo", input_data={"fail_attempts": 9}, max_attempts=1,
            concurrency_key="lock2",
        )  # fmt: skip
        next_one = client.create_task(task_type="echo", concurrency_key="lock2")
        assert client.wait_for_task(failing.task_id, timeout=30).status == "FAILED"
        assert client.wait_for_task(next_one.task_id, timeout=30).status == "COMPLETED"
        for key in ("lock", "lock2"):
            assert _key_counts(server, key) in (None, (0, 0))
    assert done.status == "COMPLETED"


def test_a_keyed_task_also_waits_for_its_dependencies_and_its_time(
    server: ServerProcess,
) -> None:
    with server.client() as client:
        first = client.create_task(task_type="echo", input_data={"delay_seconds": 0.5})
        later = client.create_task(
            task_type="echo", depends_on=[first.task_id], run_after_seconds=1.0,
            concurrency_key="chain",
        )  # fmt: skip
        done = client.wait_for_task(later.task_id, timeout=30)
        before = client.get_task(first.task_id)
    assert done.status == "COMPLETED" and done.started_at and later.run_at
    assert before.completed_at and done.started_at >= max(before.completed_at, later.run_at)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"concurrency_limit": 2}, "concurrency_limit"),
        ({"concurrency_key": "k", "concurrency_limit": 10_001}, "concurrency_limit"),
        ({"concurrency_key": "k", "concurrency_limit": -1}, "concurrency_limit"),
        ({"concurrency_key": "k" * 201}, "concurrency_key"),
    ],
)
def test_bad_keys_and_limits_are_refused_naming_the_field(
    server: ServerProcess, fields: dict[str, Any], field: str
) -> None:
    with server.client() as client, pytest.raises(InvalidArgumentError) as refused:
        client.create_task(task_type="echo", **fields)
    assert [v.field for v in refused.value.field_violations] == [field]


def _one_at_a_time_model(root: Path) -> Path:
    """A models folder with the tiny text generator, configured to decode one sequence at a
    time (max_batch_size 1): its capacity is one request."""
    from tests.inference.tiny_models import build_tiny_models

    source = build_tiny_models().models_dir / "tiny-gpt2"
    target = root / "tiny-gpt2"
    shutil.copytree(source, target)
    config = target / "model.yaml"
    config.write_text(config.read_text().replace("max_batch_size: 8", "max_batch_size: 1"))
    return root


def test_inference_tasks_run_at_most_what_their_model_runs_at_once(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory("--workers", "4", models_dir=_one_at_a_time_model(tmp_path / "m"))
    with server.client() as client:
        tasks = client.create_tasks(
            [
                {
                    "task_type": "text_generation",
                    "model_name": "tiny-gpt2",
                    "input_data": {"inputs": f"prompt {n}"},
                    "parameters": {"max_new_tokens": 16},
                }
                for n in range(6)
            ]
        )
        done = [client.wait_for_task(t.task_id, timeout=60) for t in tasks]
        with pytest.raises(InvalidArgumentError) as refused:
            client.create_task(text="hi", concurrency_key="model:tiny-gpt2")
    assert all(t.status == "COMPLETED" for t in done), [t.error for t in done]
    assert {t.concurrency_key for t in done} == {"model:tiny-gpt2"}
    runs = [{"started": t.started_at, "finished": t.completed_at} for t in done]
    # Four slots, one model that decodes one sequence at a time: one task at a time, the
    # others waiting in the model's line instead of holding slots.
    assert _most_at_once(runs) == 1
    assert [v.field for v in refused.value.field_violations] == ["concurrency_key"]
