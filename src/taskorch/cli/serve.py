"""``taskorch serve``: run the server until SIGTERM or Ctrl-C."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from taskorch import logs
from taskorch.cli import _loop
from taskorch.config import (
    DEFAULT_AUTH,
    DEFAULT_GRPC_ADDR,
    DEFAULT_HTTP_ADDR,
    DEFAULT_METRICS_ADDR,
    DEFAULT_MODELS_DIR,
    DEFAULT_WEB_ADDR,
    Settings,
)
from taskorch.core.auth import AuthMethod, parse_auth_mode
from taskorch.store.database import DEFAULT_URL

# Another server holds the SQLite database (exit 1 is every other start-up failure).
EXIT_DATABASE_IN_USE = 3


class VectorBackend(StrEnum):
    """Where collections keep their vectors (``--vector-backend``)."""

    AUTO = "auto"
    FAISS = "faiss"
    PGVECTOR = "pgvector"
    QDRANT = "qdrant"


def serve(
    grpc_addr: str = typer.Option(
        DEFAULT_GRPC_ADDR, envvar="TASKORCH_GRPC_ADDR", help="Where the gRPC API listens."
    ),
    http_addr: str = typer.Option(
        DEFAULT_HTTP_ADDR,
        envvar="TASKORCH_HTTP_ADDR",
        help="Where Envoy serves REST (and gRPC passthrough).",
    ),
    metrics_addr: str = typer.Option(
        DEFAULT_METRICS_ADDR,
        envvar="TASKORCH_METRICS_ADDR",
        help="Where Prometheus metrics are served ('' to turn off).",
    ),
    database_url: str = typer.Option(
        DEFAULT_URL,
        envvar="TASKORCH_DATABASE_URL",
        help="sqlite:///FILE (default) or postgresql+asyncpg://USER@HOST/DB. One server per "
        "SQLite file: a second one exits with code 3 before touching it (FILE.lock).",
    ),
    models_dir: Path = typer.Option(
        DEFAULT_MODELS_DIR,
        envvar="TASKORCH_MODELS_DIR",
        help="Model repository: one folder per ONNX model.",
    ),
    no_gateway: bool = typer.Option(
        False, "--no-gateway", envvar="TASKORCH_NO_GATEWAY", help="Do not start Envoy."
    ),
    rate_limit: str = typer.Option(
        "100/60s,20/10s",
        envvar="TASKORCH_RATE_LIMIT",
        help="Gateway limit per client address: SUSTAINED[,BURST] as TOKENS/PERIOD, or 'off'.",
    ),
    workers: int = typer.Option(
        4,
        envvar="TASKORCH_WORKERS",
        min=0,
        help="Subtasks run at once by in-process workers (0: only remote workers run work).",
    ),
    run_ahead: int | None = typer.Option(
        None,
        "--run-ahead",
        envvar="TASKORCH_RUN_AHEAD",
        min=0,
        help="While the work is short (under 0.05 s a subtask), the in-process workers keep "
        "up to this many more subtasks in hand than --workers, so a freed slot starts the "
        "next at once instead of waiting for its report to commit (default: four per slot; "
        "0: never).",
    ),
    lease_seconds: float = typer.Option(
        30.0, envvar="TASKORCH_LEASE_SECONDS", min=1.0, help="Lease length of in-process work."
    ),
    drain_seconds: float = typer.Option(
        30.0,
        envvar="TASKORCH_DRAIN_SECONDS",
        min=0.0,
        help="On SIGTERM or Ctrl-C, how long running work may finish before it is re-queued "
        "(a second signal cuts it short and exits within 5 s with 130 or 143).",
    ),
    log_level: str = typer.Option("info", envvar="TASKORCH_LOG_LEVEL", help="debug|info|warning"),
    log_format: str = typer.Option(
        "auto", envvar="TASKORCH_LOG_FORMAT", help="json|console|auto (console on a terminal)."
    ),
    auth: str = typer.Option(
        DEFAULT_AUTH,
        envvar="TASKORCH_AUTH",
        help="Credentials every call needs (health and reflection excepted): 'keys' (API keys "
        "from `taskorch keys create`, the default), 'oauth' (bearer tokens, see --oauth-*), "
        "'keys,oauth' (either), or 'none' (everyone is the default tenant; loopback "
        "addresses only unless --insecure). Fixed for the server's life: creating or revoking "
        "keys never switches it.",
    ),
    insecure: bool = typer.Option(
        False,
        "--insecure",
        envvar="TASKORCH_INSECURE",
        help="Allow --auth none on a non-loopback address (everyone is the default tenant). "
        "Without it such a server refuses to start.",
    ),
    oauth_jwks: str = typer.Option(
        "",
        envvar="TASKORCH_OAUTH_JWKS",
        help="With --auth oauth: accept bearer tokens (RS256/ES256 JWTs) signed by the keys of "
        "this JWKS file or URL. Needs --oauth-issuer and --oauth-audience.",
    ),
    oauth_issuer: str = typer.Option(
        "", envvar="TASKORCH_OAUTH_ISSUER", help="The `iss` bearer tokens must carry."
    ),
    oauth_audience: str = typer.Option(
        "", envvar="TASKORCH_OAUTH_AUDIENCE", help="The `aud` bearer tokens must carry."
    ),
    oauth_tenant_claim: str = typer.Option(
        "tenant",
        envvar="TASKORCH_OAUTH_TENANT_CLAIM",
        help="The token claim naming the caller's tenant.",
    ),
    max_active_tasks: int = typer.Option(
        10_000,
        envvar="TASKORCH_MAX_ACTIVE_TASKS",
        min=0,
        help="Unfinished (pending or running) tasks a tenant may have at once; more are "
        "refused with RESOURCE_EXHAUSTED (HTTP 429). 0: no limit.",
    ),
    tenant_rate_limit: str = typer.Option(
        "0",
        envvar="TASKORCH_TENANT_RATE_LIMIT",
        help="Requests per second of each tenant without its own limit (taskorch keys limit), "
        "as RPS[:BURST] (burst: requests at once, default one second's worth), counted per "
        "replica; over it calls get RESOURCE_EXHAUSTED (HTTP 429 with Retry-After and "
        "X-RateLimit-*). 0 (the default): no limit.",
    ),
    web_addr: str = typer.Option(
        DEFAULT_WEB_ADDR,
        envvar="TASKORCH_WEB_ADDR",
        help="Where the web endpoint (dashboard at /, /docs, WebSockets at /ws/tasks and "
        "/ws/chat) listens for Envoy, which serves it on --http-addr; port 0 picks a free "
        "one. With --no-gateway it starts only when this names a port. '' turns it off.",
    ),
    cors_origins: str = typer.Option(
        "",
        envvar="TASKORCH_CORS_ORIGINS",
        help="Comma-separated origins (https://app.example.com) whose pages may call the "
        "REST API and open WebSockets; '*' allows any. Default: none (same origin only).",
    ),
    fair_sharing: bool = typer.Option(
        True,
        "--fair-sharing/--no-fair-sharing",
        envvar="TASKORCH_FAIR_SHARING",
        help="Tenants with work queued take turns (within a priority; higher priority still "
        "runs first), so one tenant's burst does not hold back another's work. Off: first "
        "come, first served.",
    ),
    tenant_weights: str = typer.Option(
        "",
        envvar="TASKORCH_TENANT_WEIGHTS",
        help="Comma-separated TENANT=WEIGHT (e.g. acme=2,trial=0.5): a tenant of weight 2 "
        "takes two turns to another's one when both have work queued. Others weigh 1; "
        "weights go from 0.01 to 100.",
    ),
    vector_backend: VectorBackend = typer.Option(
        VectorBackend.AUTO,
        envvar="TASKORCH_VECTOR_BACKEND",
        help="Where collections' vectors are searched. faiss: an index in this process, "
        "rebuilt from the database (exact below 10,000 chunks, HNSW above). pgvector: HNSW "
        "indexes inside the PostgreSQL database, shared by every replica (needs the vector "
        "extension). qdrant: a Qdrant collection per collection, at --qdrant-url. auto: "
        "pgvector when the database is PostgreSQL with (or allowed to create) the vector "
        "extension, else faiss.",
        case_sensitive=False,
    ),
    qdrant_url: str = typer.Option(
        "",
        envvar="TASKORCH_QDRANT_URL",
        help="Qdrant for --vector-backend qdrant: http(s)://HOST:6333 for a server "
        "(TASKORCH_QDRANT_API_KEY its key), ':memory:' or a directory (path:/dir) for "
        "qdrant-client's local mode (one process per directory; for tests and trials).",
    ),
    event_loop: _loop.EventLoop = typer.Option(
        _loop.EventLoop.UVLOOP,
        envvar="TASKORCH_EVENT_LOOP",
        help="The event loop the server runs on (uvloop, where installed, costs gRPC less CPU "
        "per call; asyncio is Python's own).",
    ),
) -> None:
    """Run the server: gRPC API, in-process workers, REST gateway and metrics."""
    logs.configure(log_level, log_format)
    methods = _auth_methods(auth, oauth_jwks, oauth_issuer, oauth_audience)
    settings = Settings(
        grpc_addr=grpc_addr,
        http_addr=http_addr,
        metrics_addr=metrics_addr,
        database_url=database_url,
        models_dir=models_dir,
        gateway=not no_gateway,
        workers=workers,
        run_ahead=run_ahead,
        rate_limit=rate_limit,
        lease_seconds=lease_seconds,
        drain_seconds=drain_seconds,
        log_level=log_level,
        log_format=log_format,
        auth=methods,
        insecure=insecure,
        oauth_jwks=oauth_jwks,
        oauth_issuer=oauth_issuer,
        oauth_audience=oauth_audience,
        oauth_tenant_claim=oauth_tenant_claim,
        max_active_tasks=max_active_tasks,
        tenant_rate_limit=tenant_rate_limit,
        web_addr=web_addr,
        cors_origins=_origins(cors_origins),
        fair_sharing=fair_sharing,
        tenant_weights=_weights(tenant_weights),
        vector_backend=vector_backend.value,
        qdrant_url=qdrant_url,
    )
    from taskorch.gateway.config import RateLimit
    from taskorch.gateway.launcher import GatewayError
    from taskorch.server.app import TaskorchServer

    try:
        RateLimit.parse(rate_limit)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rate-limit") from None
    from taskorch.core.rate_limits import RequestRate
    from taskorch.domain.errors import InvalidArgument

    try:
        RequestRate.parse(tenant_rate_limit)
    except InvalidArgument as exc:
        raise typer.BadParameter(exc.message, param_hint="--tenant-rate-limit") from None
    from taskorch.core.vector_backends import BackendUnavailable
    from taskorch.store.sqlite_lock import DatabaseInUse

    try:
        code = _loop.run(TaskorchServer(settings).serve(), event_loop)
    except DatabaseInUse as exc:
        typer.echo(f"taskorch: {exc}", err=True)
        raise typer.Exit(EXIT_DATABASE_IN_USE) from None
    except (OSError, GatewayError, BackendUnavailable) as exc:
        typer.echo(f"taskorch: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _weights(text: str) -> tuple[tuple[str, float], ...]:
    from taskorch.config import parse_tenant_weights

    try:
        return parse_tenant_weights(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tenant-weights") from None


def _origins(text: str) -> tuple[str, ...]:
    from taskorch.gateway.config import parse_origins

    try:
        return parse_origins(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--cors-origins") from None


def _auth_methods(auth: str, jwks: str, issuer: str, audience: str) -> frozenset[AuthMethod]:
    """The --auth mode, checked against the --oauth-* flags (each needs the other)."""
    try:
        methods = parse_auth_mode(auth)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--auth") from None
    if AuthMethod.OAUTH in methods:
        if not (jwks and issuer and audience):
            raise typer.BadParameter(
                "--auth oauth needs --oauth-jwks, --oauth-issuer and --oauth-audience",
                param_hint="--auth",
            )
    elif jwks or issuer or audience:
        raise typer.BadParameter(
            "bearer tokens are configured but --auth does not accept them: add oauth "
            "(--auth oauth or --auth keys,oauth)",
            param_hint="--auth",
        )
    return methods
