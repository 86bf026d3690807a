"""depends_on: a DAG across tasks — order, results handed on, failure propagation."""

from __future__ import annotations

import pytest

from taskorch.client import InvalidArgumentError
from tests.conftest import ServerFactory, WorkerFactory
from tests.servers import ServerProcess


def test_a_dependent_runs_only_after_its_dependencies_completed(server: ServerProcess) -> None:
    with server.client() as client:
        first = client.create_task(task_type="echo", input_data={"delay_seconds": 1.0})
        second = client.create_task(task_type="echo", input_data={"delay_seconds": 0.5})
        joined = client.create_task(text="after both", depends_on=[first.task_id, second.task_id])
        assert joined.depends_on == (first.task_id, second.task_id)
        # Once one dependency has completed, the dependent still waits for the other (read
        # first: were it RUNNING, the other would have had to complete before this read).
        client.wait_for_task(second.task_id, timeout=30)
        waiting = client.get_task(joined.task_id)
        other = client.get_task(first.task_id)
        assert waiting.status == "PENDING" or other.status == "COMPLETED", waiting
        done = client.wait_for_task(joined.task_id, timeout=30)
        a = client.get_task(first.task_id)
        b = client.get_task(second.task_id)
    assert done.status == "COMPLETED"
    assert done.started_at is not None and a.completed_at is not None and b.completed_at is not None
    assert done.started_at >= max(a.completed_at, b.completed_at)


def test_a_dependency_that_already_completed_does_not_block(server: ServerProcess) -> None:
    with server.client() as client:
        first = client.wait_for_task(client.create_task(text="done").task_id, timeout=30)
        after = client.create_task(text="then", depends_on=[first.task_id])
        assert client.wait_for_task(after.task_id, timeout=30).status == "COMPLETED"


def test_failure_propagates_to_every_dependent(server: ServerProcess) -> None:
    with server.client() as client:
        root = client.create_task(
            task_type="echo", input_data={"delay_seconds": 0.5, "fail_attempts": 9}, max_attempts=1
        )
        child = client.create_task(text="child", depends_on=[root.task_id])
        grandchild = client.create_task(text="grandchild", depends_on=[child.task_id])
        client.wait_for_task(root.task_id, timeout=30)
        child_done = client.wait_for_task(child.task_id, timeout=30)
        grandchild_done = client.wait_for_task(grandchild.task_id, timeout=30)
    assert child_done.status == "FAILED"
    assert child_done.error_code == "DEPENDENCY_FAILED"
    assert root.task_id in child_done.error and "FAILED" in child_done.error
    assert grandchild_done.status == "FAILED" and child.task_id in grandchild_done.error
    assert child_done.started_at is None  # it never ran


def test_cancelling_a_dependency_fails_its_dependents(server: ServerProcess) -> None:
    with server.client() as client:
        root = client.create_task(task_type="echo", input_data={"delay_seconds": 30})
        child = client.create_task(text="child", depends_on=[root.task_id])
        client.cancel_task(root.task_id)
        done = client.wait_for_task(child.task_id, timeout=30)
    assert done.status == "FAILED" and "CANCELLED" in done.error


def test_unknown_or_dead_dependencies_are_refused_at_create(server: ServerProcess) -> None:
    with server.client() as client:
        with pytest.raises(InvalidArgumentError) as unknown:
            client.create_task(text="x", depends_on=["3f0b8f8e-8a7b-4c1e-9a5e-0d7f2b6c1a11"])
        assert unknown.value.field_violations[0].field == "depends_on"
        dead = client.create_task(task_type="echo", input_data={"delay_seconds": 30})
        client.cancel_task(dead.task_id)
        with pytest.raises(InvalidArgumentError) as refused:
            client.create_task(text="x", depends_on=[dead.task_id])
    assert "could never run" in refused.value.message


def test_dependents_read_their_dependencies_results(
    server_factory: ServerFactory, worker_factory: WorkerFactory
) -> None:
    server = server_factory()
    worker_factory(server)
    with server.client() as client:
        first = client.create_task(text="alpha beta beta")
        task = client.create_task(task_type="container", depends_on=[first.task_id])
        import grpc

        from taskorch.v1 import task_service_pb2 as pb
        from taskorch.v1 import task_service_pb2_grpc as pb_grpc

        with grpc.insecure_channel(server.grpc_addr) as channel:
            pb_grpc.TaskServiceStub(channel).CreateSubtask(
                pb.CreateSubtaskRequest(task_id=task.task_id, kind="dependencies"), timeout=10
            )
        done = client.wait_for_task(task.task_id, timeout=30)
    assert done.result is not None
    seen = done.result["seen"][first.task_id]
    assert seen["top_words"][0] == "beta"
