"""Where a worker gets its work: the task engine in this process, or a server over gRPC.

Both sources offer the same operations, so the in-process workers of ``taskorch serve`` and
remote ``taskorch worker`` processes share one worker loop (workers/worker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from taskorch.core.engine import HeartbeatAnswer, TaskEngine, WorkerIdentity
from taskorch.core.model import JSON, Lease, ResourceUsage
from taskorch.events.bus import SubscriptionLagged
from taskorch.events.hub import EventHub


class WorkSource(Protocol):
    async def take(
        self, worker: WorkerIdentity, *, limit: int, lease_seconds: float, wait_seconds: float
    ) -> list[Lease]: ...

    async def heartbeat(
        self,
        lease: Lease,
        *,
        lease_seconds: float,
        progress: float | None = None,
        message: str | None = None,
    ) -> HeartbeatAnswer: ...

    async def output(self, lease: Lease, *, delta: str | None, data: JSON | None) -> bool: ...

    async def complete(
        self, lease: Lease, result: JSON, resource_usage: ResourceUsage | None
    ) -> None: ...

    async def fail(self, lease: Lease, error: str, *, error_code: str, retryable: bool) -> None: ...

    async def release(self, lease: Lease, *, reason: str) -> None: ...

    def on_stop(self, worker_id: str, notice: Callable[[str, str], None]) -> None:
        """Calls ``notice(subtask_id, reason)`` when a subtask this worker runs must stop
        (its task was cancelled or failed)."""
        ...

    async def stop_taking(self) -> None:
        """No more work will be taken (hand back any taken but not started)."""
        ...


class LocalWorkSource:
    """Work from the task engine of this process; stop notices come through the event hub."""

    def __init__(self, engine: TaskEngine, hub: EventHub) -> None:
        self.engine = engine
        self.hub = hub
        self._notices: asyncio.Task[None] | None = None

    async def take(
        self, worker: WorkerIdentity, *, limit: int, lease_seconds: float, wait_seconds: float
    ) -> list[Lease]:
        return await self.engine.take(
            worker, limit=limit, lease_seconds=lease_seconds, wait_seconds=wait_seconds
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
        subscription = self.hub.stops.subscribe(worker_id)

        async def forward() -> None:
            with subscription:
                while True:
                    try:
                        stop = await subscription.get()
                    except SubscriptionLagged:
                        continue  # heartbeats also tell of cancellation
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
