"""Handlers the worker tests run in real ``taskorch worker`` processes (--handlers)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from taskorch.worker import PermanentFailure, WorkContext
from taskorch.workers.handlers import HandlerRegistry

registry = HandlerRegistry()


async def record(ctx: WorkContext) -> dict[str, Any]:
    """Returns who ran it, under which lease, and when it started."""
    started = time.time()
    await asyncio.sleep(float(ctx.input.get("seconds", 0.05)))
    return {
        "worker_id": ctx.worker_id,
        "pid": os.getpid(),
        "lease_id": ctx.lease.lease_id,
        "attempt": ctx.attempt,
        "started": started,
        "label": ctx.input.get("label"),
    }


async def slow(ctx: WorkContext) -> dict[str, Any]:
    """Works until cancelled or ``seconds`` pass; notes a cancellation in ``marker``."""
    seconds = float(ctx.input.get("seconds", 60))
    if started := ctx.input.get("started"):  # a file that says the handler runs
        Path(started).write_text(ctx.worker_id)
    try:
        async with asyncio.timeout(seconds):  # not wait_for: it may swallow a cancel (3.11)
            await ctx.cancelled.wait()
    except TimeoutError:
        return {"worker_id": ctx.worker_id, "attempt": ctx.attempt}
    marker = ctx.input.get("marker")
    if marker:
        Path(marker).write_text(str(time.time()))
    return {"cancelled": True}


async def interval(ctx: WorkContext) -> dict[str, Any]:
    """Works ``seconds`` and says when, by the worker's own clock."""
    started = time.time()
    await asyncio.sleep(float(ctx.input.get("seconds", 0.2)))
    return {"started": started, "finished": time.time(), "worker_id": ctx.worker_id}


def flaky(ctx: WorkContext) -> dict[str, Any]:
    """A blocking handler that fails its first ``failures`` attempts."""
    if ctx.attempt <= int(ctx.input.get("failures", 0)):
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


def refuse(ctx: WorkContext) -> dict[str, Any]:
    raise PermanentFailure("this input can never work", error_code="BAD_INPUT")


def not_a_number(ctx: WorkContext) -> dict[str, Any]:
    """A result no JSON can carry (a model that diverged, say)."""
    return {"label": "x", "score": float("nan")}


def dependencies(ctx: WorkContext) -> dict[str, Any]:
    return {"seen": dict(ctx.dependency_results)}


def artifacts(ctx: WorkContext) -> dict[str, Any]:
    """Returns the artifacts its input lists, as a media handler does (bytes in base64)."""
    return {"note": ctx.input.get("note", ""), "artifacts": list(ctx.input.get("artifacts", []))}


for kind, fn in {
    "artifacts": artifacts,
    "record": record,
    "slow": slow,
    "interval": interval,
    "flaky": flaky,
    "refuse": refuse,
    "dependencies": dependencies,
    "not_a_number": not_a_number,
}.items():
    registry.register(kind, fn)
