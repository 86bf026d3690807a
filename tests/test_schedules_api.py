"""ScheduleService on a real server over gRPC (the SDK and the CLI): schedules fire on their
slots, survive a restart (catch_up one or none), and refuse bad input naming the field."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import json_format

from taskorch.client import Client, ConflictError, InvalidArgumentError, NotFoundError, Schedule
from taskorch.client._errors import from_rpc_error
from taskorch.v1 import schedule_service_pb2 as pb
from taskorch.v1 import schedule_service_pb2_grpc as pb_grpc
from tests.conftest import ServerFactory
from tests.servers import ServerProcess
from tests.test_cli import taskorch


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client(timeout=30) as api:
        yield api


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(
    client: Client, name: str, done: Callable[[Schedule], bool], timeout: float = 15
) -> Schedule:
    deadline = time.monotonic() + timeout
    while True:
        schedule = client.schedules.get(name)
        if done(schedule):
            return schedule
        if time.monotonic() > deadline:
            raise AssertionError(f"schedule {name} did not get there: {schedule}")
        time.sleep(0.1)


def slot_of(request_id: str) -> datetime:
    """The slot a scheduled task was created for (request_id schedule:<id>:<slot>)."""
    return datetime.fromisoformat(request_id.split(":", 2)[2].replace("Z", "+00:00"))


def scheduled_tasks(client: Client, schedule: Schedule) -> list[datetime]:
    """The slots of the tasks a schedule created, oldest first."""
    prefix = f"schedule:{schedule.schedule_id}:"
    return sorted(
        slot_of(t.request_id)
        for t in client.iter_tasks(task_type="echo", limit=1000)
        if t.request_id.startswith(prefix) and ":trigger:" not in t.request_id
    )


def test_an_interval_schedule_fires_on_each_slot(client: Client) -> None:
    name = unique("tick")
    created = client.schedules.create(name, interval_seconds=1, task={"task_type": "echo"})
    assert created.created_at is not None and created.next_fire_at is not None
    assert created.next_fire_at == created.created_at + timedelta(seconds=1)
    assert created.catch_up == "one" and created.timezone == "UTC" and not created.paused
    shown = wait_for(client, name, lambda s: len(scheduled_tasks(client, s)) >= 3)
    client.schedules.pause(name)
    slots = scheduled_tasks(client, shown)
    # One task per slot, on the slots: creation + 1 s, + 2 s, ...
    assert slots[:3] == [created.created_at + timedelta(seconds=k) for k in (1, 2, 3)], slots
    assert len(slots) == len(set(slots))
    task = client.wait_for_task(shown.last_task_id, timeout=30)
    assert task.status == "COMPLETED" and task.task_type == "echo"


def test_a_cron_schedule_shows_its_next_slot_in_its_time_zone(client: Client) -> None:
    name = unique("kolkata")
    # Minute 30 in India (UTC+05:30) is minute 0 in UTC.
    created = client.schedules.create(
        name, cron="30 * * * *", timezone="Asia/Kolkata", task={"text": "On the hour."}
    )
    now = datetime.now(UTC)
    assert created.next_fire_at is not None
    assert (created.next_fire_at.minute, created.next_fire_at.second) == (0, 0)
    assert now < created.next_fire_at <= now + timedelta(hours=1)
    assert client.schedules.get(name).task == {"text": "On the hour."}


def test_a_schedules_task_keeps_its_delay_and_concurrency_key(client: Client) -> None:
    name = unique("keyed")
    body = {
        "task_type": "echo",
        "run_after_seconds": 0.5,
        "concurrency_key": "nightly-report",
        "concurrency_limit": 1,
    }
    client.schedules.create(name, interval_seconds=3600, task=body)
    assert client.schedules.get(name).task == body
    _, task = client.schedules.trigger(name)
    assert task.concurrency_key == "nightly-report" and task.status == "PENDING"
    assert task.run_at is not None and task.created_at is not None
    assert abs((task.run_at - task.created_at).total_seconds() - 0.5) < 0.01
    assert client.wait_for_task(task.task_id, timeout=30).status == "COMPLETED"


def test_pause_resume_trigger_and_delete(client: Client) -> None:
    name = unique("daily")
    client.schedules.create(
        name, cron="0 3 * * *", timezone="Europe/Paris", task={"task_type": "echo"}
    )
    paused = client.schedules.pause(name)
    assert paused.paused and paused.next_fire_at is None
    assert client.schedules.pause(name).paused  # pausing a paused one answers it
    schedule, task = client.schedules.trigger(name)  # a paused schedule still triggers
    assert schedule.fire_count == 1 and schedule.last_task_id == task.task_id
    assert client.wait_for_task(task.task_id, timeout=30).status == "COMPLETED"
    resumed = client.schedules.resume(name)
    assert not resumed.paused and resumed.next_fire_at is not None
    assert name in [s.name for s in client.schedules.list()]
    client.schedules.delete(name)
    with pytest.raises(NotFoundError) as caught:
        client.schedules.get(name)
    assert caught.value.reason == "SCHEDULE_NOT_FOUND"
    with pytest.raises(NotFoundError):
        client.schedules.delete(name)
    assert client.get_task(task.task_id).task_id == task.task_id  # its tasks stay


async def test_the_async_client_manages_schedules(server: ServerProcess) -> None:
    name = unique("async")
    async with server.async_client(timeout=30) as api:
        created = await api.schedules.create(
            name, interval_seconds=3600, task={"text": "Hourly.", "priority": 8}
        )
        assert created.task == {"text": "Hourly.", "priority": 8}
        assert (await api.schedules.pause(name)).paused
        assert not (await api.schedules.resume(name)).paused
        schedule, task = await api.schedules.trigger(name)
        assert schedule.last_task_id == task.task_id and task.priority == 8
        assert name in [s.name for s in await api.schedules.list()]
        assert (await api.schedules.get(name)).fire_count == 1
        await api.schedules.delete(name)
        with pytest.raises(NotFoundError):
            await api.schedules.get(name)


def test_a_name_is_taken_once_per_tenant(client: Client) -> None:
    name = unique("twice")
    client.schedules.create(name, interval_seconds=3600, task={"text": "a"})
    with pytest.raises(ConflictError) as caught:
        client.schedules.create(name, interval_seconds=3600, task={"text": "a"})
    assert caught.value.reason == "SCHEDULE_EXISTS"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": "* * *"}, "cron"),
        ({"cron": "99 * * * *"}, "cron"),
        ({"cron": "* * * * *", "timezone": "Europe/Atlantis"}, "timezone"),
        ({"cron": "* * * * *", "interval_seconds": 60}, "interval_seconds"),
        ({}, "cron"),
        ({"interval_seconds": 0.2}, "interval_seconds"),
        ({"interval_seconds": 60, "catch_up": "all"}, "catch_up"),
        ({"interval_seconds": 60, "task": {"task_type": "no-such-type"}}, "task.task_type"),
        ({"interval_seconds": 60, "task": {"text": "x" * 4001}}, "task.text"),
        ({"interval_seconds": 60, "task": {"text": "a", "priority": 42}}, "task.priority"),
        ({"interval_seconds": 60, "task": {"text": "a", "request_id": "k"}}, "task.request_id"),
        (
            {"interval_seconds": 60, "task": {"text": "a", "run_at": "2030-01-01T00:00:00Z"}},
            "task.run_at",
        ),
        (
            {"interval_seconds": 60, "task": {"text": "a", "concurrency_limit": 3}},
            "task.concurrency_limit",
        ),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    server: ServerProcess, fields: dict[str, object], field: str
) -> None:
    request = pb.CreateScheduleRequest(name=unique("bad"))
    task = fields.pop("task", {"text": "a"})
    assert isinstance(task, dict)
    json_format.ParseDict(task, request.task)
    for key, value in fields.items():
        setattr(request, key, value)
    with (
        grpc.insecure_channel(server.grpc_addr) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        pb_grpc.ScheduleServiceStub(channel).CreateSchedule(request, timeout=10)
    error = from_rpc_error(caught.value)
    assert isinstance(error, InvalidArgumentError), error
    assert field in [v.field for v in error.field_violations], error


def test_the_cli_manages_schedules(server: ServerProcess) -> None:
    name = unique("cli")
    created = taskorch(
        server,
        "schedules",
        "create",
        name,
        "--cron",
        "*/10 * * * *",
        "--timezone",
        "America/New_York",
        "--task",
        '{"task_type": "echo"}',
        "--json",
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["cron"] == "*/10 * * * *"
    listed = taskorch(server, "schedules", "list")
    assert listed.returncode == 0 and name in listed.stdout, listed.stdout
    paused = taskorch(server, "schedules", "pause", name, "--json")
    assert paused.returncode == 0 and json.loads(paused.stdout)["paused"], paused.stderr
    triggered = taskorch(server, "schedules", "trigger", name, "--json")
    assert triggered.returncode == 0, triggered.stderr
    assert json.loads(triggered.stdout)["schedule"]["fire_count"] == 1
    assert taskorch(server, "schedules", "delete", name).returncode == 0
    missing = taskorch(server, "schedules", "get", name)
    assert missing.returncode == 2 and "SCHEDULE_NOT_FOUND" in missing.stderr
    bad = taskorch(server, "schedules", "create", name, "--every", "0.1", "--task", '{"text":"a"}')
    assert bad.returncode == 2 and "interval_seconds" in bad.stderr


INTERVAL = 8.0


@pytest.mark.parametrize("catch_up", ["one", "none"])
def test_a_schedule_survives_a_restart_and_its_missed_slot_follows_catch_up(
    server_factory: ServerFactory, catch_up: str
) -> None:
    first = server_factory()
    with first.client(timeout=30) as api:
        created = api.schedules.create(
            "restart", interval_seconds=INTERVAL, task={"task_type": "echo"}, catch_up=catch_up
        )
    assert first.stop() == 0
    assert created.next_fire_at is not None
    # The first slot passes while no server runs.
    time.sleep(max(0.0, (created.next_fire_at - datetime.now(UTC)).total_seconds() + 0.3))
    restarted_at = datetime.now(UTC)
    first.start()
    healthy_at = datetime.now(UTC)
    with first.client(timeout=30) as api:
        if catch_up == "one":
            # Run once, as soon as the server is up, for the latest missed slot (a slow
            # start-up may have missed more than one).
            shown = wait_for(api, "restart", lambda s: s.last_task_id != "", timeout=5)
            assert shown.fire_count == 1 and shown.last_fired_at is not None
            assert created.next_fire_at <= shown.last_fired_at < healthy_at + timedelta(seconds=1)
        else:
            # Skipped: the first firing is for a slot after the restart.
            shown = wait_for(api, "restart", lambda s: s.last_task_id != "", timeout=INTERVAL + 5)
            assert shown.last_fired_at is not None and shown.last_fired_at > restarted_at
            assert shown.fire_count == 1
        assert api.wait_for_task(shown.last_task_id, timeout=30).status == "COMPLETED"
