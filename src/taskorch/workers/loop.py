"""The worker loop: lease subtasks, run their handlers, heartbeat, report, and drain on stop.

One loop serves both the in-process workers of ``taskorch serve`` (a LocalWorkSource) and
remote ``taskorch worker`` processes (a gRPC source). It takes as many leases as it has free
slots in one call, so idle slots cost no polling and many workers do not stampede.

A slot is free again as soon as its handler returns: the report (complete or fail) is sent
on its way and the next take goes with it, so on the server both land in the same batch.
One heartbeat loop extends every running lease, and stop notices (a task cancelled, a
sibling failed) arrive through the source, so a lease costs one asyncio task: its handler's.

Short work runs ahead of the commit: while the handlers' recent runs took less than
``RUN_AHEAD_BELOW_SECONDS``, the worker keeps up to ``run_ahead`` more leases in hand than
it has slots, and a slot that frees starts the next one at once, instead of waiting for
its report and the next take to commit. A slot then runs its next task while the database
commits its last one. Long work (inference, say) is not held back this way: a lease that
waited in hand ``HOLD_IN_HAND_SECONDS`` (the work got long) is handed back unstarted (the
attempt does not count) for a free worker to take, and the worker stops running ahead
until its runs are short again.

While its runs are shorter still (``EARLY_BELOW_SECONDS``), the worker's takes ask for work
``early``: the in-process source may then hand a lease over before it commits, the commit
waiting for the report to join it (core/engine.py); a remote source ignores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from taskorch.domain.errors import InvalidArgument, LeaseLost, TaskorchError
from taskorch.domain.leases import DEFAULT_LEASE_SECONDS, WorkerIdentity
from taskorch.domain.values import JSON, Lease
from taskorch.workers.handlers import HandlerRegistry, Outcome, PermanentFailure, WorkContext
from taskorch.workers.source import WorkSource

log = structlog.get_logger(__name__)

T = TypeVar("T")

TAKE_WAIT_SECONDS = 20.0
CANCEL_GRACE_SECONDS = 1.0
MIN_PROGRESS_INTERVAL = 0.1
MIN_BEAT_SLEEP = 0.01
# Leases are held in hand beyond the slots only while recent runs were this short (the
# time of a commit or two): longer work is left for other workers to take.
RUN_AHEAD_BELOW_SECONDS = 0.05
# Work may be handed over before its lease commits while recent runs were this short (an
# in-process worker: the commit waits for the report, TaskEngine.take).
EARLY_BELOW_SECONDS = 0.001
# How fast the running mean of handler times follows the latest run.
RUN_TIME_WEIGHT = 0.2
# A lease waits in hand at most this long for a slot; then it goes back to the queue.
HOLD_IN_HAND_SECONDS = 0.5
# Leases in hand per slot by default: enough to keep a slot busy through a commit cycle of
# the batch its report goes in (measured: PostgreSQL in process, 10 slots, 1 per slot 501-567
# tasks/s, 4 per slot 643-653; SQLite, bound by the server's CPU, the same either way).
RUN_AHEAD_PER_SLOT = 4


def default_worker_id(prefix: str) -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerStats:
    completed: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0


class _Run:
    """One running lease: its handler's task, and how to stop it."""

    def __init__(self, worker: WorkerLoop, lease: Lease, taken: float) -> None:
        self.worker = worker
        self.lease = lease
        self.reason: str | None = None
        self.task: asyncio.Task[None] | None = None
        # The lease was last extended when it was taken: the first heartbeat is due a third
        # of a lease after that, however long it waited in hand.
        self.last_beat = taken
        self._last_progress = 0.0
        self.ctx = WorkContext(lease, self, worker.worker_id)

    def cancel(self, why: str) -> None:
        """Stops the handler: one that watches ``ctx.cancelled`` stops by itself and keeps
        its partial output (generation does); any other is cancelled after a short grace."""
        if self.reason is not None:
            return
        self.reason = why
        self.ctx.cancelled.set()
        if self.task is not None:
            asyncio.get_running_loop().call_later(CANCEL_GRACE_SECONDS, self.task.cancel)

    # Reporter (the handler's progress and output)

    async def progress(
        self, percent: float, message: str | None = None, *, coalesce: bool = True
    ) -> None:
        now = time.monotonic()
        if coalesce and now - self._last_progress < MIN_PROGRESS_INTERVAL and percent < 100:
            return  # coalesce bursts; heartbeats carry the latest anyway
        self._last_progress = now
        self.last_beat = now
        answer = await self.worker.source.heartbeat(
            self.lease,
            lease_seconds=self.worker.lease_seconds,
            progress=max(0.0, min(100.0, percent)),
            message=message,
        )
        if answer.cancelled:
            self.cancel(answer.reason or "cancelled")

    async def output(self, delta: str | None = None, data: JSON | None = None) -> None:
        if not await self.worker.source.output(self.lease, delta=delta, data=data):
            self.cancel("cancelled")


class WorkerLoop:
    """Runs handlers for the subtask kinds in ``handlers``, up to ``concurrency`` at once.

    Args:
        source: where work comes from.
        handlers: the kinds this worker runs.
        worker_id: unique name; in-process workers use ``local-HOST-PID``.
        concurrency: subtasks run at once.
        run_ahead: leases held in hand beyond ``concurrency`` while the work is short (see
            the module docstring); None: four per slot, 0: never.
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
        run_ahead: int | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        models: tuple[str, ...] = (),
        tenant_ids: tuple[str, ...] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if run_ahead is not None and run_ahead < 0:
            raise ValueError("run_ahead must not be negative")
        self.source = source
        self.handlers = handlers
        self.identity = WorkerIdentity(
            worker_id=worker_id, kinds=handlers.kinds(), models=models, tenant_ids=tenant_ids
        )
        self.concurrency = concurrency
        self.run_ahead = RUN_AHEAD_PER_SLOT * concurrency if run_ahead is None else run_ahead
        self.lease_seconds = lease_seconds
        self.stats = WorkerStats()
        self._running: dict[str, _Run] = {}
        # Leases taken ahead of a free slot, oldest first, with when they were taken.
        self._in_hand: deque[tuple[Lease, float]] = deque()
        # Running mean of the handlers' run times (None until a run ended).
        self._run_seconds: float | None = None
        self._hold_timer: asyncio.TimerHandle | None = None
        self._reports: set[asyncio.Future[None]] = set()
        # Set while every slot is busy; a slot that frees resolves it, leaving its report
        # for the loop to send together with the next take (one batch on the server).
        self._slot_waiter: asyncio.Future[None] | None = None
        self._deferred: list[Awaitable[None]] = []
        self._stopping = asyncio.Event()
        # Done once stop() began: what every interruptible wait races (one future for all).
        self._stop_signal: asyncio.Future[None] | None = None
        self._hurry = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._beat_task: asyncio.Task[None] | None = None
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
        self.source.on_stop(self.worker_id, self._stop_notice)
        self._beat_task = asyncio.create_task(self._heartbeats(), name="worker heartbeats")
        backoff = 0.5
        try:
            while not self._stopping.is_set():
                room = self._room()
                if room <= 0:
                    await self._wait_for_a_slot()
                    continue
                # Reports of the slots just freed go out now, right before the take.
                deferred, self._deferred = self._deferred, []
                for report in deferred:
                    self._send(report)
                try:
                    leases = await self._interruptible(
                        self.source.take(
                            self.identity,
                            limit=room,
                            lease_seconds=self.lease_seconds,
                            wait_seconds=TAKE_WAIT_SECONDS,
                            early=self._runs_below(EARLY_BELOW_SECONDS),
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
                taken = time.monotonic()
                self._in_hand.extend((lease, taken) for lease in leases)
                self._start_in_hand()
        finally:
            self._beat_task.cancel()

    async def _wait_for_a_slot(self) -> None:
        # Reports wait for a take only while one is coming.
        deferred, self._deferred = self._deferred, []
        for report in deferred:
            self._send(report)
        self._slot_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._slot_waiter
        finally:
            self._slot_waiter = None

    def _room(self) -> int:
        """How many leases the next take may ask for: the free slots, and while the work is
        short, room in hand for as many more as ``run_ahead``."""
        free = self.concurrency - len(self._running) - len(self._in_hand)
        return free + self.run_ahead if self._runs_below(RUN_AHEAD_BELOW_SECONDS) else free

    def _runs_below(self, seconds: float) -> bool:
        return self._run_seconds is not None and self._run_seconds < seconds

    def _start_in_hand(self) -> None:
        """Starts leases in hand while slots are free; the rest wait, up to
        HOLD_IN_HAND_SECONDS."""
        while self._in_hand and len(self._running) < self.concurrency:
            lease, taken = self._in_hand.popleft()
            run = _Run(self, lease, taken)
            self._running[lease.subtask.subtask_id] = run
            run.task = asyncio.create_task(
                self._run(run), name=f"subtask {lease.subtask.subtask_id}"
            )
        if self._in_hand and self._hold_timer is None:
            wait = self._in_hand[0][1] + HOLD_IN_HAND_SECONDS - time.monotonic()
            self._hold_timer = asyncio.get_running_loop().call_later(
                max(wait, 0.0), self._hand_back_held
            )

    def _hand_back_held(self) -> None:
        """Leases that waited too long in hand go back to the queue unstarted: the work got
        long, so the worker stops running ahead until its runs are short again."""
        self._hold_timer = None
        late = time.monotonic() - HOLD_IN_HAND_SECONDS
        if self._in_hand and self._in_hand[0][1] <= late:
            self._run_seconds = max(self._run_seconds or 0.0, HOLD_IN_HAND_SECONDS)
        while self._in_hand and self._in_hand[0][1] <= late:
            lease, _ = self._in_hand.popleft()
            self._send(self._give_back(lease, "it waited too long in a busy worker"))
        if not self._stopping.is_set():
            self._start_in_hand()  # arms the timer for the next lease in hand
        self._free_slot()

    def hurry(self) -> None:
        """Cuts the drain of :meth:`stop` short: running work is handed back at once."""
        self._hurry.set()

    async def stop(self, drain_seconds: float = 30.0) -> None:
        """Stops taking work; lets running work finish for ``drain_seconds``, then releases it."""
        self._stopping.set()
        if self._stop_signal is not None and not self._stop_signal.done():
            self._stop_signal.set_result(None)
        self._free_slot()
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        # No new work from here on: work handed back below must not come straight back.
        await self.source.stop_taking()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        in_hand = [lease for lease, _ in self._in_hand]
        self._in_hand.clear()
        for lease in in_hand:
            await self._give_back(lease)
        running = [run.task for run in self._running.values() if run.task is not None]
        if running:
            log.info("draining running work", count=len(running), seconds=drain_seconds)
            self._beat_task = asyncio.create_task(self._heartbeats(), name="drain heartbeats")
            # Until all of it finished, the drain ran out, or a second signal cut it short.
            drained = asyncio.ensure_future(asyncio.wait(running, timeout=drain_seconds))
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait([drained, hurry], return_when=asyncio.FIRST_COMPLETED)
            drained.cancel()
            hurry.cancel()
            pending = [task for task in running if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)
            self._beat_task.cancel()
        for report in self._deferred:
            self._send(report)
        self._deferred = []
        if self._reports:
            await asyncio.wait(list(self._reports), timeout=10)
        log.info("worker stopped", worker_id=self.worker_id, **vars(self.stats))

    # -- one lease -----------------------------------------------------------------------------

    async def _run(self, run: _Run) -> None:
        lease = run.lease
        handler = self.handlers.get(lease.subtask.kind)
        report: Awaitable[None] | None = None
        bound = structlog.contextvars.bound_contextvars(
            task_id=lease.subtask.task_id, subtask_id=lease.subtask.subtask_id
        )
        try:
            with bound:
                if handler is None:  # cannot happen: we only take kinds we have
                    raise PermanentFailure(f"no handler for kind {lease.subtask.kind!r}")
                started = time.monotonic()
                async with asyncio.timeout(lease.subtask.timeout_seconds):
                    outcome = await handler(run.ctx)
                self._ran_for(time.monotonic() - started)
                if run.reason is not None:  # cancelled while finishing: not wanted
                    log.info("stopped running work", reason=run.reason)
                else:
                    report = self._completed(lease, outcome)
        except asyncio.CancelledError:
            if run.reason is not None:  # the task was cancelled or the lease lost
                log.info("stopped running work", reason=run.reason)
            elif self._stopping.is_set():  # draining ran out of time: hand the work back
                await self._give_back(lease)
                raise
            else:
                raise
        except TimeoutError:
            report = self._failed(
                lease, f"timed out after {lease.subtask.timeout_seconds:g} s", "TIMEOUT", True
            )
        except PermanentFailure as exc:
            report = self._failed(lease, str(exc), exc.error_code, False)
        except InvalidArgument as exc:
            report = self._failed(lease, str(exc), exc.reason, False)
        except LeaseLost as exc:
            self.stats.lost += 1
            log.warning("lease lost", error=str(exc))
        except TaskorchError as exc:
            report = self._failed(lease, str(exc), exc.reason, True)
        except Exception as exc:
            log.exception("handler failed", kind=lease.subtask.kind)
            report = self._failed(lease, f"{type(exc).__name__}: {exc}", "INTERNAL_ERROR", True)
        finally:
            self._running.pop(lease.subtask.subtask_id, None)
            if report is not None:
                if self._slot_waiter is not None and not self._stopping.is_set():
                    self._deferred.append(report)  # sent with the loop's next take
                else:
                    self._send(report)
            if not self._stopping.is_set():
                self._start_in_hand()  # the freed slot runs the next lease in hand at once
            self._free_slot()

    def _ran_for(self, seconds: float) -> None:
        mean = self._run_seconds
        self._run_seconds = seconds if mean is None else mean + RUN_TIME_WEIGHT * (seconds - mean)

    def _free_slot(self) -> None:
        if self._slot_waiter is not None and not self._slot_waiter.done():
            self._slot_waiter.set_result(None)

    def _send(self, report: Awaitable[None]) -> None:
        task = asyncio.ensure_future(report)
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _completed(self, lease: Lease, outcome: Outcome) -> None:
        try:
            await self.source.complete(lease, outcome.result, outcome.resource_usage)
            self.stats.completed += 1
        except LeaseLost as exc:
            self.stats.lost += 1
            log.warning("lease lost; result discarded", error=str(exc))
        except InvalidArgument as exc:
            # A result the server cannot store (a NaN, say) will not get better by running
            # the handler again: the task fails, saying which field.
            log.warning("result refused", error=str(exc))
            await self._failed(
                lease, f"the handler's result was refused: {exc}", "INVALID_RESULT", False
            )
        except Exception as exc:
            log.warning("could not report a result; the lease will expire", error=str(exc))

    async def _failed(self, lease: Lease, error: str, code: str, retryable: bool) -> None:
        self.stats.failed += 1
        try:
            await self.source.fail(lease, error, error_code=code, retryable=retryable)
        except LeaseLost:
            self.stats.lost += 1
        except Exception as exc:
            log.warning("could not report a failure; the lease will expire", error=str(exc))

    async def _give_back(self, lease: Lease, reason: str = "worker shutting down") -> None:
        try:
            await asyncio.shield(self.source.release(lease, reason=reason))
            self.stats.released += 1
        except Exception as exc:
            log.warning("could not hand work back; its lease will expire", error=str(exc))

    def _stop_notice(self, subtask_id: str, reason: str) -> None:
        run = self._running.get(subtask_id)
        if run is not None:
            run.cancel(reason or "cancelled")
            return
        # Work in hand that has not started: dropped (its task ended elsewhere).
        kept = [
            (lease, taken)
            for lease, taken in self._in_hand
            if lease.subtask.subtask_id != subtask_id
        ]
        if len(kept) != len(self._in_hand):
            self._in_hand = deque(kept)
            self._free_slot()

    async def _heartbeats(self) -> None:
        """Extends every running lease a third of its length before it ends: the leases due
        are renewed together (one batch on the server)."""
        interval = self.lease_seconds / 3
        failures: dict[str, int] = {}
        while True:
            # Wake when the oldest beat falls due, so a run's first heartbeat comes a third
            # of a lease after it started, not up to two thirds (the server hands work back
            # as unstarted when its worker shows no life for three quarters of a lease).
            now = time.monotonic()
            next_due = min(
                (run.last_beat + interval for run in self._running.values()),
                default=now + interval,
            )
            await asyncio.sleep(min(interval, max(next_due - now, MIN_BEAT_SLEEP)))
            now = time.monotonic()
            # Beats due within a tenth of the interval go with this batch.
            soon = now + interval / 10
            due = [run for run in self._running.values() if run.last_beat + interval <= soon]
            if not due:
                continue
            for run in due:
                run.last_beat = now
            answers = await asyncio.gather(
                *(
                    self.source.heartbeat(run.lease, lease_seconds=self.lease_seconds)
                    for run in due
                ),
                return_exceptions=True,
            )
            for run, answer in zip(due, answers, strict=True):
                key = run.lease.subtask.subtask_id
                if isinstance(answer, LeaseLost):
                    run.cancel("lease lost")
                elif isinstance(answer, BaseException):
                    failures[key] = failures.get(key, 0) + 1
                    log.warning("heartbeat failed", error=str(answer), failures=failures[key])
                elif answer.cancelled:
                    run.cancel(answer.reason or "cancelled")
                else:
                    failures.pop(key, None)

    # -- waiting that stop() interrupts --------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        await self._interruptible(asyncio.sleep(seconds))

    async def _interruptible(self, awaitable: Awaitable[T]) -> T | None:
        work = asyncio.ensure_future(awaitable)
        if self._stop_signal is None:
            self._stop_signal = asyncio.get_running_loop().create_future()
            if self._stopping.is_set():
                self._stop_signal.set_result(None)
        racing: set[asyncio.Future[Any]] = {work, self._stop_signal}
        done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
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
