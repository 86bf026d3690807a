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
    # Leases the in-process workers keep in hand beyond their slots while the work is short
    # (None: four per slot; 0: never).
    run_ahead: int | None = None
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
    # Requests per second (and burst) of a tenant without its own limit (`taskorch keys
    # limit`), per replica: "RPS[:BURST]"; "0" means no limit (the default).
    tenant_rate_limit: str = "0"
    # The web endpoint behind Envoy ("" turns the dashboard and WebSockets off).
    web_addr: str = DEFAULT_WEB_ADDR
    # Origins whose pages may call REST and open WebSockets (CORS); empty: none.
    cors_origins: tuple[str, ...] = ()
    # Where collections' vectors are searched: auto (pgvector on a PostgreSQL that has it,
    # else faiss), faiss, pgvector or qdrant (at qdrant_url).
    vector_backend: str = "auto"
    qdrant_url: str = ""
    # Tenants with work queued take turns (weighted); off: first come, first served.
    fair_sharing: bool = True
    # Tenant id -> weight in fair sharing (tenants not named weigh 1).
    tenant_weights: tuple[tuple[str, float], ...] = ()


# The weights a tenant may have in fair sharing: a tenant of weight 100 gets a hundred turns
# to one of weight 1.
MIN_TENANT_WEIGHT = 0.01
MAX_TENANT_WEIGHT = 100.0


def parse_tenant_weights(text: str) -> tuple[tuple[str, float], ...]:
    """``"acme=2,beta=0.5"`` → ``(("acme", 2.0), ("beta", 0.5))``.

    Raises:
        ValueError: an entry that is not TENANT=WEIGHT, or a weight out of range.
    """
    weights: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        tenant, sep, value = entry.partition("=")
        tenant = tenant.strip()
        try:
            weight = float(value) if sep and tenant else float("nan")
        except ValueError:
            weight = float("nan")
        if weight != weight:
            raise ValueError(f"{entry!r} is not TENANT=WEIGHT (e.g. acme=2)")
        if not MIN_TENANT_WEIGHT <= weight <= MAX_TENANT_WEIGHT:
            raise ValueError(
                f"the weight of tenant {tenant!r} is {weight:g}; it must be between "
                f"{MIN_TENANT_WEIGHT:g} and {MAX_TENANT_WEIGHT:g}"
            )
        weights[tenant] = weight
    return tuple(weights.items())


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
