"""The task service on a real store (a SQLite file, and PostgreSQL when reachable): changing a
queued task's priority, cancelling, idempotent and all-or-none creates, the tenant's quota,
listing by status words, and tenancy (another tenant's task is not found)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskorch.core.engine import TaskEngine, WorkerIdentity
from taskorch.core.planning import Catalog, EchoPlanner, TaskSpec, TextAnalysisPlanner
from taskorch.core.tasks import ListRequest, TaskService
from taskorch.domain.caller import Caller
from taskorch.domain.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    ResourceExhausted,
    TaskNotCancellable,
    TaskNotFound,
)
from taskorch.domain.values import Status
from taskorch.events.hub import EventHub
from taskorch.store.database import Database
from tests import databases

ACME = Caller(tenant_id="acme")
GLOBEX = Caller(tenant_id="globex")
WORKER = WorkerIdentity("worker-1", ("echo", "text_analysis"))
ECHO = TaskSpec(task_type="echo")


@dataclass
class Service:
    tasks: TaskService
    engine: TaskEngine


@pytest.fixture(params=["sqlite", "postgresql"])
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Service]:
    url = databases.new_database(tmp_path, request.param)
    db = Database(url)
    await db.open()
    hub = EventHub()
    engine = TaskEngine(db, hub)
    catalog = Catalog([TextAnalysisPlanner(), EchoPlanner()])
    yield Service(TaskService(db, hub, engine, catalog, max_active_tasks=5), engine)
    await db.close()
    databases.discard(url)


async def test_raising_a_queued_tasks_priority_moves_it_ahead(service: Service) -> None:
    first = await service.tasks.create(ACME, ECHO)
    second = await service.tasks.create(ACME, ECHO)
    changed = await service.tasks.update_priority(ACME, second.task_id, 9)
    assert changed.priority == 9 and changed.sequence == second.sequence + 1
    [lease] = await service.engine.take(WORKER)
    assert lease.subtask.task_id == second.task_id
    [after] = await service.engine.take(WORKER)
    assert after.subtask.task_id == first.task_id


async def test_a_finished_tasks_priority_cannot_change_nor_can_it_be_cancelled(
    service: Service,
) -> None:
    task = await service.tasks.create(ACME, ECHO)
    [lease] = await service.engine.take(WORKER)
    await service.engine.complete(lease.subtask.subtask_id, lease.lease_id, {"ok": True})
    with pytest.raises(Conflict) as caught:
        await service.tasks.update_priority(ACME, task.task_id, 9)
    assert caught.value.reason == "TASK_FINISHED"
    with pytest.raises(TaskNotCancellable):
        await service.tasks.cancel(ACME, task.task_id)
    with pytest.raises(InvalidArgument) as bad:
        await service.tasks.update_priority(ACME, task.task_id, 11)
    assert bad.value.metadata.get("field") == "priority"


async def test_a_cancelled_task_is_never_taken_and_cancelling_again_answers_it(
    service: Service,
) -> None:
    task = await service.tasks.create(ACME, ECHO)
    cancelled = await service.tasks.cancel(ACME, task.task_id, "not needed")
    assert cancelled.status is Status.CANCELLED
    again = await service.tasks.cancel(ACME, task.task_id)
    assert again.status is Status.CANCELLED and again.cancelled_at == cancelled.cancelled_at
    assert await service.engine.take(WORKER, limit=10) == []


async def test_another_tenants_task_is_not_found(service: Service) -> None:
    task = await service.tasks.create(ACME, ECHO)
    for call in (
        service.tasks.get(GLOBEX, task.task_id),
        service.tasks.cancel(GLOBEX, task.task_id),
        service.tasks.update_priority(GLOBEX, task.task_id, 9),
    ):
        with pytest.raises(TaskNotFound):
            await call
    assert (await service.tasks.list(GLOBEX, ListRequest())).total == 0
    assert (await service.tasks.get(ACME, f"task_{task.task_id}")).task_id == task.task_id


async def test_a_repeated_request_id_answers_the_first_task(service: Service) -> None:
    spec = TaskSpec(task_type="echo", input_data={"n": 1}, request_id="order-17")
    first = await service.tasks.create(ACME, spec)
    again = await service.tasks.create(ACME, spec)
    assert again.task_id == first.task_id
    # The same key in another tenant is another request.
    assert (await service.tasks.create(GLOBEX, spec)).task_id != first.task_id
    with pytest.raises(AlreadyExists):
        await service.tasks.create(
            ACME, TaskSpec(task_type="echo", input_data={"n": 2}, request_id="order-17")
        )
    assert (await service.tasks.list(ACME, ListRequest())).total == 1


async def test_a_batch_with_one_bad_request_creates_nothing_and_names_it(
    service: Service,
) -> None:
    specs = [ECHO, TaskSpec(text="fine"), TaskSpec(text="x" * 4001)]
    with pytest.raises(InvalidArgument) as caught:
        await service.tasks.create_many(ACME, specs)
    assert caught.value.metadata.get("field") == "requests[2].text"
    assert (await service.tasks.list(ACME, ListRequest())).total == 0


async def test_a_tenant_may_have_its_quota_of_unfinished_tasks_at_once(
    service: Service,
) -> None:
    made = await service.tasks.create_many(ACME, [ECHO] * 5)
    with pytest.raises(ResourceExhausted) as caught:
        await service.tasks.create(ACME, ECHO)
    assert caught.value.reason == "QUOTA_EXCEEDED" and caught.value.retry_after_seconds
    await service.tasks.create(GLOBEX, ECHO)  # another tenant's own quota
    await service.tasks.cancel(ACME, made[0].task_id)  # a finished task frees its place
    await service.tasks.create(ACME, ECHO)


async def test_lists_filter_by_status_words_of_any_seed(service: Service) -> None:
    running = await service.tasks.create(ACME, ECHO)
    await service.engine.take(WORKER)
    queued = [await service.tasks.create(ACME, ECHO) for _ in range(2)]
    for word in ("PENDING", "pending", "queued"):
        page = await service.tasks.list(ACME, ListRequest(status=word, sort_order="asc"))
        assert [t.task_id for t in page.items] == [t.task_id for t in queued], word
    for word in ("RUNNING", "processing"):
        page = await service.tasks.list(ACME, ListRequest(status=word))
        assert [t.task_id for t in page.items] == [running.task_id], word
    with pytest.raises(InvalidArgument) as caught:
        await service.tasks.list(ACME, ListRequest(status="sleeping"))
    assert caught.value.metadata.get("field") == "status"


async def test_keyset_pages_cover_every_task_once(service: Service) -> None:
    made = await service.tasks.create_many(ACME, [ECHO] * 5)
    seen: list[str] = []
    token = ""
    while True:
        page = await service.tasks.list(ACME, ListRequest(limit=2, page_token=token))
        seen += [t.task_id for t in page.items]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(t.task_id for t in made) and len(seen) == 5
