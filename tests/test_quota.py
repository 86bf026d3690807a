"""The active-task quota is exact per tenant under concurrent creates and batches, on one
server (SQLite, PostgreSQL) and across two replicas of one PostgreSQL database (issue 22
item 5: with a quota of 20 one replica admitted 23, two replicas 28, concurrent batches 160)."""

from __future__ import annotations

import asyncio

import pytest

from taskorch.client import AsyncClient, ResourceExhaustedError
from tests import databases
from tests.conftest import ServerFactory

QUOTA = 20


async def _flood(clients: list[AsyncClient]) -> int:
    """120 single creates and 24 batches of 5 at once, spread over ``clients``; returns how
    many tasks were admitted."""

    async def one(n: int) -> int:
        try:
            await clients[n % len(clients)].create_task(task_type="echo", input_data={"n": n})
        except ResourceExhaustedError:
            return 0
        return 1

    async def batch(n: int) -> int:
        requests = [{"task_type": "echo", "input_data": {"b": n, "i": i}} for i in range(5)]
        try:
            created = await clients[n % len(clients)].create_tasks(requests)
        except ResourceExhaustedError:
            return 0
        return len(created)

    counts = await asyncio.gather(*(one(n) for n in range(120)), *(batch(n) for n in range(24)))
    return sum(counts)


@pytest.mark.parametrize("replicas", [1, 2])
def test_the_active_task_quota_is_exact_under_concurrent_creates_and_batches(
    server_factory: ServerFactory, replicas: int
) -> None:
    if replicas > 1 and databases.backend() != "postgresql":
        pytest.skip("replicas share a PostgreSQL database (one server per SQLite file)")
    servers = [
        server_factory("--workers", "0", "--max-active-tasks", str(QUOTA)) for _ in range(replicas)
    ]

    async def run() -> tuple[int, int]:
        clients = [s.async_client(timeout=60) for s in servers]
        try:
            admitted = await _flood(clients)
            active = (await clients[0].list_tasks(status="PENDING", limit=1)).total
        finally:
            for client in clients:
                await client.close()
        return admitted, active

    admitted, active = asyncio.run(run())
    assert (admitted, active) == (QUOTA, QUOTA)
