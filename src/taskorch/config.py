"""Settings of a taskorch server, from command-line flags and their TASKORCH_* twins."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taskorch.core.auth import AuthMethod
from taskorch.store.database import DEFAULT_URL

DEFAULT_GRPC_ADDR = "127.0.0.1:50051"
DEFAULT_HTTP_ADDR = "127.0.0.1:8080"
DEFAULT_METRICS_ADDR = "127.0.0.1:9464"
# The web endpoint (dashboard, /docs, WebSockets) only Envoy talks to: any free loopback port.
DEFAULT_WEB_ADDR = "127.0.0.1:0"
DEFAULT_MODELS_DIR = Path("var/models")
# Fail closed: a server started without --auth requires API keys (make serve asks for none).
DEFAULT_AUTH = "keys"


@dataclass(frozen=True)
class Settings:
    grpc_addr: str = DEFAULT_GRPC_ADDR
    http_addr: str = DEFAULT_HTTP_ADDR
    metrics_addr: str = DEFAULT_METRICS_ADDR
    database_url: str = DEFAULT_URL
    models_dir: Path | None = DEFAULT_MODELS_DIR
    gateway: bool = True
    workers: int = 4
    rate_limit: str = "100/60s,20/10s"
    lease_seconds: float = 30.0
    drain_seconds: float = 30.0
    db_pool_size: int = 4
    log_level: str = "info"
    log_format: str = "auto"
    # Which credentials are required (--auth): API keys, OAuth bearer tokens or both; empty
    # means none are checked, which serve allows on loopback addresses only.
    auth: frozenset[AuthMethod] = frozenset({AuthMethod.KEYS})
    # Serve with --auth none on a non-loopback address (never the default).
    insecure: bool = False
    # OAuth bearer tokens: a JWKS file or URL, the issuer and the audience to accept.
    oauth_jwks: str = ""
    oauth_issuer: str = ""
    oauth_audience: str = ""
    oauth_tenant_claim: str = "tenant"
    # Unfinished (pending or running) tasks a tenant may have at once; 0 means no limit.
    max_active_tasks: int = 10_000
    # The web endpoint behind Envoy ("" turns the dashboard and WebSockets off).
    web_addr: str = DEFAULT_WEB_ADDR
    # Origins whose pages may call REST and open WebSockets (CORS); empty: none.
    cors_origins: tuple[str, ...] = ()
    # Where collections' vectors are searched: auto (pgvector on a PostgreSQL that has it,
    # else faiss), faiss, pgvector or qdrant (at qdrant_url).
    vector_backend: str = "auto"
    qdrant_url: str = ""


def split_addr(addr: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` → ``("127.0.0.1", 8080)``; ``"[::1]:80"`` works too.

    Raises:
        ValueError: no port, or a port out of range.
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{addr!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(addr: str) -> bool:
    import ipaddress

    host, _ = split_addr(addr)
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
