"""Several replicas on one PostgreSQL database: events, work and stop notices cross between
them (LISTEN/NOTIFY), and the loss of a replica or a worker loses no task."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests import databases
from tests.conftest import ServerFactory, WorkerFactory

pytestmark = pytest.mark.xdist_group("postgres-replicas")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url = databases.create_postgres_database()
    yield url
    databases.discard(url)


def test_a_watcher_on_one_replica_sees_live_what_a_worker_reports_through_another(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    runner = server_factory("--workers", "2", database_url=postgres_url)
    watcher = server_factory("--workers", "0", database_url=postgres_url)
    with runner.client() as submit, watcher.client() as watch:
        task = submit.create_task(
            task_type="echo", input_data={"delay_seconds": 2.0, "progress_steps": 8}
        )
        delays = []
        for event in watch.watch_task(task.task_id, after_sequence=task.sequence):
            assert event.created_at is not None
            delays.append((datetime.now(UTC) - event.created_at).total_seconds())
    assert len(delays) >= 8
    # Pushed by NOTIFY, not found by the few-second re-read of the store.
    assert sorted(delays)[len(delays) // 2] < 0.5, delays


def test_idle_workers_on_another_replica_are_woken_at_once(
    server_factory: ServerFactory, worker_factory: WorkerFactory, postgres_url: str
) -> None:
    front = server_factory("--workers", "0", database_url=postgres_url)
    back = server_factory("--workers", "0", database_url=postgres_url)
    worker_factory(back)  # its Listen stream is on the other replica
    with front.client() as client:
        # Once it has run a first task, the worker is idle, waiting on its stream.
        assert client.wait_for_task(client.create_task(task_type="echo").task_id, timeout=30)
        latencies = []
        for _ in range(5):
            task = client.create_task(task_type="echo")
            done = client.wait_for_task(task.task_id, timeout=30)
            assert done.started_at is not None and done.created_at is not None
            latencies.append((done.started_at - done.created_at).total_seconds())
    assert max(latencies) < 1.0, latencies  # woken by NOTIFY, not by the 5 s ping


def test_a_cancel_on_one_replica_stops_a_worker_streaming_from_another(
    server_factory: ServerFactory, worker_factory: WorkerFactory, postgres_url: str, tmp_path
) -> None:
    front = server_factory("--workers", "0", database_url=postgres_url)
    back = server_factory("--workers", "0", database_url=postgres_url)
    worker_factory(back, "--lease-seconds", "60")  # heartbeats every 20 s: too slow to matter
    marker = tmp_path / "stopped"
    with front.client() as client:
        task = client.create_task(task_type="container")
        import grpc

        from taskorch.v1 import task_service_pb2 as pb
        from taskorch.v1 import task_service_pb2_grpc as pb_grpc

        with grpc.insecure_channel(front.grpc_addr) as channel:
            request = pb.CreateSubtaskRequest(task_id=task.task_id, kind="slow")
            request.input.update({"seconds": 60, "marker": str(marker)})
            pb_grpc.TaskServiceStub(channel).CreateSubtask(request, timeout=10)
        deadline = time.monotonic() + 20
        while client.get_task(task.task_id).status != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.05)
        cancelled = time.time()
        client.cancel_task(task.task_id)
        while not marker.exists() and time.monotonic() < deadline + 10:
            time.sleep(0.05)
    assert marker.exists()
    assert float(marker.read_text()) - cancelled < 2.0


def test_losing_a_replica_and_a_worker_loses_no_task(
    server_factory: ServerFactory, worker_factory: WorkerFactory, postgres_url: str
) -> None:
    first = server_factory("--workers", "2", "--lease-seconds", "3", database_url=postgres_url)
    second = server_factory("--workers", "2", "--lease-seconds", "3", database_url=postgres_url)
    doomed_worker = worker_factory(first, "--lease-seconds", "3")
    worker_factory(second, "--lease-seconds", "3")
    with first.client() as a, second.client() as b:
        ids = []
        for n in range(40):
            client = a if n % 2 else b
            task = client.create_task(task_type="echo", input_data={"delay_seconds": 0.5, "n": n})
            ids.append(task.task_id)
        deadline = time.monotonic() + 30
        while b.list_tasks(status="RUNNING", limit=1).total < 2:  # work is in flight
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.kill()  # a replica, with its in-process workers, mid-flight
        doomed_worker.kill()  # and a remote worker
        done = [b.wait_for_task(task_id, timeout=120) for task_id in ids]
    assert all(t.status == "COMPLETED" for t in done), [t.status for t in done]
    assert all(t.result is not None and t.result["echo"]["n"] == n for n, t in enumerate(done))


def test_delayed_tasks_on_two_replicas_are_promoted_and_run_once(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    """Both replicas' timers and rescues race to promote the same delayed tasks; each
    task starts once, after its time."""
    one = server_factory("--workers", "3", database_url=postgres_url)
    two = server_factory("--workers", "3", database_url=postgres_url)
    at = datetime.now(UTC) + timedelta(seconds=1.5)
    with one.client() as a, two.client() as b:
        tasks = [
            (a if n % 2 else b).create_task(task_type="echo", input_data={"n": n}, run_at=at)
            for n in range(60)
        ]
        done = [a.wait_for_task(t.task_id, timeout=60) for t in tasks]
        history = [[e.message for e in b.watch_task(t.task_id, after_sequence=1)] for t in tasks]
    assert all(t.status == "COMPLETED" and t.attempt == 1 for t in done)
    assert all(t.started_at is not None and t.started_at >= at for t in done)
    assert all(h.count("its run_at time came; queued") == 1 for h in history), history[0]


def test_a_key_of_two_never_has_three_running_across_two_replicas(
    server_factory: ServerFactory, worker_factory: WorkerFactory, postgres_url: str
) -> None:
    """Keyed work submitted through both replicas, run by workers of both: the key's limit
    holds across them (checked from the workers' own start and finish times)."""
    from tests.test_concurrency_keys import _keyed, _most_at_once

    one = server_factory("--workers", "0", database_url=postgres_url)
    two = server_factory("--workers", "0", database_url=postgres_url)
    worker_factory(one, "--concurrency", "3")
    worker_factory(two, "--concurrency", "3")
    with one.client() as a, two.client() as b:
        keyed = [_keyed(a if n % 2 else b, "customer-7", 2) for n in range(12)]
        done = [
            (a if n % 2 else b).wait_for_task(t.task_id, timeout=60) for n, t in enumerate(keyed)
        ]
    assert all(t.status == "COMPLETED" for t in done), [t.error for t in done]
    runs = [t.result for t in done if t.result]
    assert len(runs) == 12
    assert _most_at_once(runs) == 2  # the limit, and used
