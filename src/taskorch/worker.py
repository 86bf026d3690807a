"""The taskorch worker SDK: run your own Python functions as taskorch work, anywhere.

    from taskorch.worker import Worker

    worker = Worker("taskorch.example.com:50051", concurrency=4, api_key="...")

    @worker.handler("resize-image")
    async def resize(ctx):                      # or a plain (blocking) def: runs on a thread
        await ctx.progress(50, "half way")       # extends the lease too
        if ctx.cancelled.is_set():
            return None
        return {"width": 128, "height": 128}    # the subtask's result

    worker.run()   # until SIGTERM/Ctrl-C: then finishes or hands back running work

A handler receives a :class:`WorkContext` (``input``, ``dependency_results``, ``attempt``,
``progress()``, ``output()`` for streamed partial output, ``cancelled``). Raising
:class:`PermanentFailure` fails the task at once; any other exception is retried with
backoff until the task's ``max_attempts``. The in-process workers of ``taskorch serve``
run the same loop.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence

import grpc

from taskorch.domain.leases import DEFAULT_LEASE_SECONDS
from taskorch.workers.handlers import (
    HandlerFn,
    HandlerRegistry,
    Outcome,
    PermanentFailure,
    WorkContext,
)
from taskorch.workers.loop import RUN_AHEAD_PER_SLOT, WorkerLoop, default_worker_id
from taskorch.workers.remote import GrpcWorkSource

__all__ = ["Outcome", "PermanentFailure", "WorkContext", "Worker"]


class Worker:
    """A remote worker: takes subtasks of its handlers' kinds from a taskorch server.

    Args:
        server: ``HOST:PORT`` of the gRPC API (or of the gateway, which passes gRPC through).
        concurrency: subtasks run at once.
        run_ahead: while the work is short (turned around within 0.05 s), up to this many
            more subtasks are kept in hand, so a slot that frees starts the next at once
            instead of waiting for its report to commit (default: four per slot; 0: never).
            Long work is not held back this way.
        worker_id: a stable name (default ``worker-HOST-PID``).
        api_key: sent as ``x-api-key``; ``bearer_token`` as ``authorization: Bearer``.
        models: for inference work, only these models (default: any).
        lease_seconds: lease length; heartbeats renew it every third of it.
        drain_seconds: on stop, how long running work may finish before it is handed back.
    """

    def __init__(
        self,
        server: str = "127.0.0.1:50051",
        *,
        concurrency: int = 1,
        run_ahead: int | None = None,
        worker_id: str | None = None,
        api_key: str | None = None,
        bearer_token: str | None = None,
        models: Sequence[str] = (),
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        drain_seconds: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        handlers: HandlerRegistry | None = None,
    ) -> None:
        self.server = server
        self.concurrency = concurrency
        self.run_ahead = RUN_AHEAD_PER_SLOT * concurrency if run_ahead is None else run_ahead
        self.worker_id = worker_id or default_worker_id("worker")
        self.models = tuple(models)
        self.lease_seconds = lease_seconds
        self.drain_seconds = drain_seconds
        self.credentials = credentials
        self.handlers = handlers or HandlerRegistry()
        metadata = []
        if api_key:
            metadata.append(("x-api-key", api_key))
        if bearer_token:
            metadata.append(("authorization", f"Bearer {bearer_token}"))
        self.metadata = tuple(metadata)
        self._loop: WorkerLoop | None = None
        self._hurried = False

    def hurry(self) -> None:
        """Cuts the drain short: running work is handed back now (a second Ctrl-C)."""
        self._hurried = True
        if self._loop is not None:
            self._loop.hurry()

    def handler(self, kind: str) -> Callable[[HandlerFn], HandlerFn]:
        """Registers the decorated function as the handler of ``kind``."""

        def register(fn: HandlerFn) -> HandlerFn:
            self.handlers.register(kind, fn, description=(fn.__doc__ or "").strip())
            return fn

        return register

    def add_handler(self, kind: str, fn: HandlerFn) -> None:
        self.handlers.register(kind, fn)

    async def run_async(self, stop: asyncio.Event | None = None) -> None:
        """Works until ``stop`` is set, then drains and returns."""
        if not self.handlers.kinds():
            raise ValueError("register at least one handler before running the worker")
        source = GrpcWorkSource(
            self.server,
            capacity=self.concurrency,
            run_ahead=self.run_ahead,
            metadata=self.metadata,
            credentials=self.credentials,
        )
        loop = WorkerLoop(
            source,
            self.handlers,
            worker_id=self.worker_id,
            concurrency=self.concurrency,
            run_ahead=self.run_ahead,
            lease_seconds=self.lease_seconds,
            models=self.models,
        )
        self._loop = loop
        if self._hurried:
            loop.hurry()
        loop.start()
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            await loop.stop(self.drain_seconds)
            await source.close()
            self._loop = None

    def run(self) -> None:
        """Works until SIGTERM or SIGINT (Ctrl-C), then shuts down gracefully."""

        async def main() -> None:
            stop = asyncio.Event()
            stop_on_signals(self, stop)
            await self.run_async(stop)

        asyncio.run(main())


def stop_on_signals(worker: Worker, stop: asyncio.Event) -> None:
    """SIGTERM or SIGINT sets ``stop`` (drain, then exit); a second one cuts the drain short.

    Call it on the running event loop.
    """

    def on_signal() -> None:
        if stop.is_set():
            worker.hurry()
        else:
            stop.set()

    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, on_signal)
