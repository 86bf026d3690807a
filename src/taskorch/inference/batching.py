"""Dynamic batching: many concurrent requests to one model become few ``session.run`` calls.

Requests are queued items (one tokenised sequence, image, ...). Each model has one batching
thread that owns the model while it runs (the event loop never blocks on ONNX Runtime): it
takes the queued items, up to ``max_batch_size``, runs them, and hands each batch's outputs
back to the event loop in one call. Because the thread forms the next batch itself the moment
the previous one finishes, the model does not sit idle while the event loop is busy sending
answers, and items that arrived meanwhile form the next batch: under load batches fill up by
themselves.

When requests overlap (the previous batch held more than one item) and fewer than
``max_batch_size`` are waiting, the thread waits at most ``max_queue_delay`` for company,
counted from the later of the oldest item's arrival and the moment the model became free: a
batch of clients answered together comes back together, and that short wait lets them join the
next batch instead of splitting into groups that alternate half full. A lone client at low load
(last batch of one) is served at once. Items are grouped by length bucket before padding, so
one long input does not make a whole batch pay for its padding.

Each item has its own future: a cancelled request is skipped if still queued, and an exception
from the model fails only the items of that batch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

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
        max_queue_delay_ms: longest wait for more items while requests overlap.
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
        # Guards the queue and wakes the batching thread; held only to queue or take items.
        self._arrived = threading.Condition(threading.Lock())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_batch = 0
        self._free_since = 0.0
        self._metrics = (
            metrics.BATCH_SIZE.labels(name),
            metrics.BATCH_SECONDS.labels(name),
            metrics.QUEUE_SECONDS.labels(name),
        )

    def start(self) -> None:
        """Start the batching thread; outputs are delivered on the running event loop."""
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=self._serve, name=f"batch-{self.name}", daemon=True
            )
            self._thread.start()

    async def close(self) -> None:
        """Stop taking items, let a running batch finish, and fail queued items with
        ``Unavailable``."""
        with self._arrived:
            self._closed = True
            self._arrived.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        with self._arrived:
            left = list(self._queue)
            self._queue.clear()
        for pending in left:
            if not pending.future.done():
                pending.future.set_exception(Unavailable(f"model {self.name!r} was unloaded"))

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
        if self._thread is None and not self._closed:
            self.start()
        loop = self._loop
        assert loop is not None
        now = time.perf_counter()
        pendings = [_Pending(item, length, loop.create_future(), now) for item, length in items]
        with self._arrived:
            if self._closed:
                raise Unavailable(f"model {self.name!r} is not serving")
            if len(self._queue) + len(pendings) > self.max_queue_size:
                raise Unavailable(
                    f"model {self.name!r} has {len(self._queue)} inputs queued "
                    f"(limit {self.max_queue_size}); retry later"
                )
            self._queue.extend(pendings)
            self._arrived.notify()
        return [p.future for p in pendings]

    # --- the batching thread ---------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._last_batch = len(batch)
            groups: dict[int, list[_Pending[ItemT, OutT]]] = collections.defaultdict(list)
            for pending in batch:
                groups[bucket_of(pending.length)].append(pending)
            for group in groups.values():
                self._run(group)
            self._free_since = time.perf_counter()

    def _take(self) -> list[_Pending[ItemT, OutT]] | None:
        """Waits for items and returns the next batch (None once closed)."""
        with self._arrived:
            while True:
                self._drop_cancelled()
                if self._closed:
                    return None
                if self._queue:
                    break
                self._arrived.wait()
            # Waiting for company only pays when requests overlap.
            if self._last_batch > 1 and self.max_queue_delay > 0:
                start = max(self._queue[0].queued_at, self._free_since)
                deadline = start + self.max_queue_delay
                while len(self._queue) < self.max_batch_size and not self._closed:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._arrived.wait(remaining)
                self._drop_cancelled()
            count = min(len(self._queue), self.max_batch_size)
            return [self._queue.popleft() for _ in range(count)]

    def _drop_cancelled(self) -> None:
        # Reading ``done()`` from this thread is safe: it only reads the future's state.
        if any(p.future.done() for p in self._queue):
            kept = [p for p in self._queue if not p.future.done()]
            self._queue.clear()
            self._queue.extend(kept)

    def _run(self, group: list[_Pending[ItemT, OutT]]) -> None:
        live = [p for p in group if not p.future.done()]
        if not live:
            return
        started = time.perf_counter()
        outputs: Sequence[OutT] = ()
        error: BaseException | None = None
        try:
            outputs = self._run_batch([p.item for p in live])
        except Exception as exc:  # a model crash fails this batch only
            log.exception("model %s failed on a batch of %d", self.name, len(live))
            error = exc
        elapsed = time.perf_counter() - started
        stats = self.stats
        stats.batches += 1
        stats.items += len(live)
        stats.largest_batch = max(stats.largest_batch, len(live))
        stats.busy_seconds += elapsed
        size, seconds, queue_seconds = self._metrics
        size.observe(len(live))
        seconds.observe(elapsed)
        for pending in live:
            queue_seconds.observe(started - pending.queued_at)
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._deliver, live, outputs, error)

    def _deliver(
        self,
        live: list[_Pending[ItemT, OutT]],
        outputs: Sequence[OutT],
        error: BaseException | None,
    ) -> None:
        """Resolves a batch's futures (on the event loop)."""
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
