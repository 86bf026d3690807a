"""A WebSocket on one PostgreSQL replica follows all of the tenant's tasks, including the
changes a worker reports through another replica (relayed by LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import websockets

from tests import databases
from tests.conftest import ServerFactory

pytestmark = pytest.mark.xdist_group("postgres-replicas")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if (reason := databases.postgres_reachable()) is not None:
        pytest.skip(reason)
    url = databases.create_postgres_database()
    yield url
    databases.discard(url)


async def test_all_tasks_subscribers_see_changes_made_through_another_replica(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    runner = server_factory("--workers", "2", database_url=postgres_url)
    front = server_factory("--workers", "0", database_url=postgres_url, gateway=True)
    url = f"ws://127.0.0.1:{front.http_port}/ws/tasks"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"action": "subscribe", "task_id": "*"}))
        assert json.loads(await ws.recv()) == {"type": "subscribed", "task_id": "*"}
        async with runner.async_client() as client:
            task = await client.create_task(
                task_type="echo", input_data={"delay_seconds": 0.5, "progress_steps": 2}
            )
        seen = []
        while True:
            update = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if update["type"] == "update" and update["task_id"] == task.task_id:
                seen.append(update["event"])
                if update["status"] == "COMPLETED":
                    break
    assert "PROGRESS" in seen and seen[-1] == "STATUS_CHANGED", seen
