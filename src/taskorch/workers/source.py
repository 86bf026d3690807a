"""Where a worker gets its work: the scheduler in this process, or a server over gRPC.

Both sources offer the same operations, so the in-process workers of ``taskorch serve`` and
remote ``taskorch worker`` processes share one worker loop (workers/worker.py).
"""

from __future__ import annotations

from typing import Protocol

from taskorch.core.hub import EventHub
from taskorch.core.model import JSON, Lease, ResourceUsage
from taskorch.core.scheduler import HeartbeatAnswer, Scheduler, WorkerIdentity


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

    async def wait_cancelled(self, lease: Lease) -> None:
        """Returns when the lease's task ends early (cancelled); may never return."""
        ...

    async def stop_taking(self) -> None:
        """No more work will be taken (hand back any taken but not started)."""
        ...


class LocalWorkSource:
    """Work from the scheduler of this process; cancellation arrives through the event hub."""

    def __init__(self, scheduler: Scheduler, hub: EventHub) -> None:
        self.scheduler = scheduler
        self.hub = hub

    async def take(
        self, worker: WorkerIdentity, *, limit: int, lease_seconds: float, wait_seconds: float
    ) -> list[Lease]:
        return await self.scheduler.take(
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
        return await self.scheduler.heartbeat(
            lease.subtask.subtask_id,
            lease.lease_id,
            lease_seconds=lease_seconds,
            progress=progress,
            message=message,
        )

    async def output(self, lease: Lease, *, delta: str | None, data: JSON | None) -> bool:
        return await self.scheduler.report_output(
            lease.subtask.subtask_id, lease.lease_id, delta=delta, data=data
        )

    async def complete(
        self, lease: Lease, result: JSON, resource_usage: ResourceUsage | None
    ) -> None:
        await self.scheduler.complete(
            lease.subtask.subtask_id, lease.lease_id, result, resource_usage=resource_usage
        )

    async def fail(self, lease: Lease, error: str, *, error_code: str, retryable: bool) -> None:
        await self.scheduler.fail(
            lease.subtask.subtask_id,
            lease.lease_id,
            error,
            error_code=error_code,
            retryable=retryable,
        )

    async def release(self, lease: Lease, *, reason: str) -> None:
        await self.scheduler.release(lease.subtask.subtask_id, lease.lease_id, reason=reason)

    async def stop_taking(self) -> None:
        return None  # takes are synchronous calls: nothing is on its way

    async def wait_cancelled(self, lease: Lease) -> None:
        async with self.hub.subscribe(lease.subtask.task_id) as subscription:
            while True:
                try:
                    event = await subscription.get()
                except Exception:  # lagged: keep listening; heartbeats also report cancels
                    continue
                if event is not None and event.is_terminal:
                    return
