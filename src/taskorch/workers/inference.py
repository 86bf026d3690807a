"""The handler of inference subtasks: runs the model, streams generated text as task events."""

from __future__ import annotations

import asyncio
import contextlib

from taskorch.inference import InferenceEngine
from taskorch.workers.handlers import HandlerFn, Outcome, WorkContext


class OutputStream:
    """Forwards generated text to the task's watchers without slowing the model down.

    The model hands over each delta and goes on; one writer sends what has gathered
    meanwhile as a single event, so a slow store coalesces tokens instead of stalling
    generation. Order is kept and nothing is dropped; :meth:`close` flushes the rest.
    """

    def __init__(self, ctx: WorkContext) -> None:
        self._ctx = ctx
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._writer = asyncio.create_task(self._write())

    async def add(self, delta: str) -> None:
        if delta:
            self._pending.append(delta)
            self._wake.set()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                text, self._pending = "".join(self._pending), []
                await self._ctx.output(delta=text)
            if self._closed:
                return

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        await self._writer

    def abort(self) -> None:
        self._writer.cancel()


def inference_handler(engine: InferenceEngine) -> HandlerFn:
    async def run_inference(ctx: WorkContext) -> Outcome:
        data = ctx.input
        # Checked again: the model may have been replaced or removed since the task was queued.
        request = engine.check(
            str(data.get("task_type", "")),
            str(data.get("model_name", "")),
            data.get("input_data") or {},
            data.get("parameters") or {},
        )
        stream = OutputStream(ctx)

        async def on_progress(done: int, total: int) -> None:
            # One event per step (a denoising step), each kept: watchers count them.
            await ctx.progress(100.0 * done / total, f"step {done} of {total}", coalesce=False)

        try:
            result = await engine.run(
                request, on_output=stream.add, on_progress=on_progress, cancel=ctx.cancelled
            )
            await stream.close()
        except BaseException:
            stream.abort()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)
            raise
        return Outcome(result.result, result.resource_usage)

    return run_inference
