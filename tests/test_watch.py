"""WatchTask: snapshot first, every change in order, resume after a sequence, many watchers."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from taskorch.client import TaskEvent
from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc
from tests.servers import ServerProcess

SLOW_ECHO = {"delay_seconds": 1.0, "progress_steps": 10}


def _sequences(events: list[TaskEvent]) -> list[int]:
    return [e.sequence for e in events]


def test_watch_sends_snapshot_then_every_change_in_order(server: ServerProcess) -> None:
    with server.client() as client:
        task = client.create_task(task_type="echo", input_data=SLOW_ECHO)
        events = list(client.watch_task(task.task_id))
    assert events[0].type == "SNAPSHOT"
    assert events[0].task is not None and events[0].task.task_id == task.task_id
    sequences = _sequences(events)
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    statuses = [e.status for e in events if e.type == "STATUS_CHANGED"]
    assert statuses[-1] == "COMPLETED"
    assert "RUNNING" in statuses or events[0].status == "RUNNING"
    progress = [e.progress for e in events if e.type == "PROGRESS"]
    assert progress == sorted(progress) and len(progress) >= 5
    last = events[-1]
    assert last.is_terminal and last.task is not None
    assert last.task.result is not None and last.task.result["echo"] == SLOW_ECHO


def test_watch_of_a_finished_task_sends_only_its_final_state(server: ServerProcess) -> None:
    with server.client() as client:
        task = client.create_task(text="already done")
        done = client.wait_for_task(task.task_id, timeout=30)
        events = list(client.watch_task(task.task_id))
    assert len(events) == 1
    assert events[0].type == "SNAPSHOT" and events[0].status == "COMPLETED"
    assert events[0].sequence == done.sequence


def test_resume_after_a_sequence_replays_exactly_the_missed_events(server: ServerProcess) -> None:
    with server.client() as client:
        task = client.create_task(task_type="echo", input_data=SLOW_ECHO)
        full = list(client.watch_task(task.task_id, after_sequence=0))
        replayed = list(client.watch_task(task.task_id, after_sequence=1))
        tail = list(client.watch_task(task.task_id, after_sequence=4))
    # The full history is 1..N; a resume from k gives k+1..N with the final task attached.
    n = full[-1].sequence
    assert _sequences(replayed) == list(range(2, n + 1))
    assert _sequences(tail) == list(range(5, n + 1))
    assert replayed[-1].task is not None and replayed[-1].task.status == "COMPLETED"
    assert all(e.type != "SNAPSHOT" for e in replayed)


def test_resume_mid_flight_continues_live(server: ServerProcess) -> None:
    with server.client() as client:
        task = client.create_task(
            task_type="echo", input_data={"delay_seconds": 2, "progress_steps": 10}
        )
        first_part = []
        for event in client.watch_task(task.task_id):
            first_part.append(event)
            if event.type == "PROGRESS" and event.progress >= 30:
                break
        resumed = list(client.watch_task(task.task_id, after_sequence=first_part[-1].sequence))
    assert resumed[0].sequence == first_part[-1].sequence + 1
    assert resumed[-1].status == "COMPLETED"
    assert _sequences(resumed) == list(range(resumed[0].sequence, resumed[-1].sequence + 1))


async def test_many_watchers_all_see_the_same_events(server: ServerProcess) -> None:
    async with server.async_client() as client:
        task = await client.create_task(task_type="echo", input_data=SLOW_ECHO)

        async def watch() -> list[int]:
            return [e.sequence async for e in client.watch_task(task.task_id, after_sequence=1)]

        results = await asyncio.gather(*(watch() for _ in range(50)))
    assert all(r == results[0] for r in results)
    assert results[0][-1] >= 12


async def test_thousands_of_watchers_opened_at_once_are_all_served(server: ServerProcess) -> None:
    """A burst of streams beyond gRPC's default 1000 calls waiting to be picked up (past
    which it cancels them): every one gets its task's final state."""
    async with server.async_client(timeout=120) as client:
        created = []
        for _ in range(3):
            created += await client.create_tasks([{"task_type": "echo"}] * 1000)
        ids = [t.task_id for t in created]
        await asyncio.gather(*(client.wait_for_task(i, timeout=120) for i in ids[-50:]))

        async def final(task_id: str) -> str:
            events = [e async for e in client.watch_task(task_id)]
            return events[-1].status

        statuses = await asyncio.gather(*(final(i) for i in ids), return_exceptions=True)
    errors = [s for s in statuses if isinstance(s, BaseException)]
    assert not errors, f"{len(errors)} of {len(ids)} watches failed: {errors[0]!r}"
    assert set(statuses) == {"COMPLETED"}


async def test_a_slow_watcher_does_not_hold_up_others_or_the_worker(
    server: ServerProcess,
) -> None:
    """A watcher that reads nothing for seconds: the task and other watchers go on."""
    channel = grpc.aio.insecure_channel(server.grpc_addr)
    stub = pb_grpc.TaskServiceStub(channel)
    async with server.async_client() as client:
        task = await client.create_task(
            task_type="echo", input_data={"delay_seconds": 1.5, "progress_steps": 300}
        )
        stalled = stub.WatchTask(pb.WatchTaskRequest(task_id=task.task_id, after_sequence=1))
        first = await stalled.read()  # then stop reading for a while
        assert first.sequence == 2
        # Stalled for the whole run: the worker and the other watcher (wait_for_task) go on.
        done = await client.wait_for_task(task.task_id, timeout=20)
        assert done.status == "COMPLETED"
        received = [first.sequence]
        while (event := await stalled.read()) is not grpc.aio.EOF:
            received.append(event.sequence)
    await channel.close()
    assert received == list(range(2, done.sequence + 1))


def test_watch_of_an_unknown_task_is_not_found(server: ServerProcess) -> None:
    from taskorch.client import NotFoundError

    with server.client() as client, pytest.raises(NotFoundError):
        list(client.watch_task("7a1c7f3e-5c55-4b8e-9a36-1c5bd0a4e1f1"))


def test_negative_after_sequence_is_refused(server: ServerProcess) -> None:
    from taskorch.client import InvalidArgumentError

    with server.client() as client:
        task = client.create_task(text="x")
        with pytest.raises(InvalidArgumentError):
            list(client.watch_task(task.task_id, after_sequence=-1))
