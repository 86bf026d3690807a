"""Where a worker gets its work: the task engine in this process, or a server over gRPC.

Both sources offer the same operations, so the in-process workers of ``taskorch serve`` and
remote ``taskorch worker`` processes share one worker loop (workers/loop.py). The remote
source is workers/remote.py; the in-process one is core/local_work.py, handed to the loop by
the server, so nothing here loads the task engine or the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from taskorch.domain.leases import HeartbeatAnswer, WorkerIdentity
from taskorch.domain.values import JSON, Lease, ResourceUsage


class WorkSource(Protocol):
    async def take(
        self,
        worker: WorkerIdentity,
        *,
        limit: int,
        lease_seconds: float,
        wait_seconds: float,
        early: bool = False,
    ) -> list[Lease]:
        """Leases up to ``limit`` subtasks, waiting up to ``wait_seconds`` for some.

        ``early``: the worker's runs are short, so the in-process source may hand work over
        before its lease commits, for the report to join that commit (TaskEngine.take); the
        remote source ignores it.
        """
        ...

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
