"""Subtasks as seed 000's clients use them, on a real store (a SQLite file, and PostgreSQL when
reachable): work added to a task runs stage by stage, is taken within its task, reported on
with its lease, and refused (naming why) once it has started or its task has finished."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskorch.core.directory import WorkerDirectory
from taskorch.core.engine import TaskEngine, WorkerIdentity
from taskorch.core.planning import Catalog, ContainerPlanner, EchoPlanner, TaskSpec
from taskorch.core.subtasks import NewSubtask, StatusReport, SubtaskService
from taskorch.core.tasks import TaskService
from taskorch.domain.caller import Caller
from taskorch.domain.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    LeaseLost,
    SubtaskNotFound,
    TaskNotFound,
)
from taskorch.domain.values import Status, Task
from taskorch.events.hub import EventHub
from taskorch.store.database import Database
from tests import databases

ACME = Caller(tenant_id="acme")
GLOBEX = Caller(tenant_id="globex")
RENDERER = WorkerIdentity("renderer-1", ("render",))


@dataclass
class Seed000:
    tasks: TaskService
    subtasks: SubtaskService

    async def container(self, caller: Caller = ACME) -> Task:
        return await self.tasks.create(caller, TaskSpec(task_type="container"))


@pytest.fixture(params=["sqlite", "postgresql"])
async def seed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Seed000]:
    url = databases.new_database(tmp_path, request.param)
    db = Database(url)
    await db.open()
    hub = EventHub()
    engine = TaskEngine(db, hub)
    directory = WorkerDirectory()
    tasks = TaskService(db, hub, engine, Catalog([ContainerPlanner(), EchoPlanner()]))
    yield Seed000(tasks, SubtaskService(db, hub, engine, directory))
    await db.close()
    databases.discard(url)


async def test_work_runs_stage_by_stage_and_the_task_completes_with_its_last_subtask(
    seed: Seed000,
) -> None:
    task = await seed.container()
    first = [
        await seed.subtasks.create(ACME, task.task_id, NewSubtask("render", name=f"frame{i}"))
        for i in range(2)
    ]
    last = await seed.subtasks.create(ACME, task.task_id, NewSubtask("render", stage=1))
    taken = [await seed.subtasks.take(ACME, task.task_id, RENDERER) for _ in range(3)]
    assert {lease.subtask.subtask_id for lease in taken if lease} == {s.subtask_id for s in first}
    assert taken[2] is None  # stage 1 waits for stage 0
    for lease in taken[:2]:
        assert lease is not None
        report = StatusReport(
            lease.lease_id, Status.COMPLETED, result={"frame": lease.subtask.name}
        )
        await seed.subtasks.report(ACME, task.task_id, lease.subtask.subtask_id, report)
    assert (await seed.tasks.get(ACME, task.task_id)).status is Status.RUNNING
    final = await seed.subtasks.take(ACME, task.task_id, RENDERER)
    assert final is not None and final.subtask.subtask_id == last.subtask_id
    await seed.subtasks.report(
        ACME, task.task_id, last.subtask_id, StatusReport(final.lease_id, Status.COMPLETED)
    )
    assert (await seed.tasks.get(ACME, task.task_id)).status is Status.COMPLETED
    done = await seed.subtasks.list(ACME, task.task_id, status="completed")
    assert len(done) == 3


async def test_a_heartbeat_extends_the_lease_and_a_stale_lease_is_refused(seed: Seed000) -> None:
    task = await seed.container()
    subtask = await seed.subtasks.create(ACME, task.task_id, NewSubtask("render"))
    lease = await seed.subtasks.take(ACME, task.task_id, RENDERER, lease_seconds=5)
    assert lease is not None
    beat = StatusReport(lease.lease_id, Status.RUNNING, progress=40, lease_seconds=60)
    shown, answer = await seed.subtasks.report(ACME, task.task_id, subtask.subtask_id, beat)
    assert answer.lease_expires_at is not None and answer.lease_expires_at > lease.expires_at
    assert not answer.cancelled and shown.status is Status.RUNNING
    stale = StatusReport("not-the-lease", Status.COMPLETED)
    with pytest.raises(LeaseLost):
        await seed.subtasks.report(ACME, task.task_id, subtask.subtask_id, stale)
    with pytest.raises(InvalidArgument) as caught:
        await seed.subtasks.report(
            ACME, task.task_id, subtask.subtask_id, StatusReport("", Status.COMPLETED)
        )
    assert caught.value.metadata.get("field") == "lease_id"


async def test_a_permanent_failure_fails_the_task(seed: Seed000) -> None:
    task = await seed.container()
    subtask = await seed.subtasks.create(ACME, task.task_id, NewSubtask("render"))
    lease = await seed.subtasks.take(ACME, task.task_id, RENDERER)
    assert lease is not None
    report = StatusReport(lease.lease_id, Status.FAILED, error="bad frame", permanent=True)
    await seed.subtasks.report(ACME, task.task_id, subtask.subtask_id, report)
    failed = await seed.tasks.get(ACME, task.task_id)
    assert failed.status is Status.FAILED and "bad frame" in (failed.error or "")
    with pytest.raises(FailedPrecondition) as caught:
        await seed.subtasks.create(ACME, task.task_id, NewSubtask("render"))
    assert caught.value.reason == "TASK_FINISHED"


async def test_a_started_subtasks_input_cannot_change_but_its_info_can(seed: Seed000) -> None:
    task = await seed.container()
    subtask = await seed.subtasks.create(ACME, task.task_id, NewSubtask("render", input={"n": 1}))
    changed = await seed.subtasks.update(ACME, task.task_id, subtask.subtask_id, input={"n": 2})
    assert changed.input == {"n": 2}
    assert await seed.subtasks.take(ACME, task.task_id, RENDERER) is not None
    with pytest.raises(Conflict) as caught:
        await seed.subtasks.update(ACME, task.task_id, subtask.subtask_id, input={"n": 3})
    assert caught.value.reason == "SUBTASK_STARTED"
    noted = await seed.subtasks.update(
        ACME, task.task_id, subtask.subtask_id, info={"host": "gpu-2"}, name="frame"
    )
    assert (noted.info, noted.name, noted.input) == ({"host": "gpu-2"}, "frame", {"n": 2})


@pytest.mark.parametrize(
    ("new", "field"),
    [
        (NewSubtask(""), "kind"),
        (NewSubtask("render", stage=-1), "stage"),
        (NewSubtask("render", max_attempts=101), "max_attempts"),
        (NewSubtask("echo", input={"delay_seconds": 601}), "input.delay_seconds"),
    ],
)
async def test_bad_subtasks_are_refused_naming_the_field(
    seed: Seed000, new: NewSubtask, field: str
) -> None:
    task = await seed.container()
    with pytest.raises(InvalidArgument) as caught:
        await seed.subtasks.create(ACME, task.task_id, new)
    assert caught.value.metadata.get("field") == field, caught.value.message


async def test_another_tenants_work_is_not_found(seed: Seed000) -> None:
    task = await seed.container()
    other_task = await seed.container()
    subtask = await seed.subtasks.create(ACME, task.task_id, NewSubtask("render"))
    with pytest.raises(TaskNotFound):
        await seed.subtasks.create(GLOBEX, task.task_id, NewSubtask("render"))
    with pytest.raises(TaskNotFound):
        await seed.subtasks.list(GLOBEX, task.task_id)
    with pytest.raises(TaskNotFound):
        await seed.subtasks.take(GLOBEX, task.task_id, RENDERER)
    with pytest.raises(SubtaskNotFound):
        await seed.subtasks.get(GLOBEX, task.task_id, subtask.subtask_id)
    with pytest.raises(SubtaskNotFound):  # the subtask of another task
        await seed.subtasks.get(ACME, other_task.task_id, subtask.subtask_id)
