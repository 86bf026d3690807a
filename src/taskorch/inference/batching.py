"""Dynamic batching: many concurrent requests to one model become few ``session.run`` calls.

Requests are queued items (one tokenised sequence, image, ...). A collector waits for the first
item, then (when the previous batch held more than one item, i.e. requests overlap) for at most
``max_queue_delay`` or until ``max_batch_size`` items are queued, and
hands the batch to a dedicated thread, so the event loop never blocks on ONNX Runtime. Items
are grouped by length bucket before padding, so one long input does not make a whole batch pay
for its padding. While a batch runs, new items pile up and form the next batch: under load the
batches fill up by themselves.

Each item has its own future: a cancelled request is skipped if still queued, and an exception
from the model fails only the items of that batch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from taskorch.core.errors import InternalError, Unavailable
from taskorch.inference import metrics

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
OutT = TypeVar("OutT")

# Padded lengths of the buckets; longer inputs share the last, open-ended bucket.
LENGTH_BUCKETS = (8, 16, 32, 64, 128, 256, 512)


def bucket_of(length: int) -> int:
    """The bucket a sequence of ``length`` tokens falls into."""
    for bound in LENGTH_BUCKETS:
        if length <= bound:
            return bound
    return LENGTH_BUCKETS[-1] + 1


@dataclass
class _Pending(Generic[ItemT, OutT]):
    item: ItemT
    length: int
    future: asyncio.Future[OutT]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """Counters a benchmark or ``/metrics`` can read."""

    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    busy_seconds: float = 0.0


class DynamicBatcher(Generic[ItemT, OutT]):
    """Batch items for one model and run them on its own thread.

    Args:
        name: the model's name (for messages).
        run_batch: runs a list of items in one go and returns one output per item, in order.
            Called on the batcher's thread; items of one call share a length bucket.
        max_batch_size: most items per ``run_batch`` call.
        max_queue_delay_ms: longest wait for more items once the first one is queued.
        max_queue_size: items allowed to wait; more are refused with ``Unavailable``.
    """

    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[ItemT]], Sequence[OutT]],
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int = 1024,
    ) -> None:
        self.name = name
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.stats = BatchStats()
        self._queue: collections.deque[_Pending[ItemT, OutT]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_batch = 0

    def start(self) -> None:
        """Start the collector on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._collect(), name=f"batcher-{self.name}"
            )

    async def close(self) -> None:
        """Stop collecting, fail queued items with ``Unavailable`` and release the thread."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(Unavailable(f"model {self.name!r} was unloaded"))
        self._executor.shutdown(wait=True)

    @property
    def queued(self) -> int:
        """Items waiting for a batch."""
        return len(self._queue)

    async def submit(self, item: ItemT, length: int = 1) -> OutT:
        """Queue one item and wait for its output.

        Args:
            item: what ``run_batch`` receives.
            length: its sequence length (for bucketing).

        Raises:
            Unavailable: the queue is full or the batcher is closed.
        """
        return await self.submit_many([(item, length)])[0]

    def submit_many(self, items: Sequence[tuple[ItemT, int]]) -> list[asyncio.Future[OutT]]:
        """Queue several items of one request at once (all or none) and return their futures."""
        if self._closed:
            raise Unavailable(f"model {self.name!r} is not serving")
        if len(self._queue) + len(items) > self.max_queue_size:
            raise Unavailable(
                f"model {self.name!r} has {len(self._queue)} inputs queued "
                f"(limit {self.max_queue_size}); retry later"
            )
        if self._task is None:
            self.start()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[OutT]] = []
        for item, length in items:
            future: asyncio.Future[OutT] = loop.create_future()
            self._queue.append(_Pending(item, length, future))
            futures.append(future)
        self._wakeup.set()
        return futures

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                self._drop_cancelled()
                if not self._queue:
                    break
                # Waiting for company only pays when requests overlap; a lone client at low
                # load (last batch of one) is served at once.
                delay = self.max_queue_delay if self._last_batch > 1 else 0.0
                deadline = self._queue[0].queued_at + delay
                while len(self._queue) < self.max_batch_size:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    self._wakeup.clear()
                self._drop_cancelled()
                batch = [
                    self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch_size))
                ]
                if batch:
                    await self._run(loop, batch)

    def _drop_cancelled(self) -> None:
        if any(p.future.done() for p in self._queue):
            kept = [p for p in self._queue if not p.future.done()]
            self._queue.clear()
            self._queue.extend(kept)

    async def _run(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[ItemT, OutT]]
    ) -> None:
        self._last_batch = len(batch)
        groups: dict[int, list[_Pending[ItemT, OutT]]] = collections.defaultdict(list)
        for pending in batch:
            groups[bucket_of(pending.length)].append(pending)
        for group in groups.values():
            live = [p for p in group if not p.future.done()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(
                    self._executor, self._run_batch, [p.item for p in live]
                )
                error: BaseException | None = None
            except Exception as exc:  # a model crash fails this batch only
                log.exception("model %s failed on a batch of %d", self.name, len(live))
                error = exc
            elapsed = time.perf_counter() - started
            self.stats.batches += 1
            self.stats.items += len(live)
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
            self.stats.busy_seconds += elapsed
            metrics.BATCH_SIZE.labels(self.name).observe(len(live))
            metrics.BATCH_SECONDS.labels(self.name).observe(elapsed)
            for pending in live:
                metrics.QUEUE_SECONDS.labels(self.name).observe(started - pending.queued_at)
            for index, pending in enumerate(live):
                if pending.future.done():
                    continue
                if error is not None:
                    pending.future.set_exception(_model_error(self.name, error))
                else:
                    pending.future.set_result(outputs[index])


def _model_error(name: str, error: BaseException) -> BaseException:
    from taskorch.core.errors import TaskorchError

    if isinstance(error, TaskorchError):
        return error
    return InternalError(f"model {name!r} failed: {type(error).__name__}: {error}")


def result_of(future: asyncio.Future[Any]) -> Any:
    """The result of a finished future (re-raising its exception)."""
    return future.result()
