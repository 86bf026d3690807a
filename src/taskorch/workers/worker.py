"""The worker loop: lease subtasks, run their handlers, heartbeat, report, and drain on stop.

One loop serves both the in-process workers of ``taskorch serve`` (a LocalWorkSource) and
remote ``taskorch worker`` processes (a gRPC source). It takes as many leases as it has free
slots in one call, so idle slots cost no polling and many workers do not stampede.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from taskorch.core.errors import InvalidArgument, LeaseLost, TaskorchError
from taskorch.core.model import JSON, Lease
from taskorch.core.scheduler import DEFAULT_LEASE_SECONDS, WorkerIdentity
from taskorch.workers.handlers import HandlerRegistry, Outcome, PermanentFailure, WorkContext
from taskorch.workers.source import WorkSource

log = structlog.get_logger(__name__)

T = TypeVar("T")

TAKE_WAIT_SECONDS = 20.0
CANCEL_GRACE_SECONDS = 1.0
MIN_PROGRESS_INTERVAL = 0.1


def default_worker_id(prefix: str) -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerStats:
    completed: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0


class _LeaseReporter:
    """Reports a running lease's progress and output; notices cancellation."""

    def __init__(self, worker: Worker, lease: Lease, ctx_cancel: Callable[[str], None]) -> None:
        self.worker = worker
        self.lease = lease
        self._cancel = ctx_cancel
        self._last_progress = 0.0

    async def progress(self, percent: float, message: str | None = None) -> None:
        now = time.monotonic()
        if now - self._last_progress < MIN_PROGRESS_INTERVAL and percent < 100:
            return  # coalesce bursts; heartbeats carry the latest anyway
        self._last_progress = now
        answer = await self.worker.source.heartbeat(
            self.lease,
            lease_seconds=self.worker.lease_seconds,
            progress=max(0.0, min(100.0, percent)),
            message=message,
        )
        if answer.cancelled:
            self._cancel(answer.reason or "cancelled")

    async def output(self, delta: str | None = None, data: JSON | None = None) -> None:
        if not await self.worker.source.output(self.lease, delta=delta, data=data):
            self._cancel("cancelled")


class Worker:
    """Runs handlers for the subtask kinds in ``handlers``, up to ``concurrency`` at once.

    Args:
        source: where work comes from.
        handlers: the kinds this worker runs.
        worker_id: unique name; in-process workers use ``local-HOST-PID``.
        concurrency: subtasks run at once.
        lease_seconds: lease length; heartbeats renew it every third of it.
        models: only take inference work for these models (empty: any).
        tenant_ids: only take work of these tenants (None: any the credentials allow).
    """

    def __init__(
        self,
        source: WorkSource,
        handlers: HandlerRegistry,
        *,
        worker_id: str,
        concurrency: int = 1,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        models: tuple[str, ...] = (),
        tenant_ids: tuple[str, ...] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.source = source
        self.handlers = handlers
        self.identity = WorkerIdentity(
            worker_id=worker_id, kinds=handlers.kinds(), models=models, tenant_ids=tenant_ids
        )
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.stats = WorkerStats()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self.on_error: Callable[[BaseException], Awaitable[None]] | None = None

    @property
    def worker_id(self) -> str:
        return self.identity.worker_id

    @property
    def busy(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self.run(), name=f"worker {self.worker_id}")

    @property
    def alive(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    async def run(self) -> None:
        """Takes and runs work until :meth:`stop`."""
        log.info(
            "worker started",
            worker_id=self.worker_id,
            kinds=list(self.identity.kinds),
            concurrency=self.concurrency,
        )
        backoff = 0.5
        while not self._stopping.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._slot_freed.clear()
                await self._until(self._slot_freed)
                continue
            try:
                leases = await self._interruptible(
                    self.source.take(
                        self.identity,
                        limit=free,
                        lease_seconds=self.lease_seconds,
                        wait_seconds=TAKE_WAIT_SECONDS,
                    )
                )
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("taking work failed; retrying", error=str(exc), retry_in=backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if leases is None:
                break  # stopping
            for lease in leases:
                key = lease.subtask.subtask_id
                self._running[key] = asyncio.create_task(self._run(lease), name=f"subtask {key}")

    async def stop(self, drain_seconds: float = 30.0) -> None:
        """Stops taking work; lets running work finish for ``drain_seconds``, then releases it."""
        self._stopping.set()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        # No new work from here on: work handed back below must not come straight back.
        await self.source.stop_taking()
        running = list(self._running.values())
        if running:
            log.info("draining running work", count=len(running), seconds=drain_seconds)
            _, pending = await asyncio.wait(running, timeout=drain_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)
        log.info("worker stopped", worker_id=self.worker_id, **vars(self.stats))

    # -- one lease -----------------------------------------------------------------------------

    async def _run(self, lease: Lease) -> None:
        handler = self.handlers.get(lease.subtask.kind)
        reason: list[str] = []
        handler_task: asyncio.Task[Outcome] | None = None

        def cancel(why: str) -> None:
            if reason:
                return
            reason.append(why)
            ctx.cancelled.set()
            # A handler that watches ctx.cancelled stops by itself and keeps its partial
            # output (generation does); any other is cancelled after a short grace.
            if handler_task is not None:
                asyncio.get_running_loop().call_later(CANCEL_GRACE_SECONDS, handler_task.cancel)

        ctx = WorkContext(lease, _LeaseReporter(self, lease, cancel), self.worker_id)
        heartbeat = asyncio.create_task(self._heartbeats(lease, cancel))
        watcher = asyncio.create_task(self._watch_cancel(lease, cancel))
        bound = structlog.contextvars.bound_contextvars(
            task_id=lease.subtask.task_id, subtask_id=lease.subtask.subtask_id
        )
        try:
            with bound:
                if handler is None:  # cannot happen: we only take kinds we have
                    raise PermanentFailure(f"no handler for kind {lease.subtask.kind!r}")
                handler_task = asyncio.create_task(handler(ctx))
                timeout = lease.subtask.timeout_seconds
                async with asyncio.timeout(timeout):
                    outcome = await handler_task
                await self.source.complete(lease, outcome.result, outcome.resource_usage)
                self.stats.completed += 1
        except asyncio.CancelledError:
            if reason:  # the task was cancelled or the lease lost: nothing to report
                log.info("stopped running work", reason=reason[0])
            elif self._stopping.is_set():  # draining ran out of time: hand the work back
                await self._give_back(lease)
                raise
            else:
                raise
        except TimeoutError:
            await self._report_failure(
                lease, f"timed out after {lease.subtask.timeout_seconds:g} s", "TIMEOUT", True
            )
        except LeaseLost as exc:
            if reason:  # cancelled while finishing: the result is not wanted
                log.info("stopped running work", reason=reason[0])
            else:
                self.stats.lost += 1
                log.warning("lease lost; result discarded", error=str(exc))
        except PermanentFailure as exc:
            await self._report_failure(lease, str(exc), exc.error_code, False)
        except InvalidArgument as exc:
            await self._report_failure(lease, str(exc), exc.reason, False)
        except TaskorchError as exc:
            await self._report_failure(lease, str(exc), exc.reason, True)
        except Exception as exc:
            log.exception("handler failed", kind=lease.subtask.kind)
            await self._report_failure(
                lease, f"{type(exc).__name__}: {exc}", "INTERNAL_ERROR", True
            )
        finally:
            heartbeat.cancel()
            watcher.cancel()
            self._running.pop(lease.subtask.subtask_id, None)
            self._slot_freed.set()

    async def _report_failure(self, lease: Lease, error: str, code: str, retryable: bool) -> None:
        self.stats.failed += 1
        try:
            await self.source.fail(lease, error, error_code=code, retryable=retryable)
        except LeaseLost:
            self.stats.lost += 1
        except Exception as exc:
            log.warning("could not report a failure; the lease will expire", error=str(exc))

    async def _give_back(self, lease: Lease) -> None:
        try:
            await asyncio.shield(self.source.release(lease, reason="worker shutting down"))
            self.stats.released += 1
        except Exception as exc:
            log.warning("could not hand work back; its lease will expire", error=str(exc))

    async def _heartbeats(self, lease: Lease, cancel: Callable[[str], None]) -> None:
        interval = self.lease_seconds / 3
        failures = 0
        while True:
            await asyncio.sleep(interval)
            try:
                answer = await self.source.heartbeat(lease, lease_seconds=self.lease_seconds)
                failures = 0
            except LeaseLost:
                cancel("lease lost")
                return
            except Exception as exc:
                failures += 1
                log.warning("heartbeat failed", error=str(exc), failures=failures)
                continue
            if answer.cancelled:
                cancel(answer.reason or "cancelled")
                return

    async def _watch_cancel(self, lease: Lease, cancel: Callable[[str], None]) -> None:
        await self.source.wait_cancelled(lease)
        cancel("cancelled")

    # -- waiting that stop() interrupts --------------------------------------------------------

    async def _until(self, event: asyncio.Event) -> None:
        await self._interruptible(event.wait())

    async def _sleep(self, seconds: float) -> None:
        await self._interruptible(asyncio.sleep(seconds))

    async def _interruptible(self, awaitable: Awaitable[T]) -> T | None:
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            stop.cancel()
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            leases = await work
            # A take that completed while we were stopping: hand its leases back.
            if isinstance(leases, list):
                for lease in leases:
                    if isinstance(lease, Lease):
                        await self._give_back(lease)
        return None
