"""Two replicas on one PostgreSQL database fire each slot of a schedule once: both schedulers
see every due slot, and only the one whose conditional update moves next_fire_at wins it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from tests import databases
from tests.conftest import ServerFactory

pytestmark = pytest.mark.xdist_group("postgres-replicas")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url = databases.create_postgres_database()  # skips, saying why, without PostgreSQL
    yield url
    databases.discard(url)


def test_two_replicas_fire_each_slot_of_a_schedule_once(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    first = server_factory("--workers", "1", database_url=postgres_url)
    second = server_factory("--workers", "1", database_url=postgres_url)
    with first.client(timeout=30) as api, second.client(timeout=30) as other:
        created = api.schedules.create("tick", interval_seconds=1, task={"task_type": "echo"})
        deadline = time.monotonic() + 15
        while other.schedules.get("tick").fire_count < 6:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        shown = other.schedules.pause("tick")
    query = (
        "SELECT request_id FROM tasks WHERE request_id LIKE "
        f"'schedule:{created.schedule_id}:%' ORDER BY request_id"
    )
    # A firing claimed just before the pause creates its task just after it.
    deadline = time.monotonic() + 10
    while len(rows := databases.fetch(postgres_url, query)) < shown.fire_count:
        assert time.monotonic() < deadline, (len(rows), shown.fire_count)
        time.sleep(0.1)
    slots = [
        datetime.fromisoformat(str(row[0]).split(":", 2)[2].replace("Z", "+00:00")) for row in rows
    ]
    assert created.created_at is not None
    # Every slot from the first on, once each, and as many tasks as counted firings: no
    # replica created a task (or counted a firing) for a slot the other one had taken.
    assert slots == [created.created_at + timedelta(seconds=k) for k in range(1, len(slots) + 1)]
    assert len(slots) == shown.fire_count >= 6
    # Each firing logged once, by the replica that won its slot (the log line follows the
    # task's commit by a moment).
    deadline = time.monotonic() + 2
    while True:
        logs = first.logs() + second.logs()
        fired = logs.count('"event": "schedule fired"')
        if fired >= len(slots) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert fired == len(slots), fired
    assert "the firing created no task" not in logs
    assert '"level": "error"' not in logs
