"""Schedules driven by a test clock: cron slots in a time zone, interval slots, one firing per
slot however many schedulers share the database, and the catch_up policy for missed slots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from taskorch.core import schedules as schedules_module
from taskorch.core.engine import TaskEngine
from taskorch.core.planning import Catalog, EchoPlanner, TaskSpec, TextAnalysisPlanner
from taskorch.core.schedules import (
    NewSchedule,
    ScheduleService,
    Timing,
    firing_request_id,
)
from taskorch.core.tasks import ListRequest, TaskService
from taskorch.domain.caller import Caller
from taskorch.domain.errors import (
    AlreadyExists,
    ErrorStatus,
    InvalidArgument,
    ScheduleNotFound,
    TaskorchError,
)
from taskorch.domain.values import Task
from taskorch.events.hub import EventHub
from taskorch.store.database import Database
from taskorch.store.schema import schedules
from tests import databases

ACME = Caller(tenant_id="acme")
GLOBEX = Caller(tenant_id="globex")
START = datetime(2026, 12, 3, 10, 3, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, now: datetime) -> None:
        self.now = now


@dataclass
class World:
    db: Database
    tasks: TaskService
    clock: Clock

    def scheduler(self) -> ScheduleService:
        return ScheduleService(self.db, self.tasks, clock=self.clock)

    async def created(self, caller: Caller) -> list[Task]:
        page = await self.tasks.list(caller, ListRequest(limit=1000))
        return list(page.items)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """On the test backend's database (TASKORCH_TEST_BACKEND=postgresql for PostgreSQL)."""
    url = databases.new_database(tmp_path)
    db = Database(url)
    await db.open()
    hub = EventHub()
    catalog = Catalog([TextAnalysisPlanner(), EchoPlanner()])
    tasks = TaskService(db, hub, TaskEngine(db, hub), catalog, max_active_tasks=3)
    yield World(db, tasks, Clock(START))
    await db.close()
    databases.discard(url)


def every_five_minutes(name: str = "report", catch_up: str = "") -> NewSchedule:
    return NewSchedule(
        name=name,
        cron="*/5 * * * *",
        timezone="Europe/Paris",
        task=TaskSpec(task_type="echo"),
        catch_up=catch_up,
    )


def test_cron_slots_are_computed_in_the_schedule_time_zone() -> None:
    nine_in_paris = Timing.parse("0 9 * * *", 0, "Europe/Paris", START)
    # 09:00 in Paris is 07:00 UTC in summer (CEST) and 08:00 UTC in winter (CET).
    assert nine_in_paris.after(datetime(2026, 7, 1, tzinfo=UTC)) == datetime(
        2026, 7, 1, 7, tzinfo=UTC
    )
    assert nine_in_paris.after(datetime(2026, 12, 1, tzinfo=UTC)) == datetime(
        2026, 12, 1, 8, tzinfo=UTC
    )
    half_past_in_kolkata = Timing.parse("30 * * * *", 0, "Asia/Kolkata", START)
    assert half_past_in_kolkata.after(START) == datetime(2026, 12, 3, 11, tzinfo=UTC)


def test_daylight_saving_changes_follow_croniter_rules() -> None:
    half_past_two = Timing.parse("30 2 * * *", 0, "Europe/Paris", START)
    # 29 March 2026: 02:00 becomes 03:00 in Paris; 02:30 does not exist and fires at 03:00.
    assert half_past_two.after(datetime(2026, 3, 28, 12, tzinfo=UTC)) == datetime(
        2026, 3, 29, 1, tzinfo=UTC
    )
    # 25 October 2026: 03:00 becomes 02:00; 02:30 happens twice and fires twice.
    first = half_past_two.after(datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert half_past_two.after(first) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def test_interval_slots_count_from_the_creation() -> None:
    timing = Timing.parse("", 90, "", START)
    assert timing.after(START) == START + timedelta(seconds=90)
    assert timing.after(START + timedelta(seconds=90)) == START + timedelta(seconds=180)
    assert timing.latest(START + timedelta(seconds=90), START + timedelta(seconds=400)) == (
        START + timedelta(seconds=360)
    )


@pytest.mark.parametrize(
    ("cron", "interval", "timezone", "field"),
    [
        ("", 0, "", "cron"),
        ("* * * * *", 60, "", "interval_seconds"),
        ("* * * *", 0, "", "cron"),
        ("* * * * * *", 0, "", "cron"),
        ("61 * * * *", 0, "", "cron"),
        ("0 0 31 2 *", 0, "", "cron"),
        ("* * * * *", 0, "Mars/Olympus_Mons", "timezone"),
        ("", 0.5, "", "interval_seconds"),
        ("", float("inf"), "", "interval_seconds"),
    ],
)
def test_bad_timing_is_refused_naming_the_field(
    cron: str, interval: float, timezone: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        Timing.parse(cron, interval, timezone, START)
    assert caught.value.metadata.get("field") == field, caught.value.message


async def test_a_cron_schedule_fires_once_on_its_slot(world: World) -> None:
    scheduler = world.scheduler()
    schedule = await scheduler.create(ACME, every_five_minutes())
    slot = datetime(2026, 12, 3, 10, 5, tzinfo=UTC)
    assert schedule.next_fire_at == slot
    world.clock.at(slot - timedelta(milliseconds=1))
    assert (await scheduler.fire_due())[0] == 0
    world.clock.at(slot + timedelta(milliseconds=200))
    fired, upcoming = await scheduler.fire_due()
    assert fired == 1 and upcoming == slot + timedelta(minutes=5)
    assert (await scheduler.fire_due())[0] == 0  # the slot is taken
    [task] = await world.created(ACME)
    assert task.request_id == firing_request_id(schedule.schedule_id, slot)
    assert task.task_type == "echo"
    shown = await scheduler.get(ACME, "report")
    assert (shown.fire_count, shown.last_fired_at, shown.last_task_id) == (1, slot, task.task_id)
    assert shown.next_fire_at == slot + timedelta(minutes=5)


async def test_two_schedulers_on_one_database_fire_each_slot_once(world: World) -> None:
    first, second = world.scheduler(), world.scheduler()
    schedule = await first.create(
        ACME, NewSchedule(name="tick", interval_seconds=2, task=TaskSpec(task_type="echo"))
    )
    for step in range(1, 4):
        world.clock.at(START + timedelta(seconds=2 * step, milliseconds=50))
        results = await asyncio.gather(first.fire_due(), second.fire_due())
        assert sorted(fired for fired, _ in results) == [0, 1]
    tasks = await world.created(ACME)
    slots = [START + timedelta(seconds=2 * step) for step in range(1, 4)]
    assert sorted(t.request_id or "" for t in tasks) == sorted(
        firing_request_id(schedule.schedule_id, slot) for slot in slots
    )
    assert (await first.get(ACME, "tick")).fire_count == 3


async def test_a_scheduler_held_up_for_seconds_fires_every_slot_it_owes(world: World) -> None:
    scheduler = world.scheduler()
    schedule = await scheduler.create(
        ACME, NewSchedule(name="tick", interval_seconds=1, task=TaskSpec(task_type="echo"))
    )
    world.clock.at(START + timedelta(seconds=3.5))  # 3 slots late, none of them missed
    for _ in range(3):
        fired, upcoming = await scheduler.fire_due()
        assert fired == 1 and upcoming is not None
    assert upcoming == START + timedelta(seconds=4)
    assert (await scheduler.fire_due())[0] == 0
    assert sorted(t.request_id or "" for t in await world.created(ACME)) == sorted(
        firing_request_id(schedule.schedule_id, START + timedelta(seconds=k)) for k in (1, 2, 3)
    )


async def test_missed_slots_run_once_with_catch_up_one(world: World) -> None:
    scheduler = world.scheduler()
    await scheduler.create(ACME, every_five_minutes(catch_up="one"))
    # 10:05, 10:10, 10:15 and 10:20 pass with nobody firing; the latest was 90 s ago.
    world.clock.at(datetime(2026, 12, 3, 10, 21, 30, tzinfo=UTC))
    assert (await scheduler.fire_due())[0] == 1
    [task] = await world.created(ACME)
    shown = await scheduler.get(ACME, "report")
    assert shown.fire_count == 1 and shown.last_task_id == task.task_id
    assert shown.last_fired_at == datetime(2026, 12, 3, 10, 20, tzinfo=UTC)
    assert shown.next_fire_at == datetime(2026, 12, 3, 10, 25, tzinfo=UTC)


async def test_missed_slots_are_skipped_with_catch_up_none(world: World) -> None:
    scheduler = world.scheduler()
    await scheduler.create(ACME, every_five_minutes(catch_up="none"))
    world.clock.at(datetime(2026, 12, 3, 10, 21, 30, tzinfo=UTC))
    await scheduler.fire_due()
    assert await world.created(ACME) == []
    shown = await scheduler.get(ACME, "report")
    assert shown.fire_count == 0 and shown.last_fired_at is None
    assert shown.next_fire_at == datetime(2026, 12, 3, 10, 25, tzinfo=UTC)
    # The next slot, reached on time, fires.
    world.clock.at(datetime(2026, 12, 3, 10, 25, 0, 100_000, tzinfo=UTC))
    assert (await scheduler.fire_due())[0] == 1
    assert len(await world.created(ACME)) == 1


async def test_slots_that_passed_before_the_scheduler_started_count_as_missed(
    world: World,
) -> None:
    await world.scheduler().create(ACME, every_five_minutes(catch_up="none"))
    # A scheduler that starts 2 s after the 10:05 slot: no server was there to fire it.
    world.clock.at(datetime(2026, 12, 3, 10, 5, 2, tzinfo=UTC))
    restarted = world.scheduler()
    await restarted.fire_due()
    assert await world.created(ACME) == []
    assert (await restarted.get(ACME, "report")).next_fire_at == datetime(
        2026, 12, 3, 10, 10, tzinfo=UTC
    )


async def test_a_firing_that_cannot_create_its_task_records_why(world: World) -> None:
    scheduler = world.scheduler()
    await scheduler.create(
        ACME, NewSchedule(name="flood", interval_seconds=1, task=TaskSpec(task_type="echo"))
    )
    # The tenant may have 3 unfinished tasks (and no worker runs them): the 4th firing fails.
    for step in range(1, 5):
        world.clock.at(START + timedelta(seconds=step, milliseconds=10))
        await scheduler.fire_due()
    shown = await scheduler.get(ACME, "flood")
    assert shown.fire_count == 4 and len(await world.created(ACME)) == 3
    assert "unfinished tasks" in shown.last_error
    assert shown.next_fire_at == START + timedelta(seconds=5)


async def test_a_schedule_that_cannot_be_fired_does_not_hold_up_the_others(
    world: World,
) -> None:
    scheduler = world.scheduler()
    await scheduler.create(ACME, every_five_minutes("broken"))
    await scheduler.create(ACME, every_five_minutes("fine"))
    # A time zone the server no longer knows (e.g. after a tzdata change).
    await world.db.write(
        lambda tx: tx.conn.execute(
            update(schedules).where(schedules.c.name == "broken").values(timezone="Gone/Away")
        )
    )
    world.clock.at(datetime(2026, 12, 3, 10, 5, 0, 100_000, tzinfo=UTC))
    fired, upcoming = await scheduler.fire_due()
    assert fired == 1 and upcoming == datetime(2026, 12, 3, 10, 5, tzinfo=UTC)
    assert (await scheduler.get(ACME, "fine")).fire_count == 1


async def test_a_tenant_has_a_bounded_number_of_schedules(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedules_module, "MAX_SCHEDULES_PER_TENANT", 2)
    scheduler = world.scheduler()
    await scheduler.create(ACME, every_five_minutes("one"))
    await scheduler.create(ACME, every_five_minutes("two"))
    with pytest.raises(TaskorchError) as caught:
        await scheduler.create(ACME, every_five_minutes("three"))
    assert caught.value.status is ErrorStatus.RESOURCE_EXHAUSTED
    assert caught.value.reason == "SCHEDULE_QUOTA_EXCEEDED"
    await scheduler.create(GLOBEX, every_five_minutes("three"))  # another tenant's own quota


async def test_pause_resume_trigger_and_delete(world: World) -> None:
    scheduler = world.scheduler()
    await scheduler.create(ACME, every_five_minutes())
    paused = await scheduler.pause(ACME, "report")
    assert paused.paused and paused.next_fire_at is None
    world.clock.at(datetime(2026, 12, 3, 10, 21, tzinfo=UTC))
    await scheduler.fire_due()
    assert await world.created(ACME) == []
    # Resuming starts from the next slot: the ones that passed while paused never run.
    resumed = await scheduler.resume(ACME, "report")
    assert not resumed.paused
    assert resumed.next_fire_at == datetime(2026, 12, 3, 10, 25, tzinfo=UTC)
    shown, task = await scheduler.trigger(ACME, "report")
    assert shown.fire_count == 1 and shown.last_task_id == task.task_id
    assert shown.next_fire_at == resumed.next_fire_at
    await scheduler.delete(ACME, "report")
    with pytest.raises(ScheduleNotFound):
        await scheduler.get(ACME, "report")
    assert [t.task_id for t in await world.created(ACME)] == [task.task_id]


async def test_a_schedule_belongs_to_its_tenant(world: World) -> None:
    scheduler = world.scheduler()
    await scheduler.create(ACME, every_five_minutes())
    for call in (
        scheduler.get(GLOBEX, "report"),
        scheduler.pause(GLOBEX, "report"),
        scheduler.resume(GLOBEX, "report"),
        scheduler.trigger(GLOBEX, "report"),
        scheduler.delete(GLOBEX, "report"),
    ):
        with pytest.raises(ScheduleNotFound):
            await call
    assert await scheduler.list(GLOBEX) == []
    # The same name in another tenant is another schedule; twice in one tenant is refused.
    await scheduler.create(GLOBEX, every_five_minutes())
    with pytest.raises(AlreadyExists):
        await scheduler.create(ACME, every_five_minutes())
    world.clock.at(datetime(2026, 12, 3, 10, 5, 0, 100_000, tzinfo=UTC))
    assert (await scheduler.fire_due())[0] == 2
    assert len(await world.created(ACME)) == 1 and len(await world.created(GLOBEX)) == 1


async def test_the_task_body_is_checked_as_create_task_checks_it(world: World) -> None:
    scheduler = world.scheduler()
    cases = [
        (TaskSpec(text="x" * 5000), "task.text"),
        (TaskSpec(task_type="echo", priority=11), "task.priority"),
        (TaskSpec(task_type="echo", request_id="mine"), "task.request_id"),
        (None, "task"),
    ]
    for spec, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            await scheduler.create(ACME, NewSchedule(name="bad", interval_seconds=5, task=spec))
        assert caught.value.metadata.get("field") == field, caught.value.message
    for request, field in [
        (NewSchedule(name="", interval_seconds=5, task=TaskSpec(text="a")), "name"),
        (NewSchedule(name="a b", interval_seconds=5, task=TaskSpec(text="a")), "name"),
        (
            NewSchedule(name="ok", interval_seconds=5, task=TaskSpec(text="a"), catch_up="all"),
            "catch_up",
        ),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            await scheduler.create(ACME, request)
        assert caught.value.metadata.get("field") == field, caught.value.message
    assert await scheduler.list(ACME) == []
