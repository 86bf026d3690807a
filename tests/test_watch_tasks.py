"""WatchTasks: one stream of a caller's tasks (a change stream), and waiting on many tasks."""

from __future__ import annotations

import uuid

import pytest

from taskorch.client import InvalidArgumentError, NotFoundError, TaskEvent
from tests.conftest import ServerFactory
from tests.servers import ServerProcess

SLOW_ECHO = {"delay_seconds": 0.6, "progress_steps": 3}


def test_one_stream_follows_every_task_created_after_it_opened(server: ServerProcess) -> None:
    with server.client() as client, client.watch_tasks(timeout=60) as watch:
        created = [client.create_task(task_type="echo", input_data={"n": n}) for n in range(5)]
        wanted = {t.task_id for t in created}
        seen: dict[str, list[TaskEvent]] = {t: [] for t in wanted}
        ended: set[str] = set()
        for event in watch.events():
            if event.task_id not in wanted:
                continue  # another test's task on the shared server
            seen[event.task_id].append(event)
            if event.is_terminal:
                ended.add(event.task_id)
                if ended == wanted:
                    break
    for task_id, events in seen.items():
        sequences = [e.sequence for e in events]
        # Every event from creation on, in order, with nothing missed or repeated.
        assert sequences == list(range(1, len(sequences) + 1)), (task_id, sequences)
        assert events[0].status == "PENDING"
        last = events[-1]
        assert last.status == "COMPLETED" and last.task is not None
        assert last.task.result is not None and "echo" in last.task.result


def test_listed_tasks_come_as_snapshots_first_and_the_stream_ends_with_them(
    server: ServerProcess,
) -> None:
    with server.client() as client:
        done = client.create_task(task_type="echo", input_data={"n": 1})
        client.wait_for_task(done.task_id, timeout=30)
        slow = client.create_task(task_type="echo", input_data=SLOW_ECHO)
        with client.watch_tasks([done.task_id, slow.task_id], timeout=60) as watch:
            events = list(watch.events())  # ends by itself
    assert [(e.type, e.task_id) for e in events[:2]] == [
        ("SNAPSHOT", done.task_id),
        ("SNAPSHOT", slow.task_id),
    ]
    assert events[0].status == "COMPLETED" and events[0].task is not None
    later = [e for e in events[2:] if e.task_id == slow.task_id]
    assert later, "the slow task's changes after its snapshot"
    assert {e.task_id for e in events[2:]} == {slow.task_id}
    sequences = [events[1].sequence] + [e.sequence for e in later]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    assert later[-1].status == "COMPLETED" and later[-1].task is not None


def test_terminal_only_sends_just_the_ends(server: ServerProcess) -> None:
    with server.client() as client:
        tasks = [client.create_task(task_type="echo", input_data=SLOW_ECHO) for _ in range(3)]
        ids = [t.task_id for t in tasks]
        with client.watch_tasks(ids, terminal_only=True, timeout=60) as watch:
            events = list(watch.events())
    assert sorted(e.task_id for e in events) == sorted(ids)
    assert all(e.is_terminal and e.task is not None for e in events)


def test_wait_for_tasks_answers_each_in_the_order_given(server: ServerProcess) -> None:
    with server.client() as client:
        tasks = [client.create_task(task_type="echo", input_data={"n": n}) for n in range(4)]
        ids = [t.task_id for t in reversed(tasks)]
        ended = client.wait_for_tasks(ids, timeout=60)
    assert [t.task_id for t in ended] == ids
    assert [t.result["echo"]["n"] for t in ended if t.result] == [3, 2, 1, 0]


async def test_async_wait_for_tasks_times_out_while_they_wait(
    server_factory: ServerFactory,
) -> None:
    idle = server_factory("--workers", "0")
    async with idle.async_client() as client:
        task = await client.create_task(task_type="echo")
        with pytest.raises(TimeoutError):
            await client.wait_for_tasks([task.task_id], timeout=1.0)


def test_bad_lists_are_refused_naming_what_is_wrong(server: ServerProcess) -> None:
    with server.client() as client:
        unknown = str(uuid.uuid4())
        with pytest.raises(NotFoundError) as missing, client.watch_tasks([unknown]) as watch:
            list(watch.events())
        assert unknown in str(missing.value)
        too_many = [str(uuid.uuid4()) for _ in range(1001)]
        with pytest.raises(InvalidArgumentError) as refused, client.watch_tasks(too_many) as w:
            list(w.events())
        assert "task_ids" in str(refused.value)
