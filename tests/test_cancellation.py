"""A cancellation that arrives in the same loop turn as the end of a wait is never lost.

On Python 3.11, ``asyncio.wait_for`` returns the inner result instead of raising when its
task is cancelled while the inner awaitable completes (CPython gh-86296), so a shutdown's
``task.cancel()`` could be swallowed: the health loop then ran forever and ``stop`` waited on
it with the gRPC server still up (issue 24), and a watch stream whose cancel met an event kept
streaming. Each test cancels a waiter in exactly that turn and expects it to end cancelled.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from taskorch.config import Settings
from taskorch.events.bus import EventBus
from taskorch.events.hub import WorkSignal
from taskorch.server.app import TaskorchServer
from taskorch.server.health import HealthReporter


async def _ends_cancelled(task: asyncio.Task[Any]) -> None:
    """The task ends within a second, cancelled (not with a value)."""
    done, _ = await asyncio.wait({task}, timeout=1.0)
    assert done, "the cancelled task is still running"
    assert task.cancelled(), f"the cancel was swallowed: the task returned {task.result()!r}"


async def _waiting(task: asyncio.Task[Any]) -> None:
    """Lets ``task`` run until it waits."""
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()


@pytest.mark.parametrize("method", ["get", "wait"])
async def test_a_watch_cancelled_as_its_event_arrives_stops(method: str) -> None:
    bus: EventBus[str] = EventBus()
    subscription = bus.subscribe("task")
    waiter = asyncio.create_task(getattr(subscription, method)(timeout=5.0))
    await _waiting(waiter)
    bus.publish("task", "an event")  # the server publishes...
    waiter.cancel()  # ...as the shutdown cancels the stream, in the same turn
    await _ends_cancelled(waiter)


async def test_a_taker_cancelled_as_work_is_signalled_stops() -> None:
    signal = WorkSignal()
    waiter = asyncio.create_task(signal.wait(5.0, signal.ticket()))
    await _waiting(waiter)
    signal.notify()
    waiter.cancel()
    await _ends_cancelled(waiter)


class _PingThenCancel:
    """A database whose ping answers in the turn the health loop is cancelled."""

    def __init__(self) -> None:
        self.runner: asyncio.Task[None] | None = None
        self.pings = 0

    async def ping(self) -> None:
        self.pings += 1
        await asyncio.sleep(0)
        assert self.runner is not None
        self.runner.cancel()  # shutdown cancels the loop; the ping answers in this turn


class _Servicer:
    async def set(self, service: str, status: Any) -> None:
        return None


async def test_the_health_loop_cancelled_as_a_ping_answers_stops() -> None:
    db = _PingThenCancel()
    # A long interval: the ping never meets its own timeout, even on a loaded machine.
    reporter = HealthReporter(_Servicer(), db.ping, [], interval=5.0)  # type: ignore[arg-type]
    db.runner = asyncio.create_task(reporter.run())
    await _ends_cancelled(db.runner)
    assert db.pings == 1


async def test_a_sigterm_that_meets_a_health_ping_stops_the_whole_server(tmp_path: Path) -> None:
    """The real server in this process: its database ping answers in the turn the shutdown
    cancels the health loop (as a slow ping would), then SIGTERM arrives."""
    settings = Settings(
        grpc_addr="127.0.0.1:0",
        metrics_addr="",
        database_url=f"sqlite:///{tmp_path / 'taskorch.db'}",
        models_dir=tmp_path / "models",
        gateway=False,
        workers=1,
        auth=frozenset(),
        drain_seconds=0,
    )
    server = TaskorchServer(settings)
    ping = server._health.ping
    pending: list[bool] = []

    async def ping_answering_at_shutdown() -> None:
        await ping()
        if server._background:  # started: answer once the shutdown begins
            pending.append(True)
            await server._stopped.wait()

    server._health.ping = ping_answering_at_shutdown  # what the health loop pings
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not pending:
            assert not serving.done()
            await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)
    done, _ = await asyncio.wait({serving}, timeout=10)
    assert done, "the server did not stop: a cancel was swallowed"
    assert serving.result() == 0
