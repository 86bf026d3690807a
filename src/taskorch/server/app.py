"""The composition root: assembles store, core, workers and the gRPC server, and runs them.

Start-up order: database (and migrations) → work left running by a previous run is
re-queued → unfinished chat replies resumed → in-process workers → gRPC server (health
NOT_SERVING until the first check) → metrics → gateway → background loops (the scheduler of
schedules among them). Shutdown (SIGTERM/SIGINT) reverses
it: health goes NOT_SERVING, workers stop taking work and finish or re-queue what runs, then
the server, the chat reply followers and the database close.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from taskorch import __version__
from taskorch.config import Settings, is_loopback, split_addr
from taskorch.core.auth import Authenticator, AuthMethod, OAuthConfig, describe_auth_mode
from taskorch.core.backing import Backing
from taskorch.core.chat import ChatService
from taskorch.core.collections import (
    INGEST_TASK,
    CollectionService,
    IngestPlanner,
    ingest_handler,
)
from taskorch.core.directory import WorkerDirectory
from taskorch.core.engine import TaskEngine
from taskorch.core.local_work import LocalWorkSource
from taskorch.core.planning import (
    Catalog,
    ContainerPlanner,
    EchoPlanner,
    InferencePlanner,
    TextAnalysisPlanner,
)
from taskorch.core.rate_limits import RequestRate, TenantRateLimiter
from taskorch.core.schedules import ScheduleService
from taskorch.core.subtasks import SubtaskService
from taskorch.core.tasks import TaskService
from taskorch.core.templates.planner import TemplatePlanner
from taskorch.core.templates.service import TemplateService
from taskorch.core.vector_backends import open_backend
from taskorch.domain.limits import MAX_MESSAGE_BYTES
from taskorch.gateway import routes
from taskorch.gateway.config import GatewaySettings, RateLimit
from taskorch.gateway.descriptor import service_names
from taskorch.gateway.launcher import Gateway, write_descriptor
from taskorch.inference import InferenceEngine
from taskorch.inference.chat_models import EngineChatModels
from taskorch.inference.embedder import EngineEmbedder
from taskorch.server import access, metrics
from taskorch.server.chat_service import ChatServicer
from taskorch.server.collection_service import CollectionServicer
from taskorch.server.health import HealthReporter
from taskorch.server.interceptors import ServerInterceptor, open_access
from taskorch.server.model_service import ModelServicer
from taskorch.server.openai_service import OpenAIServicer
from taskorch.server.reflection import add_reflection
from taskorch.server.schedule_service import ScheduleServicer
from taskorch.server.system_service import SystemServicer
from taskorch.server.task_service import TaskServicer
from taskorch.server.template_service import TemplateServicer
from taskorch.server.web import WebEndpoint, WebSettings
from taskorch.server.worker_service import WorkerServicer
from taskorch.v1 import (
    chat_service_pb2_grpc,
    collection_service_pb2_grpc,
    model_service_pb2_grpc,
    openai_service_pb2_grpc,
    schedule_service_pb2_grpc,
    system_service_pb2_grpc,
    task_service_pb2_grpc,
    template_service_pb2_grpc,
    worker_service_pb2_grpc,
)
from taskorch.workers.handlers import HandlerRegistry, builtin_handlers
from taskorch.workers.inference import inference_handler
from taskorch.workers.loop import WorkerLoop

log = structlog.get_logger("taskorch.server")

LOCAL_WORKER_PREFIX = "local"
RESCUE_INTERVAL = 1.0
STATS_INTERVAL = 5.0
COMPACT_INTERVAL = 1.0
# After a second SIGTERM/SIGINT, how long the rest of the shutdown may take.
HURRY_SECONDS = 5.0
MAX_METADATA_BYTES = 128 * 1024

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Envoy forwards up to 32 KiB of URL and headers and adds its own (a copy of the path):
    # all of it must reach the interceptor (which refuses a value over 16 KiB as bad input),
    # or gRPC's own refusal (RESOURCE_EXHAUSTED with a dump of header sizes) reaches REST
    # clients as a 429.
    ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
    # Refuse to share a port with another process instead of splitting its traffic.
    ("grpc.so_reuseport", 0),
    # Ping idle streams so a dead watcher or worker is noticed within a minute.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    # Calls that arrived but were not yet picked up by the server: past 1000 (the default)
    # gRPC cancels the older ones, so a burst of watchers or workers connecting at once
    # (measured: 3000 streams opened together on one channel) saw ~25% of them CANCELLED.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
]


@dataclass
class Endpoints:
    """Where the running server listens (ports resolved when 0 was asked for)."""

    grpc: str = ""
    http: str = ""
    metrics: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class TaskorchServer:
    """One taskorch server process: API, workers, metrics (and the gateway, when enabled)."""

    def __init__(self, settings: Settings, *, handlers: HandlerRegistry | None = None) -> None:
        self.settings = settings
        # The database and event hub every core service below shares.
        self.backing = Backing(settings.database_url, pool_size=settings.db_pool_size)
        self.db = self.backing.db
        self.hub = self.backing.hub
        self.engine = InferenceEngine(settings.models_dir or Path("var/models"))
        self.templates = TemplateService(self.db)
        self.template_planner = TemplatePlanner(self.templates, self.engine)
        self.catalog = Catalog(
            [
                TextAnalysisPlanner(),
                EchoPlanner(),
                ContainerPlanner(),
                InferencePlanner(self.engine),
                self.template_planner,
                IngestPlanner(),
            ]
        )
        self.directory = WorkerDirectory()
        oauth = None
        if AuthMethod.OAUTH in settings.auth:
            oauth = OAuthConfig(
                jwks=settings.oauth_jwks,
                issuer=settings.oauth_issuer,
                audience=settings.oauth_audience,
                tenant_claim=settings.oauth_tenant_claim,
            )
        # --auth none: nobody is authenticated (and serve allows it on loopback only).
        self.auth = Authenticator(self.db, settings.auth, oauth) if settings.auth else None
        self.rate_limiter = TenantRateLimiter(
            self.db, RequestRate.parse(settings.tenant_rate_limit)
        )
        self.task_engine = TaskEngine(
            self.db,
            self.hub,
            turns=Backing.turns(fair=settings.fair_sharing, weights=dict(settings.tenant_weights)),
        )
        self.tasks = TaskService(
            self.db,
            self.hub,
            self.task_engine,
            self.catalog,
            directory=self.directory,
            max_active_tasks=settings.max_active_tasks,
        )
        self.subtasks = SubtaskService(self.db, self.hub, self.task_engine, self.directory)
        self.schedules = ScheduleService(self.db, self.tasks)
        self.collections = CollectionService(self.db, EngineEmbedder(self.engine), tasks=self.tasks)
        self.chat = ChatService(
            self.db,
            self.hub,
            self.tasks,
            EngineChatModels(self.engine),
            retriever=self.collections,
        )
        self.handlers = handlers or builtin_handlers()
        if "inference" not in self.handlers:
            self.handlers.register(
                "inference", inference_handler(self.engine), description="ONNX Runtime models"
            )
        if INGEST_TASK not in self.handlers:
            self.handlers.register(
                INGEST_TASK,
                ingest_handler(self.collections),
                description="large adds of documents to collections",
            )
        self.workers: list[WorkerLoop] = []
        self.endpoints = Endpoints()
        self._grpc: grpc.aio.Server | None = None
        self._health_servicer = health.aio.HealthServicer()
        self._health = HealthReporter(
            self._health_servicer,
            self.db.ping,
            [s.full_name for s in routes.services()],
            workers_alive=lambda: all(w.alive for w in self.workers),
        )
        self._background: list[asyncio.Task[None]] = []
        self._queued_kinds: set[str] = set()
        self._metrics_server: Any = None
        self._stopped = asyncio.Event()
        self._fatal = asyncio.Event()
        self.gateway: Gateway | None = None
        self.web: WebEndpoint | None = None
        self._gateway_dir: Path | None = None
        # Started by a second signal: ends the process if the shutdown still runs.
        self._watchdog: threading.Timer | None = None
        self._cut_calls: asyncio.Task[None] | None = None
        self.hub.add_listener(metrics.observe_task_event)
        metrics.DATABASE_WRITES.db = self.db

    @property
    def local_worker_prefix(self) -> str:
        """The prefix of this server's in-process workers' ids."""
        return f"{LOCAL_WORKER_PREFIX}-{socket.gethostname()}-"

    async def start(self) -> None:
        """Opens the database, starts the workers and serves the APIs (returns when up)."""
        try:
            # Before anything touches the file: a second server would re-queue our work.
            self.backing.lock()
        except Exception:
            self._stopped.set()  # nothing was started: nothing to stop
            raise
        log.info(
            "starting taskorch",
            version=__version__,
            database=self.db.describe(),
            event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
        )
        # On PostgreSQL this also starts listening to the other replicas: their events for
        # watchers here, their work for idle takers.
        await self.backing.open()
        await self._check_access()
        # Chosen before anything slow starts: a backend that cannot run stops the server now.
        self.collections.vectors = await open_backend(
            self.db, self.settings.vector_backend, self.settings.qdrant_url
        )
        self.engine.models_dir.mkdir(parents=True, exist_ok=True)
        await self.engine.start()
        if self.db.is_sqlite:
            # One SQLite file has one server: whatever its local workers held was lost.
            await self.task_engine.expire_leases_of(self.local_worker_prefix)
        # Delayed tasks that came due while the service was down run now; the timer for
        # the next one is armed.
        await self.task_engine.promote_due()
        await self.chat.start()
        await self.collections.start()
        self._start_workers()
        await self._start_grpc()
        self._start_metrics()
        await self._health.check()
        await self._start_web()
        if self.settings.gateway:
            await self._start_gateway()
        self._background += [
            asyncio.create_task(self._health.run(), name="health"),
            asyncio.create_task(self._rescue_leases(), name="lease-rescuer"),
            asyncio.create_task(self._refresh_stats(), name="stats"),
            asyncio.create_task(self._compact_counts(), name="count-compaction"),
            asyncio.create_task(self.schedules.run(), name="scheduler"),
        ]
        self._announce()

    async def _check_access(self) -> None:
        """Secure by default: ``--auth none`` only on loopback addresses (or with --insecure).

        The mode is the one given, whatever keys exist; what it means is logged once here.
        """
        mode = describe_auth_mode(self.settings.auth)
        exposed = [a for a in (self.settings.grpc_addr, self.settings.http_addr) if a]
        if self.auth is not None:
            if AuthMethod.KEYS in self.settings.auth and not await self._active_keys():
                log.warning(
                    "authentication: no active API key yet, so every call but health and "
                    "reflection is refused until one is created (taskorch keys create)",
                    auth=mode,
                )
            else:
                log.info("authentication required", auth=mode)
            self._warn_open_metrics()
            return
        public = [a for a in exposed if not is_loopback(a)]
        if public and not self.settings.insecure:
            raise OSError(
                f"refusing to serve {', '.join(public)} with --auth none: require credentials "
                "with --auth keys (taskorch keys create --tenant NAME) or --auth oauth, or "
                "pass --insecure"
            )
        keys = await self._active_keys()
        log.warning(
            "NO AUTHENTICATION (--auth none): every caller acts as the default tenant"
            + (f"; the {keys} active API key(s) are not checked" if keys else ""),
            listening=exposed,
        )

    async def _active_keys(self) -> int:
        """Reported at start-up only: how many keys exist never switches anything."""
        return await self.backing.active_key_count()

    def _warn_open_metrics(self) -> None:
        metrics_addr = self.settings.metrics_addr
        if metrics_addr and not is_loopback(metrics_addr):
            log.warning(
                "the metrics port answers without credentials and covers every tenant: keep "
                "it on a private network",
                metrics=metrics_addr,
            )

    def _start_workers(self) -> None:
        if self.settings.workers <= 0:
            log.info("no in-process workers: work runs only on remote workers")
            return
        worker = WorkerLoop(
            LocalWorkSource(self.task_engine, self.hub),
            self.handlers,
            worker_id=f"{self.local_worker_prefix}{os.getpid()}",
            concurrency=self.settings.workers,
            run_ahead=self.settings.run_ahead,
            lease_seconds=self.settings.lease_seconds,
        )
        worker.start()
        self.workers.append(worker)
        self.directory.register_local(worker.worker_id, worker.identity.kinds)

    async def _start_grpc(self) -> None:
        grpc_server = grpc.aio.server(
            interceptors=[
                ServerInterceptor(
                    access.checked(self.auth) if self.auth else open_access, self.rate_limiter
                )
            ],
            options=GRPC_OPTIONS,
        )
        server = GenericHandlersOnly(grpc_server)
        task_service_pb2_grpc.add_TaskServiceServicer_to_server(
            TaskServicer(self.tasks, self.subtasks), server
        )
        template_service_pb2_grpc.add_TemplateServiceServicer_to_server(
            TemplateServicer(self.templates, self.template_planner), server
        )
        schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server(
            ScheduleServicer(self.schedules, self.tasks), server
        )
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
            WorkerServicer(self.task_engine, self.directory), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.engine), server
        )
        chat_service_pb2_grpc.add_ChatServiceServicer_to_server(ChatServicer(self.chat), server)
        collection_service_pb2_grpc.add_CollectionServiceServicer_to_server(
            CollectionServicer(self.collections), server
        )
        openai_service_pb2_grpc.add_OpenAIServiceServicer_to_server(
            OpenAIServicer(self.engine), server
        )
        system_service_pb2_grpc.add_SystemServiceServicer_to_server(
            SystemServicer(self.tasks, self._health, self.workers), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health_servicer, server)
        names = [s.full_name for s in routes.services()]
        add_reflection(server, [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
        host, port = split_addr(self.settings.grpc_addr)
        try:
            bound = grpc_server.add_insecure_port(f"{_bracket(host)}:{port}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise OSError(f"cannot listen on {self.settings.grpc_addr} (is it in use?)")
        await grpc_server.start()
        self._grpc = grpc_server
        self.endpoints.grpc = f"{_bracket(host)}:{bound}"

    def _start_metrics(self) -> None:
        if not self.settings.metrics_addr:
            return
        host, port = split_addr(self.settings.metrics_addr)
        server, _thread = start_http_server(port, addr=host)
        self._metrics_server = server
        self.endpoints.metrics = f"http://{_bracket(host)}:{server.server_port}/metrics"

    async def _start_web(self) -> None:
        """Starts the web endpoint: the dashboard, /docs and WebSockets.

        Envoy serves them (with the gateway, or on its own when --web-addr names a port).
        """
        addr = self.settings.web_addr
        if not addr or (not self.settings.gateway and split_addr(addr)[1] == 0):
            return
        authenticate = access.checked(self.auth) if self.auth else open_access
        self.web = WebEndpoint(
            WebSettings(addr, self.settings.cors_origins), self.tasks, self.chat, authenticate
        )
        await self.web.start()
        self.endpoints.extra["web"] = f"http://{self.web.address}"

    async def _start_gateway(self) -> None:
        self._gateway_dir = Path(tempfile.mkdtemp(prefix="taskorch-gateway-"))
        descriptor = write_descriptor(self._gateway_dir)
        settings = GatewaySettings(
            listen=self.settings.http_addr,
            upstreams=[self.endpoints.grpc],
            descriptor=descriptor,
            admin=f"127.0.0.1:{free_port()}",
            rate_limit=RateLimit.parse(self.settings.rate_limit),
            services=service_names(),
            web=self.web.address if self.web is not None else None,
            cors_origins=self.settings.cors_origins,
        )
        self.gateway = Gateway(settings, self._gateway_dir)
        await self.gateway.start()
        self.endpoints.http = f"http://{self.settings.http_addr}"
        self._background.append(asyncio.create_task(self._watch_gateway(), name="gateway"))

    async def _watch_gateway(self) -> None:
        assert self.gateway is not None
        code = await self.gateway.wait()
        if not self.gateway.stopping:
            log.error("the gateway (envoy) died; shutting down", exit_code=code)
            self._fatal.set()

    def _announce(self) -> None:
        models = self.engine.models()
        log.info(
            "taskorch is serving",
            models=[f"{m.name}: {m.state} on {m.execution_provider or '-'}" for m in models],
            grpc=self.endpoints.grpc,
            metrics=self.endpoints.metrics or "off",
            rest=self.endpoints.http or "off (no gateway)",
            dashboard=f"{self.endpoints.http}/" if self.endpoints.http and self.web else "off",
            web_endpoint=self.endpoints.extra.get("web", "off"),
            cors_origins=list(self.settings.cors_origins) or "none",
            tenant_rate_limit=self.rate_limiter.default.describe() + " per replica",
            workers=self.settings.workers,
            kinds=list(self.handlers.kinds()),
        )
        for route in routes.routes():
            log.info(
                "route",
                http=f"{route.http_method} {route.path}",
                rpc=f"{route.service}/{route.rpc}",
                stream=route.server_streaming or None,
            )

    async def _rescue_leases(self) -> None:
        while True:
            await asyncio.sleep(RESCUE_INTERVAL)
            try:
                # One batch: both transitions are queued before the writer takes them.
                expired, _ = await asyncio.gather(
                    self.task_engine.rescue_expired(), self.task_engine.promote_due()
                )
                metrics.LEASE_EXPIRIES.inc(expired)
            except Exception as exc:
                log.warning("lease rescue failed", error=str(exc))

    async def _compact_counts(self) -> None:
        while True:
            await asyncio.sleep(COMPACT_INTERVAL)
            try:
                await self.backing.compact_counts()
            except Exception as exc:
                log.warning("count compaction failed", error=str(exc))

    async def _refresh_stats(self) -> None:
        from taskorch.domain.caller import SYSTEM

        while True:
            try:
                counts = await self.tasks.counts(SYSTEM)
                for status, count in counts.items():
                    metrics.TASKS_BY_STATUS.labels(status.name.lower()).set(count)
                depth = await self.backing.queue_depth()
                for kind in set(depth) | self._queued_kinds:
                    metrics.QUEUE_DEPTH.labels(kind).set(depth.get(kind, 0))
                self._queued_kinds |= set(depth)
            except Exception as exc:
                log.debug("stats refresh failed", error=str(exc))
            await asyncio.sleep(STATS_INTERVAL)

    async def stop(self) -> None:
        """Drains workers, then stops serving and closes the database."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("shutting down", drain_seconds=self.settings.drain_seconds)
        await self._health.shutdown()
        if self.web is not None:
            await self.web.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(w.stop(self.settings.drain_seconds) for w in self.workers))
        for worker in self.workers:
            if isinstance(worker.source, LocalWorkSource):
                await worker.source.close()
        if self._grpc is not None:
            await self._grpc.stop(grace=None if self._watchdog is not None else 2.0)
        await self.chat.close()
        await self.collections.close()
        await self.engine.close()
        if self.gateway is not None:
            await self.gateway.stop()
        if self._gateway_dir is not None:
            shutil.rmtree(self._gateway_dir, ignore_errors=True)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        await self.backing.close()
        log.info("stopped")

    async def serve(self) -> int:
        """Starts, then runs until SIGTERM or SIGINT, then shuts down gracefully.

        A second signal cuts the shutdown short (see :meth:`hurry`); a third exits at once.
        The handlers stay installed until the shutdown is over: a signal that found Python's
        default handler there raised KeyboardInterrupt mid-shutdown, and asyncio then waited
        for ever on tasks it could not cancel (issue 22 item 6).

        Returns:
            The exit code: 0, 1 when a part the server needs (the gateway) died, or 128 plus
            the second signal's number when one cut the shutdown short (130 for Ctrl-C).
        """
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals: list[int] = []

        def on_signal(sig: int) -> None:
            signals.append(sig)
            if len(signals) == 1:
                log.info("signal received: shutting down", signal=signal.Signals(sig).name)
                stop.set()
            elif len(signals) == 2:
                self.hurry(128 + sig)
            else:
                self._abandon(128 + signals[1])

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            try:
                await self.start()
                stopped = asyncio.create_task(stop.wait())
                fatal = asyncio.create_task(self._fatal.wait())
                await asyncio.wait({stopped, fatal}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                fatal.cancel()
                code = 1 if self._fatal.is_set() else 0
            finally:
                await self.stop()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            if self._watchdog is not None:
                self._watchdog.cancel()
        return 128 + signals[1] if len(signals) > 1 else code

    def hurry(self, exit_code: int) -> None:
        """Cuts the shutdown short (a second signal).

        Running work is handed back now instead of after the drain, open calls are cut, and whatever
        still runs after ``HURRY_SECONDS`` is abandoned (Envoy killed, its folder removed, the
        process ended with ``exit_code``).
        """
        if self._watchdog is not None:
            return
        log.warning(
            "second signal: handing running work back now and exiting",
            within_seconds=HURRY_SECONDS,
        )
        self._watchdog = threading.Timer(HURRY_SECONDS, self._abandon, (exit_code,))
        self._watchdog.daemon = True
        self._watchdog.start()
        for worker in self.workers:
            worker.hurry()
        if self._grpc is not None:  # grpc.aio: a later stop with a shorter grace wins
            self._cut_calls = asyncio.create_task(self._grpc.stop(None), name="cut calls")

    def _abandon(self, exit_code: int) -> None:
        """Ends the process now (from any thread): stops Envoy, removes its folder, exits.

        Work that was running stays leased and is re-queued by the next start (SQLite) or
        when its lease expires (PostgreSQL).
        """
        log.error("shutdown abandoned: exiting now", exit_code=exit_code)
        process = self.gateway.process if self.gateway is not None else None
        if process is not None and process.returncode is None:
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGKILL)
        if self._gateway_dir is not None:
            shutil.rmtree(self._gateway_dir, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


def free_port() -> int:
    """A TCP port of 127.0.0.1 free at the time of the call."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GenericHandlersOnly:
    """Adds servicers to a grpc.aio server through generic handlers only.

    The generated ``add_*Servicer_to_server`` functions also register every method with the
    server. grpc.aio (1.85) then keeps one pending "next call" future per registered method and
    waits on all of them (``asyncio.wait``) for every call that arrives, so each call costs time
    in proportion to the number of methods. With the ~50 methods here, measured on the
    reference machine (GetModel, concurrency 8): 0.70-0.85 ms of server CPU per call through
    generic handlers against 0.79-0.88 ms registered, 4-25% more calls/s. Generic handlers
    serve the same methods through one future; the interceptor caches the handler of each
    method, so lookups stay cheap.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Adds handlers to the server (what the generated code calls)."""
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers: Any) -> None:
        """Not registered: the generic handler added with them serves these methods."""


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
