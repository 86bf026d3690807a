"""Work for the in-process workers of ``taskorch serve``: the task engine and event hub of
this process behind the operations of a work source (workers/source.py's WorkSource).

The worker loop (workers/) knows only that protocol, so a remote worker never loads the
engine, the store or SQLAlchemy; the server hands this source to its in-process workers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from taskorch.core.engine import TaskEngine
from taskorch.domain.leases import HeartbeatAnswer, WorkerIdentity
from taskorch.domain.values import JSON, Lease, ResourceUsage
from taskorch.events.hub import EventHub


class LocalWorkSource:
    """Work from the task engine of this process; stop notices come through the event hub."""

    def __init__(self, engine: TaskEngine, hub: EventHub) -> None:
        self.engine = engine
        self.hub = hub
        self._notices: asyncio.Task[None] | None = None

    async def take(
        self,
        worker: WorkerIdentity,
        *,
        limit: int,
        lease_seconds: float,
        wait_seconds: float,
        early: bool = False,
    ) -> list[Lease]:
        return await self.engine.take(
            worker,
            limit=limit,
            lease_seconds=lease_seconds,
            wait_seconds=wait_seconds,
            early=early,
        )

    async def heartbeat(
        self,
        lease: Lease,
        *,
        lease_seconds: float,
        progress: float | None = None,
        message: str | None = None,
    ) -> HeartbeatAnswer:
        return await self.engine.heartbeat(
            lease.subtask.subtask_id,
            lease.lease_id,
            lease_seconds=lease_seconds,
            progress=progress,
            message=message,
        )

    async def output(self, lease: Lease, *, delta: str | None, data: JSON | None) -> bool:
        return await self.engine.output(
            lease.subtask.subtask_id, lease.lease_id, delta=delta, data=data
        )

    async def complete(
        self, lease: Lease, result: JSON, resource_usage: ResourceUsage | None
    ) -> None:
        await self.engine.complete(
            lease.subtask.subtask_id, lease.lease_id, result, resource_usage=resource_usage
        )

    async def fail(self, lease: Lease, error: str, *, error_code: str, retryable: bool) -> None:
        await self.engine.fail(
            lease.subtask.subtask_id,
            lease.lease_id,
            error,
            error_code=error_code,
            retryable=retryable,
        )

    async def release(self, lease: Lease, *, reason: str) -> None:
        await self.engine.release(lease.subtask.subtask_id, lease.lease_id, reason=reason)

    async def stop_taking(self) -> None:
        return None  # takes are calls of the engine: nothing is on its way

    def on_stop(self, worker_id: str, notice: Callable[[str, str], None]) -> None:
        notices = self.engine.stop_notices(worker_id)

        async def forward() -> None:
            with notices:
                while True:
                    stop = await notices.next()
                    if stop is not None:
                        notice(stop.subtask_id, stop.reason)

        if self._notices is not None:
            self._notices.cancel()
        self._notices = asyncio.create_task(forward(), name=f"stop notices of {worker_id}")

    async def close(self) -> None:
        if self._notices is not None:
            self._notices.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._notices
