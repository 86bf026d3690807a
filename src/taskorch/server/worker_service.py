"""WorkerService over gRPC: how remote workers get work pushed, heartbeat and report."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any, TypeAlias

import structlog

from taskorch.core.directory import WorkerDirectory
from taskorch.core.engine import TaskEngine
from taskorch.domain.caller import Caller
from taskorch.domain.errors import (
    InvalidArgument,
    LeaseLost,
    NoWorkAvailable,
    SubtaskNotFound,
    TaskorchError,
    within,
)
from taskorch.domain.leases import DEFAULT_LEASE_SECONDS, WorkerIdentity
from taskorch.domain.values import Lease, ResourceUsage
from taskorch.server import convert, errors
from taskorch.server.interceptors import current, current_caller
from taskorch.v1 import worker_service_pb2 as pb
from taskorch.v1 import worker_service_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

Context: TypeAlias = Any

PING_SECONDS = 5.0
MAX_CAPACITY = 1000
MAX_REPORTS = 1000
# A worker that has shown no sign of life (a heartbeat or a report) this long into the lease
# of work sent to it has not started it (it is frozen, or its process is stopped): the work
# goes back to the queue before the lease expires, without costing the task an attempt.
UNSTARTED_LEASE_FRACTION = 0.75
# How long a stream keeps the slot of such work (no more work offered to a worker that may
# be frozen), in leases, when the worker never shows life again.
STALLED_LEASES = 10
# Work is sent ahead of a worker's free slots (its run_ahead) only while it reports what it
# was sent within this time on average (the trip, the wait in hand and the run): longer
# work stays in the queue for any worker that is free.
RUN_AHEAD_BELOW_SECONDS = 0.1
RUN_TIME_WEIGHT = 0.2


def identity(caller: Caller, worker_id: str, kinds: Any, models: Any) -> WorkerIdentity:
    """A worker takes only work of its caller's tenant (admins: any tenant)."""
    return WorkerIdentity(
        worker_id=worker_id or f"worker-{uuid.uuid4().hex[:8]}",
        kinds=tuple(kinds),
        models=tuple(models),
        tenant_ids=None if caller.is_admin else (caller.tenant_id,),
    )


class _Listener:
    """The work one Listen stream holds, and what wakes it.

    A slot is freed when the worker reports its work or is told to stop it, or, once the
    work ended elsewhere (expired, reported through another replica), when the worker has
    shown life since it was sent. A worker that shows no life keeps its slots taken: a frozen
    worker is not offered more work.
    """

    def __init__(self, lease_seconds: float, capacity: int = 1, run_ahead: int = 0) -> None:
        self.lease_seconds = lease_seconds
        self.capacity = capacity
        self.run_ahead = run_ahead
        # Running mean of sent → reported (None until the worker reported something).
        self.turnaround: float | None = None
        self.held: dict[str, str] = {}  # subtask_id -> lease_id
        self.sent_at: dict[str, float] = {}  # subtask_id -> loop time it was sent
        self.stalled: set[str] = set()  # handed back unstarted; the slot stays taken
        self.last_seen = 0.0  # loop time of the worker's latest heartbeat or report
        self.changed = asyncio.Event()

    def sent(self, subtask_id: str, now: float) -> None:
        self.sent_at[subtask_id] = now

    def room(self) -> int:
        """Work the stream may take now.

        Its free slots, and while the worker turns its work around quickly, its run_ahead
        more.
        """
        quick = self.turnaround is not None and self.turnaround < RUN_AHEAD_BELOW_SECONDS
        return self.capacity + (self.run_ahead if quick else 0) - len(self.held)

    def reported(self, subtask_id: str, now: float, *, handed_back: bool = False) -> None:
        """The worker reported work it was sent.

        Work it handed back unstarted (it waited too long in hand) stops the running ahead
        at once.
        """
        sent = self.sent_at.get(subtask_id)
        if sent is None:
            return
        took, mean = now - sent, self.turnaround
        if handed_back:
            self.turnaround = max(took, mean or 0.0, RUN_AHEAD_BELOW_SECONDS)
        else:
            self.turnaround = took if mean is None else mean + RUN_TIME_WEIGHT * (took - mean)

    def seen(self, now: float) -> set[str]:
        """The worker heartbeated or reported: it is alive; frees (returns) its stalled slots."""
        self.last_seen = now
        freed, self.stalled = self.stalled, set()
        for subtask_id in freed:
            self.free(subtask_id)
        return freed

    def free(self, subtask_id: str) -> None:
        if self.held.pop(subtask_id, None) is not None:
            self.changed.set()
        self.sent_at.pop(subtask_id, None)

    def alive_since_sent(self, subtask_id: str) -> bool:
        return self.last_seen >= self.sent_at.get(subtask_id, 0.0)

    def unstarted(self, now: float) -> list[tuple[str, str]]:
        """Held work the worker has shown no life since it was sent, for most of a lease."""
        late = now - self.lease_seconds * UNSTARTED_LEASE_FRACTION
        return [
            (subtask_id, lease_id)
            for subtask_id, lease_id in self.held.items()
            if subtask_id not in self.stalled
            and not self.alive_since_sent(subtask_id)
            and self.sent_at.get(subtask_id, now) <= late
        ]

    def next_check(self) -> float | None:
        """When the earliest held, unanswered work becomes unstarted."""
        waiting = [
            at
            for subtask_id, at in self.sent_at.items()
            if subtask_id not in self.stalled and self.last_seen < at
        ]
        if not waiting:
            return None
        return min(waiting) + self.lease_seconds * UNSTARTED_LEASE_FRACTION


class WorkerServicer(pb_grpc.WorkerServiceServicer):
    """The WorkerService RPCs: remote workers take, heartbeat and report work."""

    def __init__(self, engine: TaskEngine, directory: WorkerDirectory) -> None:
        self.engine = engine
        self.directory = directory
        self._holders: dict[str, _Listener] = {}  # subtask_id -> the stream that holds it
        self._giving_back: set[asyncio.Future[None]] = set()

    async def Take(self, request: pb.TakeRequest, context: Context) -> Any:
        """Leases the next runnable subtask of any task (highest priority, then oldest)."""
        worker = identity(current_caller(), request.worker_id, request.kinds, request.models)
        self.directory.seen(worker.worker_id, worker.kinds, worker.models)
        leases = await self.engine.take(
            worker,
            lease_seconds=request.lease_seconds or DEFAULT_LEASE_SECONDS,
            wait_seconds=request.wait_seconds,
        )
        if not leases:
            raise NoWorkAvailable(worker.kinds)
        return convert.subtask_to_proto(leases[0].subtask, leases[0])

    async def Listen(
        self, request: pb.ListenRequest, context: Context
    ) -> AsyncIterator[pb.WorkerMessage]:
        """A worker's stream: leased subtasks, cancellations of them, and pings."""
        worker = identity(current_caller(), request.worker_id, request.kinds, request.models)
        capacity = request.capacity or 1
        if not 1 <= capacity <= MAX_CAPACITY:
            raise InvalidArgument(
                f"capacity must be between 1 and {MAX_CAPACITY}", field="capacity"
            )
        if not 0 <= request.run_ahead <= MAX_CAPACITY:
            raise InvalidArgument(
                f"run_ahead must be between 0 and {MAX_CAPACITY}", field="run_ahead"
            )
        lease_seconds = request.lease_seconds or DEFAULT_LEASE_SECONDS
        listener = _Listener(lease_seconds, capacity, request.run_ahead)
        assignments: list[Lease] = []
        ready = asyncio.Event()

        async def feed() -> None:
            """Takes work whenever the worker has a free slot.

            The engine parks the take until work arrives, so an idle stream costs nothing.
            """
            while True:
                free = listener.room()
                if free <= 0:
                    listener.changed.clear()
                    await listener.changed.wait()
                    continue
                self.directory.seen(worker.worker_id, worker.kinds, worker.models)
                leases = await self.engine.take(
                    worker, limit=free, lease_seconds=lease_seconds, wait_seconds=PING_SECONDS
                )
                for lease in leases:
                    self._hold(listener, lease)
                assignments.extend(leases)
                if leases:
                    ready.set()

        log.info("worker connected", worker_id=worker.worker_id, kinds=list(worker.kinds))
        loop = asyncio.get_running_loop()
        next_ping = loop.time()
        feeder = asyncio.create_task(feed(), name=f"feed {worker.worker_id}")
        try:
            with self.engine.stop_notices(worker.worker_id) as stops:
                while True:
                    if feeder.done():
                        feeder.result()  # raises what stopped it (the database, say)
                    if assignments and request.batch_assignments:
                        now, sending = loop.time(), assignments[:]
                        assignments.clear()
                        for lease in sending:
                            listener.sent(lease.subtask.subtask_id, now)
                        yield pb.WorkerMessage(
                            assignments=pb.Assignments(
                                subtasks=[convert.subtask_to_proto(s.subtask, s) for s in sending]
                            )
                        )
                    while assignments:
                        lease = assignments.pop(0)
                        listener.sent(lease.subtask.subtask_id, loop.time())
                        yield pb.WorkerMessage(
                            assignment=convert.subtask_to_proto(lease.subtask, lease)
                        )
                    async for notice in stops.pending():
                        if notice.subtask_id in listener.held:
                            self._holders.pop(notice.subtask_id, None)
                            listener.free(notice.subtask_id)
                        yield pb.WorkerMessage(
                            cancel=pb.Cancellation(
                                subtask_id=notice.subtask_id,
                                lease_id=notice.lease_id,
                                reason=notice.reason,
                            )
                        )
                    await self._hand_back_unstarted(worker.worker_id, listener)
                    if loop.time() >= next_ping:
                        await self._forget_finished(listener)
                        ping = pb.WorkerMessage()
                        convert.set_time(ping.ping, datetime.now(UTC))
                        yield ping
                        next_ping = loop.time() + PING_SECONDS
                    if assignments:
                        continue
                    ready.clear()
                    wake = min(next_ping, listener.next_check() or next_ping)
                    await _first(
                        ready.wait(),
                        stops.wait(PING_SECONDS),
                        asyncio.shield(feeder),
                        timeout=max(0.0, wake - loop.time()),
                    )
        finally:
            feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder
            # Taken for this stream but never sent: back to the queue at once.
            for lease in assignments:
                listener.held.pop(lease.subtask.subtask_id, None)
                give_back = asyncio.ensure_future(self._give_back(lease))
                self._giving_back.add(give_back)
                give_back.add_done_callback(self._giving_back.discard)
            for subtask_id in listener.held:
                self._holders.pop(subtask_id, None)
            log.info("worker disconnected", worker_id=worker.worker_id, holding=len(listener.held))

    async def _give_back(self, lease: Lease) -> None:
        with contextlib.suppress(Exception):
            await self.engine.release(
                lease.subtask.subtask_id, lease.lease_id, reason="worker disconnected"
            )

    def _hold(self, listener: _Listener, lease: Lease) -> None:
        listener.held[lease.subtask.subtask_id] = lease.lease_id
        self._holders[lease.subtask.subtask_id] = listener

    def _finished(self, subtask_id: str, lease_id: str, *, handed_back: bool = False) -> None:
        """Frees the slot of a held subtask that is being reported.

        A held subtask is being completed, failed or released: its stream has a free slot (only for
        the lease's holder: a lease id is a secret of the worker that has it).
        """
        listener = self._holders.get(subtask_id)
        if listener is not None and listener.held.get(subtask_id) == lease_id:
            del self._holders[subtask_id]
            now = asyncio.get_running_loop().time()
            listener.reported(subtask_id, now, handed_back=handed_back)
            listener.free(subtask_id)
            self._seen(subtask_id, lease_id, listener)

    def _seen(self, subtask_id: str, lease_id: str, listener: _Listener | None = None) -> None:
        """A heartbeat or report on held work: its worker is alive."""
        listener = listener or self._holders.get(subtask_id)
        if listener is None or listener.held.get(subtask_id, lease_id) != lease_id:
            return
        for freed in listener.seen(asyncio.get_running_loop().time()):
            self._holders.pop(freed, None)

    async def _hand_back_unstarted(self, worker_id: str, listener: _Listener) -> None:
        """Hands back work sent to a worker that has shown no life since.

        Work sent to a worker that has shown no life since goes back to the queue before its lease
        expires, without costing the task an attempt; the slot stays taken, so a frozen worker is
        offered nothing more until it shows life.
        """
        for subtask_id, lease_id in listener.unstarted(asyncio.get_running_loop().time()):
            listener.stalled.add(subtask_id)
            reason = f"worker {worker_id} did not start it (no heartbeat)"
            with contextlib.suppress(LeaseLost, SubtaskNotFound):
                await self.engine.release(subtask_id, lease_id, reason=reason)
                log.warning(
                    "unstarted work handed back", worker_id=worker_id, subtask_id=subtask_id
                )

    async def _forget_finished(self, listener: _Listener) -> None:
        """Frees slots whose work ended elsewhere (another replica, or expired).

        It keeps its slots, up to STALLED_LEASES leases); keeps a live stream from waiting forever
        on a slot it no longer holds.
        """
        if not listener.held:
            return
        held = dict(listener.held)
        running = await self.engine.still_held(held)
        now = asyncio.get_running_loop().time()
        given_up = now - listener.lease_seconds * STALLED_LEASES
        for subtask_id in set(held) - running:
            if not listener.alive_since_sent(subtask_id) and (
                listener.sent_at.get(subtask_id, now) > given_up
            ):
                continue
            listener.stalled.discard(subtask_id)
            listener.free(subtask_id)
            self._holders.pop(subtask_id, None)

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        """Extends a lease, records progress and streams partial output."""
        scope = current_caller().tenant_scope
        self._seen(request.subtask_id, request.lease_id)
        if request.output_delta or request.HasField("output_data"):
            await self.engine.output(
                request.subtask_id,
                request.lease_id,
                delta=request.output_delta or None,
                data=convert.optional_struct(request, "output_data"),
                tenant_scope=scope,
            )
        answer = await self.engine.heartbeat(
            request.subtask_id,
            request.lease_id,
            lease_seconds=request.lease_seconds or DEFAULT_LEASE_SECONDS,
            progress=request.progress if request.HasField("progress") else None,
            message=request.message or None,
            tenant_scope=scope,
        )
        if answer.cancelled:
            self._finished(request.subtask_id, request.lease_id)
        response = pb.HeartbeatResponse(stop=answer.cancelled, reason=answer.reason)
        convert.set_time(response.lease_expires_at, answer.lease_expires_at)
        return response

    async def Complete(self, request: pb.CompleteRequest, context: Context) -> Any:
        """Stores the result; the task completes when its last subtask does."""
        return await self._complete(request)

    async def Fail(self, request: pb.FailRequest, context: Context) -> Any:
        """Records a failed attempt: retried with backoff, or final when permanent."""
        return await self._fail(request)

    async def Release(self, request: pb.ReleaseRequest, context: Context) -> Any:
        """Gives a subtask back without counting the attempt (a worker shutting down)."""
        return await self._release(request)

    async def Report(self, request: pb.ReportRequest, context: Context) -> pb.ReportResponse:
        """Completes, fails or releases several subtasks; each report answered on its own.

        The reports run at once, so they commit in one batch; one that is refused (its lease
        lost, its result too large) fails alone, its error naming it (``reports[3]``).
        """
        if not request.reports:
            raise InvalidArgument("reports must not be empty", field="reports")
        if len(request.reports) > MAX_REPORTS:
            raise InvalidArgument(
                f"{len(request.reports)} reports; a call holds at most {MAX_REPORTS}",
                field="reports",
            )
        outcomes = await asyncio.gather(
            *(self._one_report(report) for report in request.reports), return_exceptions=True
        )
        request_id = current().request_id
        response = pb.ReportResponse()
        for index, outcome in enumerate(outcomes):
            answer = response.outcomes.add()
            if isinstance(outcome, TaskorchError):
                answer.error.CopyFrom(
                    errors.status_for(within(outcome, f"reports[{index}]"), request_id)
                )
            elif isinstance(outcome, BaseException):
                log.error("a report failed", exc_info=outcome)
                answer.error.CopyFrom(errors.internal_status(request_id))
            else:
                answer.subtask.CopyFrom(outcome)
        return response

    async def _one_report(self, report: pb.SubtaskReport) -> Any:
        kind = report.WhichOneof("report")
        if kind == "complete":
            return await self._complete(report.complete)
        if kind == "fail":
            return await self._fail(report.fail)
        if kind == "release":
            return await self._release(report.release)
        raise InvalidArgument("a report must be one of complete, fail or release", field="report")

    async def _complete(self, request: pb.CompleteRequest) -> Any:
        usage = None
        if request.HasField("resource_usage"):
            u = request.resource_usage
            usage = ResourceUsage(
                model_name=u.model_name,
                inference_time_seconds=u.inference_time_seconds,
                memory_used_gb=u.memory_used_gb,
                execution_provider=u.execution_provider,
            )
        convert.check_result_size(request)
        with self._reported(request.subtask_id, request.lease_id):
            subtask = await self.engine.complete(
                request.subtask_id,
                request.lease_id,
                convert.optional_struct(request, "result"),
                resource_usage=usage,
                tenant_scope=current_caller().tenant_scope,
            )
        return convert.subtask_to_proto(subtask)

    async def _fail(self, request: pb.FailRequest) -> Any:
        with self._reported(request.subtask_id, request.lease_id):
            subtask = await self.engine.fail(
                request.subtask_id,
                request.lease_id,
                request.error or "failed",
                error_code=request.error_code or "INTERNAL_ERROR",
                retryable=not request.permanent,
                tenant_scope=current_caller().tenant_scope,
            )
        return convert.subtask_to_proto(subtask)

    async def _release(self, request: pb.ReleaseRequest) -> Any:
        scope = current_caller().tenant_scope
        with self._reported(request.subtask_id, request.lease_id, handed_back=True):
            await self.engine.release(
                request.subtask_id,
                request.lease_id,
                reason=request.reason or "released",
                tenant_scope=scope,
            )
            found = await self.engine.subtask(request.subtask_id, scope)
            if found is None:
                raise SubtaskNotFound(request.subtask_id)
        return convert.subtask_to_proto(found)

    @contextlib.contextmanager
    def _reported(
        self, subtask_id: str, lease_id: str, *, handed_back: bool = False
    ) -> Iterator[None]:
        """Frees the Listen slot of a reported subtask as the report starts.

        So the stream's next take joins the report's batch (a worker's slot is free once it
        reports).
        """
        self._finished(subtask_id, lease_id, handed_back=handed_back)
        yield


async def _first(*waits: Any, timeout: float) -> None:
    """Waits until any of ``waits`` finishes or ``timeout`` passes; cancels the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
