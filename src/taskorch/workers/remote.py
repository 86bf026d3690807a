"""Work from a taskorch server over gRPC: the source of ``taskorch worker`` processes.

A Listen stream pushes leased subtasks (up to the worker's capacity) and stop notices; the
worker reports with unary calls. Completions and failures go in Report calls, one at a time:
what finishes while a Report is on its way waits for it and goes in the next one, so a busy
worker sends one call (and the server commits one batch) for many subtasks. The stream is
watched: a server sends a ping every few seconds, and a stream that stays silent for three
pings is treated as dead and reopened, so a stalled stream never leaves work queued while
the worker looks alive. Reports that fail because the server is briefly unreachable are
retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
import structlog

from taskorch import structs
from taskorch.client._base import CHANNEL_OPTIONS
from taskorch.client._errors import (
    TaskorchClientError,
    UnavailableError,
    from_rpc_error,
    from_status,
)
from taskorch.domain.errors import InternalError, InvalidArgument, LeaseLost, SubtaskNotFound
from taskorch.domain.leases import HeartbeatAnswer, WorkerIdentity
from taskorch.domain.values import JSON, Lease, ResourceUsage, Status, Subtask
from taskorch.v1 import task_service_pb2
from taskorch.v1 import worker_service_pb2 as pb
from taskorch.v1 import worker_service_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

T = TypeVar("T")
# Reports sent in one Report call at most (the server takes up to 1000).
MAX_REPORTS_PER_CALL = 500
PING_SECONDS = 5.0
SILENCE_LIMIT = 3 * PING_SECONDS
REPORT_RETRIES = 6


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    value: datetime = getattr(message, name).ToDatetime(tzinfo=UTC)
    return value


def subtask_from_proto(m: task_service_pb2.Subtask) -> Subtask:
    created = _time(m, "created_at") or datetime.now(UTC)
    return Subtask(
        subtask_id=m.subtask_id,
        task_id=m.task_id,
        tenant_id="",
        kind=m.kind,
        name=m.name,
        stage=m.stage,
        model_name=m.model_name,
        input=structs.to_dict(m.input) if m.HasField("input") else None,
        info=structs.to_dict(m.info) if m.HasField("info") else None,
        status=Status(m.status),
        progress=m.progress,
        attempt=m.attempt,
        max_attempts=m.max_attempts,
        priority=m.priority,
        ready=m.ready,
        lease_id=m.lease_id or None,
        lease_expires_at=_time(m, "lease_expires_at"),
        worker_id=m.worker_id or None,
        timeout_seconds=m.timeout_seconds or None,
        created_at=created,
        updated_at=_time(m, "updated_at") or created,
        started_at=_time(m, "started_at"),
    )


def lease_from_proto(m: task_service_pb2.Subtask) -> Lease:
    return Lease(
        subtask=subtask_from_proto(m),
        lease_id=m.lease_id,
        expires_at=_time(m, "lease_expires_at") or datetime.now(UTC),
        dependency_results={k: structs.to_dict(v) for k, v in m.dependency_results.items()},
    )


def _domain_error(error: grpc.RpcError | TaskorchClientError, subtask_id: str) -> Exception:
    """The domain error a worker loop understands for a failed report."""
    failure = from_rpc_error(error) if isinstance(error, grpc.RpcError) else error
    if failure.reason == "LEASE_LOST":
        return LeaseLost(subtask_id, failure.message)
    if failure.reason == "SUBTASK_NOT_FOUND":
        return SubtaskNotFound(subtask_id)
    if isinstance(failure, UnavailableError):
        return failure
    if failure.code == "INVALID_ARGUMENT":
        fields = [v.field for v in failure.field_violations]
        return InvalidArgument(failure.message, field=fields[0] if fields else None)
    return InternalError(str(failure))


class GrpcWorkSource:
    """Work from a server's WorkerService (see the module docstring)."""

    def __init__(
        self,
        target: str,
        *,
        capacity: int,
        run_ahead: int = 0,
        metadata: Sequence[tuple[str, str]] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.target = target
        self.capacity = capacity
        self.run_ahead = run_ahead
        self.metadata = tuple(metadata)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, CHANNEL_OPTIONS)
            if credentials is not None
            else grpc.aio.insecure_channel(target, CHANNEL_OPTIONS)
        )
        self._stub = pb_grpc.WorkerServiceStub(self._channel)
        self._assignments: asyncio.Queue[Lease] = asyncio.Queue()
        # Reports waiting for the Report call on its way: (subtask id, report, its answer).
        self._reports: list[tuple[str, pb.SubtaskReport, asyncio.Future[Any]]] = []
        self._reporting: asyncio.Task[None] | None = None
        self._stop_notice: Callable[[str, str], None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def stop_taking(self) -> None:
        """Closes the work stream and hands back work pushed but never started."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        while not self._assignments.empty():
            lease = self._assignments.get_nowait()
            with contextlib.suppress(Exception):
                await self.release(lease, reason="worker shutting down")

    async def close(self) -> None:
        await self.stop_taking()
        await self._channel.close()

    # -- the stream ----------------------------------------------------------------------------

    def _listen(self, worker: WorkerIdentity, lease_seconds: float) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(
                self._stream_forever(worker, lease_seconds), name="worker listen stream"
            )

    async def _stream_forever(self, worker: WorkerIdentity, lease_seconds: float) -> None:
        backoff = 0.2
        request = pb.ListenRequest(
            worker_id=worker.worker_id,
            kinds=list(worker.kinds),
            models=list(worker.models),
            capacity=self.capacity,
            lease_seconds=lease_seconds,
            run_ahead=self.run_ahead,
            batch_assignments=True,
        )
        while True:
            call = self._stub.Listen(request, metadata=self.metadata)
            try:
                while True:
                    async with asyncio.timeout(SILENCE_LIMIT):
                        message = await call.read()
                    if message is grpc.aio.EOF:
                        break
                    if not self.connected.is_set():
                        log.info("connected to the server", server=self.target)
                    self.connected.set()
                    backoff = 0.2
                    self._receive(message)
            except TimeoutError:
                log.warning("the work stream went silent; reconnecting", seconds=SILENCE_LIMIT)
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                log.warning("the work stream failed; reconnecting", error=str(error))
                if error.code in ("UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT"):
                    raise error from None
            finally:
                call.cancel()
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _receive(self, message: pb.WorkerMessage) -> None:
        kind = message.WhichOneof("message")
        if kind == "assignment":
            self._assignments.put_nowait(lease_from_proto(message.assignment))
        elif kind == "assignments":
            for subtask in message.assignments.subtasks:
                self._assignments.put_nowait(lease_from_proto(subtask))
        elif kind == "cancel" and self._stop_notice is not None:
            self._stop_notice(message.cancel.subtask_id, message.cancel.reason or "cancelled")

    # -- WorkSource ----------------------------------------------------------------------------

    async def take(
        self,
        worker: WorkerIdentity,
        *,
        limit: int,
        lease_seconds: float,
        wait_seconds: float,
        early: bool = False,
    ) -> list[Lease]:
        self._listen(worker, lease_seconds)
        leases: list[Lease] = []
        try:
            async with asyncio.timeout(wait_seconds):
                leases.append(await self._assignments.get())
        except TimeoutError:
            return []
        while len(leases) < limit and not self._assignments.empty():
            leases.append(self._assignments.get_nowait())
        return leases

    async def heartbeat(
        self,
        lease: Lease,
        *,
        lease_seconds: float,
        progress: float | None = None,
        message: str | None = None,
    ) -> HeartbeatAnswer:
        request = pb.HeartbeatRequest(
            subtask_id=lease.subtask.subtask_id,
            lease_id=lease.lease_id,
            lease_seconds=lease_seconds,
            message=message or "",
        )
        if progress is not None:
            request.progress = progress
        answer = await self._report(lease.subtask.subtask_id, self._stub.Heartbeat, request)
        return HeartbeatAnswer(
            _time(answer, "lease_expires_at"), cancelled=answer.stop, reason=answer.reason
        )

    async def output(self, lease: Lease, *, delta: str | None, data: JSON | None) -> bool:
        request = pb.HeartbeatRequest(
            subtask_id=lease.subtask.subtask_id, lease_id=lease.lease_id, output_delta=delta or ""
        )
        if data is not None:
            request.output_data.update(data)
        answer = await self._report(lease.subtask.subtask_id, self._stub.Heartbeat, request)
        return not answer.stop

    async def complete(
        self, lease: Lease, result: JSON, resource_usage: ResourceUsage | None
    ) -> None:
        request = pb.CompleteRequest(subtask_id=lease.subtask.subtask_id, lease_id=lease.lease_id)
        request.result.update(result)
        if resource_usage is not None:
            usage = request.resource_usage
            usage.model_name = resource_usage.model_name
            usage.inference_time_seconds = resource_usage.inference_time_seconds
            usage.memory_used_gb = resource_usage.memory_used_gb
            usage.execution_provider = resource_usage.execution_provider
        await self._batched(lease, pb.SubtaskReport(complete=request))

    async def fail(self, lease: Lease, error: str, *, error_code: str, retryable: bool) -> None:
        request = pb.FailRequest(
            subtask_id=lease.subtask.subtask_id,
            lease_id=lease.lease_id,
            error=error,
            error_code=error_code,
            permanent=not retryable,
        )
        await self._batched(lease, pb.SubtaskReport(fail=request))

    async def _batched(self, lease: Lease, report: pb.SubtaskReport) -> None:
        """Sends ``report`` in the next Report call; raises what the server said of it."""
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._reports.append((lease.subtask.subtask_id, report, answer))
        if self._reporting is None or self._reporting.done():
            self._reporting = asyncio.create_task(self._send_reports(), name="worker reports")
        outcome = await answer
        if outcome.HasField("error"):
            raise _domain_error(from_status(outcome.error), lease.subtask.subtask_id)

    async def _send_reports(self) -> None:
        """Sends what is waiting, one Report call at a time, until nothing is left."""
        while self._reports:
            batch = self._reports[:MAX_REPORTS_PER_CALL]
            del self._reports[:MAX_REPORTS_PER_CALL]
            request = pb.ReportRequest(reports=[report for _, report, _ in batch])
            try:
                response = await self._report(batch[0][0], self._stub.Report, request)
            except Exception as exc:  # the call failed for all of them
                for _, _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for (_, _, answer), outcome in zip(batch, response.outcomes, strict=True):
                if not answer.done():
                    answer.set_result(outcome)

    async def release(self, lease: Lease, *, reason: str) -> None:
        request = pb.ReleaseRequest(
            subtask_id=lease.subtask.subtask_id, lease_id=lease.lease_id, reason=reason
        )
        await self._report(lease.subtask.subtask_id, self._stub.Release, request, retries=1)

    def on_stop(self, worker_id: str, notice: Callable[[str, str], None]) -> None:
        self._stop_notice = notice

    async def _report(
        self,
        subtask_id: str,
        call: Callable[..., Awaitable[T]],
        request: Any,
        *,
        retries: int = REPORT_RETRIES,
    ) -> T:
        """Makes a reporting call, again while the server is unreachable (up to ``retries``)."""
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                return await call(request, metadata=self.metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                error = _domain_error(exc, subtask_id)
                if not isinstance(error, UnavailableError) or attempt == retries:
                    raise error from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")
