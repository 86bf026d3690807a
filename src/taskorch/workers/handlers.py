"""What a worker runs: a handler per subtask kind, and the context a handler works in."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from taskorch.domain.values import JSON, Lease, ResourceUsage
from taskorch.workers.text_analysis import analyze


class PermanentFailure(Exception):
    """Raised by a handler when retrying cannot help (bad input): the task fails at once."""

    def __init__(self, message: str, *, error_code: str = "VALIDATION_ERROR") -> None:
        super().__init__(message)
        self.error_code = error_code


@dataclass(frozen=True)
class Outcome:
    """A handler's result, and what producing it cost."""

    result: JSON
    resource_usage: ResourceUsage | None = None


class Reporter(Protocol):
    async def progress(
        self, percent: float, message: str | None = None, *, coalesce: bool = True
    ) -> None: ...

    async def output(self, delta: str | None = None, data: JSON | None = None) -> None: ...


class WorkContext:
    """Handed to a handler: its input, and ways to report progress and partial output.

    ``cancelled`` is set when the task is cancelled or the lease is lost; long-running
    handlers should check it (async handlers are also cancelled outright).
    """

    def __init__(self, lease: Lease, reporter: Reporter, worker_id: str) -> None:
        self.lease = lease
        self.worker_id = worker_id
        self.cancelled = asyncio.Event()
        self._reporter = reporter

    @property
    def input(self) -> JSON:
        return dict(self.lease.subtask.input or {})

    @property
    def dependency_results(self) -> Mapping[str, JSON | None]:
        """The results of the tasks this task depends on, by task id."""
        return self.lease.dependency_results

    @property
    def attempt(self) -> int:
        return self.lease.subtask.attempt

    @property
    def task_id(self) -> str:
        return self.lease.subtask.task_id

    async def progress(
        self, percent: float, message: str | None = None, *, coalesce: bool = True
    ) -> None:
        """Record progress (and extend the lease).

        Reports closer together than the worker's minimum interval are coalesced (the next
        heartbeat carries the latest); ``coalesce=False`` records each one, for reports that
        stand for a step of the work a watcher counts (image generation's denoising steps).
        """
        await self._reporter.progress(percent, message, coalesce=coalesce)

    async def output(self, delta: str | None = None, data: JSON | None = None) -> None:
        await self._reporter.output(delta, data)


# A handler returns an Outcome, or just the result as a dict (None for an empty result).
HandlerFn = Callable[[WorkContext], Awaitable[Any] | Any]


@dataclass(frozen=True)
class Handler:
    kind: str
    fn: HandlerFn
    # Synchronous handlers run on a thread so they never block the event loop.
    description: str = ""

    @cached_property
    def is_async(self) -> bool:
        """A coroutine function runs on the loop, anything else on a thread (asked once)."""
        return inspect.iscoroutinefunction(self.fn)

    async def __call__(self, ctx: WorkContext) -> Outcome:
        if self.is_async:
            outcome = await self.fn(ctx)
        else:
            outcome = await asyncio.to_thread(self.fn, ctx)
        if isinstance(outcome, Outcome):
            return outcome
        if outcome is None:
            return Outcome({})
        if isinstance(outcome, dict):
            return Outcome(outcome)
        raise TypeError(
            f"handler {self.kind!r} returned {type(outcome).__name__}: return a dict or Outcome"
        )


class HandlerRegistry:
    """The kinds this worker runs; a worker only takes subtasks of these kinds."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = dict(handlers or {})

    def register(self, kind: str, fn: HandlerFn, *, description: str = "") -> None:
        self._handlers[kind] = Handler(kind, fn, description)

    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def merge(self, other: HandlerRegistry) -> None:
        """Adds (or replaces) the handlers of ``other``."""
        self._handlers.update(other._handlers)

    def only(self, kinds: Iterable[str]) -> HandlerRegistry:
        """A registry with just these kinds (each must be registered here)."""
        return HandlerRegistry({kind: self._handlers[kind] for kind in kinds})


def run_text_analysis(ctx: WorkContext) -> Outcome:
    """Seed 003's analysis: word count and top words of ``input.text``."""
    data: Mapping[str, Any] = ctx.input
    text = data.get("text")
    if not isinstance(text, str):
        raise PermanentFailure("input.text must be a string")
    return Outcome(analyze(text, top_n=int(data.get("top_n", 5))))


async def run_echo(ctx: WorkContext) -> Outcome:
    """The ``echo`` diagnostic task: its input back, after ``delay_seconds`` with progress
    (then failing, while the attempt is within ``fail_attempts``)."""
    data = ctx.input
    attempt = ctx.lease.subtask.attempt
    delay = float(data.get("delay_seconds", 0.0))
    steps = int(data.get("progress_steps", 10))
    for step in range(1, steps + 1 if delay > 0 else 1):
        try:
            async with asyncio.timeout(delay / steps):
                await ctx.cancelled.wait()
            raise asyncio.CancelledError("echo cancelled")
        except TimeoutError:
            pass
        await ctx.progress(100.0 * step / steps, f"step {step} of {steps}")
    if attempt <= int(data.get("fail_attempts", 0)):
        raise RuntimeError(f"echo was asked to fail attempt {attempt}")
    return Outcome({"echo": data, "attempt": attempt, "worker_id": ctx.worker_id})


def builtin_handlers() -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.register(
        "text_analysis", run_text_analysis, description="word count and top words of a text"
    )
    registry.register("echo", run_echo, description="returns its input (diagnostics)")
    return registry
