"""Dynamic batching: many concurrent requests to one model become few ``session.run`` calls.

Requests are queued items (one tokenised sequence, image, ...). A model has one batching thread
per *instance* (Triton's instance group); each runs whole batches on its own session, so the
event loop never blocks on ONNX Runtime. A thread takes queued items, up to ``max_batch_size``,
runs them, and hands the batch's outputs back to the event loop in one call. Because a thread
forms its next batch itself the moment the previous one finishes, the model does not sit idle
while the event loop is busy sending answers, and items that arrived meanwhile form the next
batch: under load batches fill up by themselves.

Several instances on a CPU each run one-thread sessions side by side: on the 2-core reference
machine two of them embed 7-19% more sentences per second than one two-thread session at batch
sizes 16-64 (bench/inference_served.py), and a thread preempted by the event loop delays only
its own batch. Idle instances share what is queued (each takes its part), and a lone item,
arriving while every instance is idle, runs with instance ``None``: the caller's session using
all the cores, so one request at a time is as fast as the model allows.

When requests overlap (the previous batch held more than one item) and fewer than
``max_batch_size`` are waiting, the thread waits at most ``max_queue_delay`` for company,
counted from the later of the oldest item's arrival and the moment the model became free: a
batch of clients answered together comes back together, and that short wait lets them join the
next batch instead of splitting into groups that alternate half full. A lone client at low load
(last batch of one) is served at once. Items are grouped by length bucket before padding, so
one long input does not make a whole batch pay for its padding.

The batching threads run at a lower priority than the event loop (``INSTANCE_NICENESS`` more,
on Linux): the loop reads every request and sends every answer, so when it waits for a core
behind a batch, all clients wait and fewer requests are queued when an instance comes for its
next batch. On the 2-core reference machine, at concurrency 32 in 7 alternating A/B pairs,
batches grew in 5 (~9 to ~10), the server's CPU per request fell in 6 (median 2%, up to 12%)
and calls/s rose by a median 1% (-3% to +10%).

Each item has its own future: a cancelled request is skipped if still queued, and an exception
from the model (any ``BaseException``) fails only the items of that batch; the instance serves on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from taskorch.domain.errors import InternalError, Unavailable
from taskorch.inference import metrics

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
OutT = TypeVar("OutT")

# Padded lengths of the buckets; longer inputs share the last, open-ended bucket.
LENGTH_BUCKETS = (8, 16, 32, 64, 128, 256, 512)


# How much lower the batching threads' priority is than the process's (nice levels).
INSTANCE_NICENESS = 10


def lower_thread_priority(by: int = INSTANCE_NICENESS) -> None:
    """Makes the calling thread ``by`` nice levels nicer (Linux: nice is per thread; elsewhere
    the call would change the whole process, so it does nothing)."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):  # a container may refuse it: the thread still runs
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + by))


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


# What one run of a group produced: its live items, their outputs, or the model's error.
_Done = tuple[list[_Pending[ItemT, OutT]], Sequence[OutT], BaseException | None]


class DynamicBatcher(Generic[ItemT, OutT]):
    """Batch items for one model and run them on its own thread.

    Args:
        name: the model's name (for messages).
        run_batch: runs a list of items in one go on the given instance (``None``: a lone
            item while every instance is idle, which may use the whole machine) and returns
            one output per item, in order. Called on the instance's thread; items of one call
            share a length bucket.
        max_batch_size: most items per ``run_batch`` call.
        max_queue_delay_ms: longest wait for more items while requests overlap.
        max_queue_size: items allowed to wait; more are refused with ``Unavailable``.
        instances: batching threads (instances ``0 .. instances - 1``).
    """

    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[ItemT], int | None], Sequence[OutT]],
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int = 1024,
        instances: int = 1,
    ) -> None:
        self.name = name
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.instances = max(1, instances)
        self._queue: collections.deque[_Pending[ItemT, OutT]] = collections.deque()
        # Guards the queue and the busy count and wakes the batching threads; held only to
        # queue or take items.
        self._arrived = threading.Condition(threading.Lock())
        self._busy = 0  # instances running a batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._metrics = (
            metrics.BATCH_SIZE.labels(name),
            metrics.BATCH_SECONDS.labels(name),
            metrics.QUEUE_SECONDS.labels(name),
        )

    def start(self) -> None:
        """Start the batching threads; outputs are delivered on the running event loop."""
        if not self._threads:
            self._loop = asyncio.get_running_loop()
            self._threads = [
                threading.Thread(
                    target=self._serve,
                    args=(index,),
                    name=f"batch-{self.name}-{index}",
                    daemon=True,
                )
                for index in range(self.instances)
            ]
            for thread in self._threads:
                thread.start()

    async def close(self) -> None:
        """Stop taking items, let running batches finish, and fail queued items with
        ``Unavailable``."""
        with self._arrived:
            self._closed = True
            self._arrived.notify_all()
        for thread in self._threads:
            await asyncio.to_thread(thread.join)
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
        if not self._threads and not self._closed:
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

    def _serve(self, index: int) -> None:
        """One instance's thread: take a batch, run it, repeat until closed."""
        lower_thread_priority()
        last_batch = 0  # the size of this instance's previous batch
        free_since = 0.0  # when it finished
        while True:
            taken = self._take(last_batch, free_since)
            if taken is None:
                return
            batch, alone = taken
            done: list[_Done[ItemT, OutT]] = []
            try:
                last_batch = len(batch)
                groups: dict[int, list[_Pending[ItemT, OutT]]] = collections.defaultdict(list)
                for pending in batch:
                    groups[bucket_of(pending.length)].append(pending)
                for group in groups.values():
                    done.append(self._run(group, None if alone else index))
            finally:
                # Free before answering: a client's next request must find this instance idle.
                with self._arrived:
                    self._busy -= 1
                if self._loop is not None:
                    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                        self._loop.call_soon_threadsafe(self._deliver, done)
            free_since = time.perf_counter()

    def _take(
        self, last_batch: int, free_since: float
    ) -> tuple[list[_Pending[ItemT, OutT]], bool] | None:
        """Waits for items and returns this instance's next batch, and whether it runs alone
        (one item while every other instance is idle); None once closed."""
        with self._arrived:
            while True:
                self._drop_cancelled()
                if self._closed:
                    return None
                if not self._queue:
                    self._arrived.wait()
                    continue
                # Waiting for company only pays when requests overlap.
                if last_batch > 1 and self.max_queue_delay > 0:
                    start = max(self._queue[0].queued_at, free_since)
                    deadline = start + self.max_queue_delay
                    while len(self._queue) < self.max_batch_size and not self._closed:
                        remaining = deadline - time.perf_counter()
                        if remaining <= 0:
                            break
                        self._arrived.wait(remaining)
                    self._drop_cancelled()
                if self._queue:  # not cancelled or taken by another instance meanwhile
                    break
            # Idle instances share what is waiting.
            share = math.ceil(len(self._queue) / (self.instances - self._busy))
            count = min(len(self._queue), self.max_batch_size, share)
            batch = [self._queue.popleft() for _ in range(count)]
            alone = count == 1 and self._busy == 0 and not self._queue
            self._busy += 1
            if self._queue:
                self._arrived.notify()  # another idle instance may take the rest
            return batch, alone

    def _drop_cancelled(self) -> None:
        # Reading ``done()`` from this thread is safe: it only reads the future's state.
        if any(p.future.done() for p in self._queue):
            kept = [p for p in self._queue if not p.future.done()]
            self._queue.clear()
            self._queue.extend(kept)

    def _run(self, group: list[_Pending[ItemT, OutT]], instance: int | None) -> _Done[ItemT, OutT]:
        live = [p for p in group if not p.future.done()]
        if not live:
            return live, (), None
        started = time.perf_counter()
        outputs: Sequence[OutT] = ()
        error: BaseException | None = None
        try:
            outputs = self._run_batch([p.item for p in live], instance)
        except BaseException as exc:  # a model crash fails this batch only
            # BaseException too: one that ended this thread would leave the batch's callers,
            # and every later caller of a one-instance model, waiting for ever.
            log.exception("model %s failed on a batch of %d", self.name, len(live))
            error = exc
        elapsed = time.perf_counter() - started
        size, seconds, queue_seconds = self._metrics
        size.observe(len(live))
        seconds.observe(elapsed)
        for pending in live:
            queue_seconds.observe(started - pending.queued_at)
        return live, outputs, error

    def _deliver(self, done: list[_Done[ItemT, OutT]]) -> None:
        """Resolves a batch's futures (on the event loop)."""
        for live, outputs, error in done:
            for index, pending in enumerate(live):
                if pending.future.done():
                    continue
                if error is not None:
                    pending.future.set_exception(_model_error(self.name, error))
                else:
                    pending.future.set_result(outputs[index])


def _model_error(name: str, error: BaseException) -> BaseException:
    from taskorch.domain.errors import TaskorchError

    if isinstance(error, TaskorchError):
        return error
    return InternalError(f"model {name!r} failed: {type(error).__name__}: {error}")
