"""gRPC health (grpc.health.v1): SERVING only while the database answers and workers run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog
from grpc_health.v1 import health, health_pb2

from taskorch.domain.errors import Unavailable

log = structlog.get_logger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    """Checks the database and workers every ``interval`` seconds and publishes the result."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        ping: Callable[[], Awaitable[None]],
        services: Sequence[str],
        workers_alive: Callable[[], bool] = lambda: True,
        interval: float = 2.0,
    ) -> None:
        self.servicer = servicer
        self.ping = ping  # the database's
        self.services = ["", *services]
        self.workers_alive = workers_alive
        self.interval = interval
        self.healthy = False
        self.problem = "starting"

    async def check(self) -> bool:
        """Pings the database and the workers; sets and returns the health."""
        problem = ""
        try:
            async with asyncio.timeout(self.interval * 2):
                await self.ping()
        except (Unavailable, TimeoutError) as exc:
            problem = f"database: {exc or 'no answer'}"
        except Exception as exc:  # whatever it is, the database did not answer the ping
            problem = f"database: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if not problem and not self.workers_alive():
            problem = "workers are not running"
        healthy = not problem
        if healthy != self.healthy:
            if healthy:
                log.info("healthy")
            else:
                log.warning("unhealthy", problem=problem)
        self.healthy, self.problem = healthy, problem
        status = SERVING if healthy else NOT_SERVING
        for service in self.services:
            await self.servicer.set(service, status)
        return healthy

    async def run(self) -> None:
        """Checks the health every ``interval`` seconds, until cancelled."""
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("health check failed")
            await asyncio.sleep(self.interval)

    async def shutdown(self) -> None:
        """Reports NOT_SERVING from now on (the server is shutting down)."""
        self.healthy, self.problem = False, "shutting down"
        await self.servicer.enter_graceful_shutdown()
