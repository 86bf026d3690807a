"""Crashes and outages under load: nothing acknowledged is lost, nothing completes twice."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskorch.client import AsyncClient, UnavailableError
from tests import databases
from tests.conftest import ServerFactory

pytestmark = pytest.mark.xdist_group("durability")

BURST = 2000


async def _burst(client: AsyncClient, count: int, acknowledged: list[str]) -> None:
    """Submits ``count`` tasks from 32 loops; keeps the ids the server acknowledged."""
    submitted = 0

    async def submitter() -> None:
        nonlocal submitted
        while submitted < count:
            submitted += 1
            number = submitted
            try:
                task = await client.create_task(text=f"burst task {number}")
            except Exception:
                return  # the server went away: this one was not acknowledged
            acknowledged.append(task.task_id)

    await asyncio.gather(*(submitter() for _ in range(32)))


def _health(grpc_addr: str) -> int:
    """The server's grpc.health.v1 status (SERVING, NOT_SERVING)."""
    with grpc.insecure_channel(grpc_addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_in_a_burst_keeps_every_acknowledged_task(
    server_factory: ServerFactory, tmp_path, backend: str
) -> None:
    url = databases.new_database(tmp_path, backend)
    try:
        server = server_factory("--workers", "4", database_url=url)
        acknowledged: list[str] = []

        async def burst_then_kill() -> None:
            async with server.async_client(timeout=10) as client:
                burst = asyncio.create_task(_burst(client, BURST, acknowledged))
                while len(acknowledged) < BURST // 2 and not burst.done():
                    await asyncio.sleep(0.01)
                server.kill()
                await burst

        asyncio.run(burst_then_kill())
        assert BURST // 2 <= len(acknowledged) < BURST
        server.start()

        async def all_done() -> list[str]:
            async with server.async_client(timeout=60) as client:
                done = await asyncio.gather(
                    *(client.wait_for_task(task_id, timeout=180) for task_id in acknowledged)
                )
            return [t.status for t in done]

        assert set(asyncio.run(all_done())) == {"COMPLETED"}
        # A result written once per task: one completion event and one completed subtask each.
        twice = databases.fetch(
            url,
            "SELECT task_id FROM task_events WHERE type = 2 AND status = 3 "
            "GROUP BY task_id HAVING COUNT(*) > 1",
        )
        assert twice == []
        subtasks = databases.fetch(url, "SELECT COUNT(*) FROM subtasks WHERE status = 3")
        stored = databases.fetch(url, "SELECT COUNT(*) FROM tasks")
        assert subtasks[0][0] == stored[0][0] >= len(acknowledged)
    finally:
        databases.discard(url)


def test_a_database_outage_is_reported_and_survived(
    server_factory: ServerFactory, tmp_path
) -> None:
    url = databases.new_database(tmp_path, "postgresql")
    name = url.rsplit("/", 1)[-1]
    try:
        server = server_factory("--workers", "2", database_url=url)
        acknowledged: list[str] = []
        refused = 0

        async def under_load() -> None:
            nonlocal refused
            async with server.async_client(timeout=10) as client:
                deadline = time.monotonic() + 12
                outage_started = False
                while time.monotonic() < deadline:
                    elapsed = 12 - (deadline - time.monotonic())
                    if elapsed > 2 and not outage_started:
                        outage_started = True
                        databases.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                        databases.admin(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            f"WHERE datname = '{name}'"
                        )
                    if elapsed > 7 and outage_started:
                        databases.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
                        outage_started = None  # type: ignore[assignment]
                    try:
                        task = await client.create_task(text="during an outage")
                        acknowledged.append(task.task_id)
                    except UnavailableError:
                        refused += 1
                    await asyncio.sleep(0.02)

        def health() -> int:
            return _health(server.grpc_addr)

        asyncio.run(under_load())
        assert refused > 0  # the outage was reported as UNAVAILABLE, not hidden
        deadline = time.monotonic() + 30
        while health() != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health() == health_pb2.HealthCheckResponse.SERVING

        async def all_done() -> set[str]:
            async with server.async_client(timeout=60) as client:
                done = await asyncio.gather(
                    *(client.wait_for_task(task_id, timeout=120) for task_id in acknowledged)
                )
                fresh = await client.create_task(text="after the outage")
                assert (await client.wait_for_task(fresh.task_id, timeout=60)).status == "COMPLETED"
            return {t.status for t in done}

        assert asyncio.run(all_done()) == {"COMPLETED"}
        assert "unhealthy" in server.logs()
    finally:
        databases.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        databases.discard(url)


def test_a_postgresql_crash_and_restart_under_load_is_survived(
    server_factory: ServerFactory,
) -> None:
    """The database server itself goes down (an immediate stop: a crash, recovered from the
    WAL) while clients submit, and comes back: the service says it is unavailable meanwhile,
    then recovers by itself, and every task it acknowledged completes exactly once."""
    cluster = databases.PrivatePostgres()
    try:
        cluster.start()
        server = server_factory("--workers", "4", database_url=cluster.url)
        acknowledged: list[str] = []
        refused = 0
        health_during_outage: set[int] = set()

        def health() -> int:
            return _health(server.grpc_addr)

        async def under_load() -> None:
            async with server.async_client(timeout=10) as client:
                stop = time.monotonic() + 14

                async def submitter() -> None:
                    nonlocal refused
                    while time.monotonic() < stop:
                        try:
                            task = await client.create_task(text="while the database restarts")
                            acknowledged.append(task.task_id)
                        except UnavailableError:
                            refused += 1
                        await asyncio.sleep(0.05)

                async def outage() -> None:
                    await asyncio.sleep(3)
                    await asyncio.to_thread(cluster.crash)
                    for _ in range(20):  # 4 s down
                        health_during_outage.add(await asyncio.to_thread(health))
                        await asyncio.sleep(0.2)
                    await asyncio.to_thread(cluster.start)

                await asyncio.gather(outage(), *(submitter() for _ in range(4)))

        asyncio.run(under_load())
        assert refused > 0  # reported as UNAVAILABLE while it was down, not hidden
        assert health_pb2.HealthCheckResponse.NOT_SERVING in health_during_outage
        deadline = time.monotonic() + 30
        while health() != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health() == health_pb2.HealthCheckResponse.SERVING

        async def all_done() -> list[str]:
            async with server.async_client(timeout=60) as client:
                done = await asyncio.gather(
                    *(client.wait_for_task(task_id, timeout=120) for task_id in acknowledged)
                )
                fresh = await client.create_task(text="after the restart")
                assert (await client.wait_for_task(fresh.task_id, timeout=60)).status == "COMPLETED"
            return [t.status for t in done]

        assert len(acknowledged) > 100
        assert set(asyncio.run(all_done())) == {"COMPLETED"}
        twice = databases.fetch(
            cluster.url,
            "SELECT task_id FROM task_events WHERE type = 2 AND status = 3 "
            "GROUP BY task_id HAVING COUNT(*) > 1",
        )
        assert twice == []
        server.stop()
    finally:
        cluster.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_completions_cut_short_by_a_kill_run_again_and_count_once(
    server_factory: ServerFactory, tmp_path, backend: str
) -> None:
    """Workers report completions in batches (many per transaction): a SIGKILL while
    batches of completions are on their way loses none of the work (its leases expire and it
    runs again) and counts none of it twice (one terminal event per task, gapless event
    sequences, counters equal to the rows)."""
    url = databases.new_database(tmp_path, backend)
    try:
        server = server_factory("--workers", "16", database_url=url)
        requests = [
            {"task_type": "echo", "input_data": {"delay_seconds": 0.02, "progress_steps": 1}}
            for _ in range(100)
        ]

        async def submit_then_kill() -> list[str]:
            async with server.async_client(timeout=30) as client:
                ids = []
                for _ in range(6):
                    ids += [t.task_id for t in await client.create_tasks(requests)]
                while (await client.list_tasks(status="completed", limit=1)).total < 150:
                    await asyncio.sleep(0.005)
            server.kill()  # completions keep arriving at this point
            return ids

        ids = asyncio.run(submit_then_kill())
        finished = databases.fetch(url, "SELECT COUNT(*) FROM tasks WHERE status = 3")[0][0]
        assert 150 <= finished < len(ids)  # cut in the middle of the work
        server.start()

        async def all_done() -> list[str]:
            async with server.async_client(timeout=60) as client:
                done = await asyncio.gather(
                    *(client.wait_for_task(task_id, timeout=120) for task_id in ids)
                )
            return [t.status for t in done]

        assert set(asyncio.run(all_done())) == {"COMPLETED"}
        twice = databases.fetch(
            url,
            "SELECT task_id FROM task_events WHERE type = 2 AND status = 3 "
            "GROUP BY task_id HAVING COUNT(*) > 1",
        )
        assert twice == []
        gaps = databases.fetch(
            url,
            "SELECT task_id FROM task_events GROUP BY task_id "
            "HAVING COUNT(*) <> MAX(sequence) OR MIN(sequence) <> 1",
        )
        assert gaps == []
        rows = dict(databases.fetch(url, "SELECT status, COUNT(*) FROM tasks GROUP BY status"))
        counted = dict(
            databases.fetch(
                url,
                "SELECT status, SUM(n) FROM (SELECT status, count AS n FROM task_counts "
                "UNION ALL SELECT status, delta AS n FROM task_count_deltas) AS c "
                "GROUP BY status HAVING SUM(n) <> 0",
            )
        )
        assert {int(k): int(v) for k, v in counted.items()} == {
            int(k): int(v) for k, v in rows.items()
        }
        assert rows == {3: len(ids)}
    finally:
        databases.discard(url)
