"""Crashes, restarts, drains, races and load: nothing acknowledged is lost or stuck."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from taskorch.client import Client, ConflictError
from tests.conftest import ServerFactory


def _wait_running(client: Client, task_id: str) -> None:
    for event in client.watch_task(task_id):
        if event.status == "RUNNING":
            return
    raise AssertionError(f"task {task_id} ended without running")


def test_work_running_when_the_server_is_killed_runs_again_after_restart(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--workers", "1")
    with server.client() as client:
        task = client.create_task(
            task_type="echo", input_data={"delay_seconds": 6, "progress_steps": 6}
        )
        _wait_running(client, task.task_id)
    server.kill()
    server.start()
    with server.client() as client:
        done = client.wait_for_task(task.task_id, timeout=120)
        assert done.status == "COMPLETED"
        assert done.attempt == 2  # the killed attempt counts
        messages = [e.message for e in client.watch_task(task.task_id, after_sequence=1)]
    assert any("lease expired" in m for m in messages)


def test_sigterm_lets_running_work_finish_before_exiting(server_factory: ServerFactory) -> None:
    server = server_factory("--workers", "1", "--drain-seconds", "30")
    with server.client() as client:
        task = client.create_task(task_type="echo", input_data={"delay_seconds": 2})
        _wait_running(client, task.task_id)
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started >= 1.0  # it waited for the work
    server.start()
    with server.client() as client:
        done = client.get_task(task.task_id)
    assert done.status == "COMPLETED" and done.attempt == 1


def test_sigterm_requeues_work_that_outlasts_the_drain(server_factory: ServerFactory) -> None:
    server = server_factory("--workers", "1", "--drain-seconds", "0.5")
    with server.client() as client:
        task = client.create_task(task_type="echo", input_data={"delay_seconds": 3})
        _wait_running(client, task.task_id)
    assert server.stop() == 0
    server.start()
    with server.client() as client:
        done = client.wait_for_task(task.task_id, timeout=60)
        messages = [e.message for e in client.watch_task(task.task_id, after_sequence=1)]
    assert done.status == "COMPLETED"
    assert done.attempt == 1  # handed back, so the interrupted attempt did not count
    assert any("re-queued: worker shutting down" in m for m in messages)


def test_acknowledged_tasks_survive_a_kill_and_complete(server_factory: ServerFactory) -> None:
    server = server_factory("--workers", "0")
    with server.client() as client:
        ids = [client.create_task(text=f"durable {i}").task_id for i in range(50)]
    server.kill()
    server.args = ("--workers", "4")
    server.start()
    with server.client() as client:
        for task_id in ids:
            assert client.wait_for_task(task_id, timeout=60).status == "COMPLETED"


def test_tasks_finished_one_at_a_time_on_an_idle_server_survive_a_kill(
    server_factory: ServerFactory,
) -> None:
    """On an idle server each task is created, run by an in-process worker and completed in
    one transaction, which SQLite then commits on the event loop: what it answered survives
    a SIGKILL right after, and a task seen completed is not run again."""
    server = server_factory("--workers", "2")
    with server.client() as client:
        ids = []
        for n in range(30):
            ids.append(client.create_task(task_type="echo", input_data={"n": n}).task_id)
            time.sleep(0.01)  # the server idles between tasks, as at a low rate
        seen = {task_id: client.get_task(task_id) for task_id in ids}
    server.kill()
    server.start()
    with server.client() as client:
        for n, task_id in enumerate(ids):
            final = client.wait_for_task(task_id, timeout=60)
            assert final.status == "COMPLETED" and final.result is not None
            assert final.result["echo"] == {"n": n}
            if seen[task_id].status == "COMPLETED":
                assert final.attempt == 1 and final.result == seen[task_id].result


async def test_200_concurrent_submissions_all_complete(server_factory: ServerFactory) -> None:
    server = server_factory("--workers", "4")
    async with server.async_client() as client:
        created = await asyncio.gather(
            *(client.create_task(text=f"concurrent submission {i}") for i in range(200))
        )
        assert len({t.task_id for t in created}) == 200
        done = await asyncio.gather(
            *(client.wait_for_task(t.task_id, timeout=120) for t in created)
        )
    assert all(t.status == "COMPLETED" for t in done)
    assert all(t.result is not None and t.result["word_count"] == 3 for t in done)


async def test_cancel_racing_completion_has_exactly_one_winner(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--workers", "4")
    async with server.async_client() as client:
        tasks = await asyncio.gather(
            *(client.create_task(task_type="echo", input_data={"n": i}) for i in range(60))
        )

        async def cancel(task_id: str) -> str:
            try:
                return (await client.cancel_task(task_id)).status
            except ConflictError as exc:
                assert exc.reason == "TASK_NOT_CANCELLABLE"
                return "CONFLICT"

        outcomes = await asyncio.gather(*(cancel(t.task_id) for t in tasks))
        finals = await asyncio.gather(*(client.wait_for_task(t.task_id, timeout=60) for t in tasks))
    for outcome, final in zip(outcomes, finals, strict=True):
        if outcome == "CANCELLED":
            assert final.status == "CANCELLED" and final.result is None
        else:
            assert final.status == "COMPLETED" and final.result is not None
    assert {"CANCELLED", "CONFLICT"} >= set(outcomes)


def test_concurrent_cancels_of_one_task_agree(server_factory: ServerFactory) -> None:
    server = server_factory("--workers", "0")
    with server.client() as client:
        task = client.create_task(text="cancel me twice")

    async def both() -> list[str]:
        async with server.async_client() as api:
            results = await asyncio.gather(*(api.cancel_task(task.task_id) for _ in range(10)))
        return [r.status for r in results]

    assert asyncio.run(both()) == ["CANCELLED"] * 10


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_server_exits_cleanly_on_signals(server_factory: ServerFactory, sig: int) -> None:
    server = server_factory()
    server.signal(sig)
    assert server.proc is not None
    assert server.proc.wait(30) == 0
    assert "stopped" in server.logs()


def test_a_task_completed_after_a_failed_attempt_carries_no_error(
    server_factory: ServerFactory,
) -> None:
    """Issue 22 item 13: the error of an earlier attempt is not the completed task's error."""
    server = server_factory("--workers", "1")
    with server.client() as client:
        task = client.create_task(task_type="echo", input_data={"fail_attempts": 1}, max_attempts=3)
        done = client.wait_for_task(task.task_id, timeout=60)
        again = client.get_task(task.task_id)
    for seen in (done, again):
        assert seen.status == "COMPLETED" and seen.attempt == 2, seen
        assert (seen.error, seen.error_code) == ("", ""), seen


def test_a_task_completed_after_an_expired_lease_carries_no_error(
    server_factory: ServerFactory,
) -> None:
    import grpc

    from taskorch.v1 import task_service_pb2 as task_pb
    from taskorch.v1 import task_service_pb2_grpc as task_grpc
    from taskorch.v1 import worker_service_pb2 as pb
    from taskorch.v1 import worker_service_pb2_grpc as pb_grpc

    server = server_factory("--workers", "0")
    with server.client() as client, grpc.insecure_channel(server.grpc_addr) as channel:
        task = client.create_task(task_type="container")
        tasks = task_grpc.TaskServiceStub(channel)
        tasks.CreateSubtask(
            task_pb.CreateSubtaskRequest(task_id=task.task_id, kind="manual"), timeout=10
        )
        workers = pb_grpc.WorkerServiceStub(channel)
        workers.Take(pb.TakeRequest(worker_id="gone", kinds=["manual"], lease_seconds=1))
        # Never heartbeated: the lease expires and the work comes back (attempt 2).
        fresh = workers.Take(
            pb.TakeRequest(worker_id="next", kinds=["manual"], lease_seconds=30, wait_seconds=20),
            timeout=30,
        )
        assert fresh.attempt == 2
        assert client.get_task(task.task_id).error_code == "LEASE_EXPIRED"
        workers.Complete(
            pb.CompleteRequest(subtask_id=fresh.subtask_id, lease_id=fresh.lease_id), timeout=10
        )
        done = client.wait_for_task(task.task_id, timeout=30)
        listed = [t for t in client.list_tasks(limit=100).tasks if t.task_id == task.task_id]
    for seen in (done, *listed):
        assert seen.status == "COMPLETED", seen
        assert (seen.error, seen.error_code) == ("", ""), seen


def test_a_task_completed_after_its_server_was_killed_carries_no_error(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--workers", "1")
    with server.client() as client:
        task = client.create_task(task_type="echo", input_data={"delay_seconds": 2})
        _wait_running(client, task.task_id)
    server.kill()
    server.start()  # its leases expire at start: attempt 2 runs
    with server.client() as client:
        done = client.wait_for_task(task.task_id, timeout=120)
        listed = [t for t in client.list_tasks(limit=100).tasks if t.task_id == task.task_id]
    for seen in (done, *listed):
        assert seen.status == "COMPLETED" and seen.attempt == 2, seen
        assert (seen.error, seen.error_code) == ("", ""), seen
