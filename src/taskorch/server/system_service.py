"""SystemService: health, metrics and the OpenAPI document.

SystemService: the health report of seed 001 (/health through the gateway), the metrics (/metrics
through the gateway, admin credentials only) and the OpenAPI document.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, TypeAlias

from google.api import httpbody_pb2
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from taskorch import __version__
from taskorch.core.tasks import TaskService
from taskorch.domain.errors import Unavailable
from taskorch.domain.values import Status
from taskorch.gateway import openapi
from taskorch.server.convert import set_time
from taskorch.server.health import HealthReporter
from taskorch.server.interceptors import current_caller
from taskorch.v1 import system_service_pb2 as pb
from taskorch.v1 import system_service_pb2_grpc as pb_grpc
from taskorch.workers.loop import WorkerLoop

Context: TypeAlias = Any


class SystemServicer(pb_grpc.SystemServiceServicer):
    """The SystemService RPCs: health, metrics and the OpenAPI document."""

    def __init__(
        self, tasks: TaskService, health: HealthReporter, workers: list[WorkerLoop]
    ) -> None:
        self.tasks = tasks
        self.health = health
        self.workers = workers
        self.started = time.monotonic()
        self._document: bytes | None = None

    async def GetHealth(self, request: pb.GetHealthRequest, context: Context) -> pb.HealthReport:
        """The server's health with task counters (seed 001)."""
        healthy = await self.health.check()
        report = pb.HealthReport(
            status="healthy" if healthy else "unhealthy",
            version=__version__,
            uptime=int(time.monotonic() - self.started),
            problem=self.health.problem,
            worker_slots=sum(w.concurrency for w in self.workers),
            busy_worker_slots=sum(w.busy for w in self.workers),
        )
        set_time(report.timestamp, datetime.now(UTC))
        if healthy:
            try:
                # The caller's tenant (every tenant for an admin; none without credentials).
                counts = await self.tasks.counts(current_caller())
            except Unavailable:
                counts = {}
            report.active_tasks = counts.get(Status.RUNNING, 0)
            report.pending_tasks = counts.get(Status.PENDING, 0)
            report.completed_tasks = counts.get(Status.COMPLETED, 0)
            report.failed_tasks = counts.get(Status.FAILED, 0)
            report.cancelled_tasks = counts.get(Status.CANCELLED, 0)
        return report

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """The server's Prometheus metrics in the text exposition format."""
        # The interceptor let only an admin (or anyone, with --auth none) this far: the
        # figures cover every tenant.
        return httpbody_pb2.HttpBody(
            content_type=CONTENT_TYPE_LATEST, data=generate_latest(REGISTRY)
        )

    async def GetOpenApiDocument(
        self, request: pb.GetOpenApiDocumentRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """The OpenAPI 3 document of the REST surface, generated from these protos."""
        if self._document is None:
            self._document = openapi.served_document()
        return httpbody_pb2.HttpBody(content_type="application/json", data=self._document)
