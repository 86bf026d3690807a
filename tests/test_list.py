"""ListTasks: every filter, sort and pagination form the seeds promise."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskorch.client import Client, Task
from taskorch.store.tasks import DEFERRED_OFFSET
from tests.databases import discard, new_database
from tests.servers import ServerProcess


@dataclass
class Population:
    server: ServerProcess
    completed: list[str]
    failed: list[str]
    running: list[str]
    pending: list[str]
    cancelled: list[str]

    @property
    def all(self) -> list[str]:
        return self.completed + self.failed + self.running + self.pending + self.cancelled


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Population]:
    """A server with one worker and tasks in every status."""
    workdir: Path = tmp_path_factory.mktemp("list")
    url = new_database(workdir)
    # No work in hand beyond the slot: tasks queued behind the blocker stay PENDING.
    args = ("--workers", "1", "--run-ahead", "0")
    server = ServerProcess(workdir=workdir, database_url=url, args=args).start()
    with server.client() as client:
        completed = []
        for i in range(5):
            task = client.create_task(text=f"completed task number {i}", priority=1 + i)
            completed.append(client.wait_for_task(task.task_id, timeout=30).task_id)
        failed_task = client.create_task(
            task_type="echo", input_data={"fail_attempts": 9}, max_attempts=1
        )
        failed = [client.wait_for_task(failed_task.task_id, timeout=30).task_id]
        blocker = client.create_task(task_type="echo", input_data={"delay_seconds": 300})
        for event in client.watch_task(blocker.task_id):
            if event.status == "RUNNING":
                break
        pending = [
            client.create_task(text=f"pending {i}", priority=10 - i).task_id for i in range(6)
        ]
        cancelled = []
        for _ in range(3):
            task = client.create_task(task_type="echo", input_data={"x": 1})
            cancelled.append(client.cancel_task(task.task_id).task_id)
    yield Population(server, completed, failed, [blocker.task_id], pending, cancelled)
    server.kill()
    discard(url)


def _ids(tasks: list[Task]) -> list[str]:
    return [t.task_id for t in tasks]


@pytest.fixture
def client(population: Population) -> Iterator[Client]:
    with population.server.client() as api:
        yield api


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("COMPLETED", "completed"),
        ("completed", "completed"),
        ("Completed", "completed"),
        ("succeeded", "completed"),
        ("PENDING", "pending"),
        ("queued", "pending"),
        ("RUNNING", "running"),
        ("processing", "running"),
        ("PROCESSING", "running"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
        ("canceled", "cancelled"),
    ],
)
def test_status_filter_accepts_any_case_and_seed_synonyms(
    population: Population, client: Client, word: str, expected: str
) -> None:
    page = client.list_tasks(status=word, limit=100)
    assert sorted(_ids(page.tasks)) == sorted(getattr(population, expected))
    assert page.total == len(getattr(population, expected))


def test_task_type_filter(population: Population, client: Client) -> None:
    echo = client.list_tasks(task_type="echo", limit=100)
    assert echo.total == len(population.failed + population.running + population.cancelled)
    assert {t.task_type for t in echo.tasks} == {"echo"}


def test_unknown_filter_values_match_nothing(client: Client) -> None:
    assert client.list_tasks(task_type="nothing-like-this").total == 0
    assert client.list_tasks(model_name="no-such-model").tasks == []
    assert client.list_tasks(template="no-such-template").tasks == []


def test_default_is_newest_first(population: Population, client: Client) -> None:
    page = client.list_tasks(limit=100)
    assert _ids(page.tasks) == list(reversed(population.all))
    assert page.total == len(population.all)
    assert page.limit == 100 and page.offset == 0


def test_offset_and_limit(population: Population, client: Client) -> None:
    newest_first = list(reversed(population.all))
    page = client.list_tasks(limit=4, offset=3)
    assert _ids(page.tasks) == newest_first[3:7]
    assert (page.limit, page.offset, page.total) == (4, 3, len(newest_first))


def test_page_and_limit_with_pagination_block(population: Population, client: Client) -> None:
    newest_first = list(reversed(population.all))
    total = len(newest_first)
    page = client.list_tasks(page=2, limit=5)
    assert _ids(page.tasks) == newest_first[5:10]
    assert (page.page, page.limit, page.total, page.pages) == (2, 5, total, math.ceil(total / 5))
    assert page.offset == 5
    beyond = client.list_tasks(page=99, limit=5)
    assert beyond.tasks == [] and beyond.total == total


def test_empty_result_has_zero_pages(client: Client) -> None:
    page = client.list_tasks(task_type="none-such", page=1, limit=10)
    assert (page.tasks, page.total, page.page, page.pages) == ([], 0, 1, 0)


def test_page_tokens_walk_every_task_exactly_once(population: Population, client: Client) -> None:
    seen: list[str] = []
    token = ""
    while True:
        page = client.list_tasks(limit=4, page_token=token)
        seen += _ids(page.tasks)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(population.all))


def test_page_tokens_with_a_filter_and_a_nullable_sort(
    population: Population, client: Client
) -> None:
    expected = _ids(client.list_tasks(sort_by="completed_at", sort_order="asc", limit=100).tasks)
    walked = [
        t.task_id for t in client.iter_tasks(sort_by="completed_at", sort_order="asc", limit=3)
    ]
    assert walked == expected
    assert len(walked) == len(population.all)


def test_a_token_is_refused_with_other_filters(client: Client) -> None:
    from taskorch.client import InvalidArgumentError

    token = client.list_tasks(limit=2).next_page_token
    assert token
    with pytest.raises(InvalidArgumentError) as caught:
        client.list_tasks(limit=2, page_token=token, status="pending")
    assert caught.value.field_violations[0].field == "page_token"


@pytest.mark.parametrize("field", ["created_at", "updated_at", "status", "priority", "task_type"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort_by_each_field(client: Client, field: str, order: str) -> None:
    tasks = client.list_tasks(sort_by=field, sort_order=order, limit=100).tasks
    keys = [(getattr(t, field) if field != "status" else _lifecycle(t.status)) for t in tasks]
    assert keys == sorted(keys, reverse=order == "desc")


def test_seed_003_order_parameter_is_the_same_as_sort_order(client: Client) -> None:
    import grpc

    from taskorch.v1 import task_service_pb2 as pb
    from taskorch.v1 import task_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(client.target) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        ascending = stub.ListTasks(pb.ListTasksRequest(order="asc", limit=100), timeout=10)
    assert [t.task_id for t in ascending.tasks] == list(
        reversed(_ids(client.list_tasks(limit=100).tasks))
    )


def _lifecycle(status: str) -> int:
    return ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"].index(status)


def test_deep_offsets_give_the_pages_a_token_walk_gives(tmp_path: Path) -> None:
    """Past DEFERRED_OFFSET a page is picked by task id first: the same rows, the same order."""
    url = new_database(tmp_path)
    server = ServerProcess(workdir=tmp_path, database_url=url, args=("--workers", "0")).start()
    try:
        with server.client() as client:
            count = DEFERRED_OFFSET + 300
            client.create_tasks(
                [
                    {"task_type": "echo" if i % 3 else "text_analysis", "text": f"t {i}",
                     "priority": 1 + i % 10}
                    for i in range(count)
                ]
            )  # fmt: skip
            for filters in (
                {},
                {"status": "pending", "task_type": "echo"},
                {"sort_by": "priority", "sort_order": "asc"},
                {"sort_by": "updated_at"},
            ):
                walked = [t.task_id for t in client.iter_tasks(**filters, limit=100)]
                assert len(walked) == client.list_tasks(**filters, limit=1).total
                for offset in (DEFERRED_OFFSET - 1, DEFERRED_OFFSET + 1, len(walked) - 7):
                    page = client.list_tasks(**filters, limit=50, offset=offset)
                    assert _ids(page.tasks) == walked[offset : offset + 50], (filters, offset)
    finally:
        server.kill()
        discard(url)
