"""``taskorch keys …``: API keys and tenants' rate limits, in the database.

Create, list and revoke API keys, and set tenants' request rate limits, straight in the server's
database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

from taskorch.cli._common import console, errors, print_json, to_json
from taskorch.core.auth import ROLES, KeyRing
from taskorch.core.rate_limits import CACHE_SECONDS, TenantRateLimits
from taskorch.domain.caller import USER
from taskorch.domain.errors import InvalidArgument
from taskorch.store.database import DEFAULT_URL, Database

app = typer.Typer(
    name="keys",
    help="Create, list and revoke API keys, and set tenants' request rate limits (in the "
    "database given by --database-url). Servers check keys with --auth keys (the default); "
    "revoking the last key leaves such a server refusing every call, never open.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DATABASE_URL = typer.Option(
    DEFAULT_URL,
    "--database-url",
    envvar="TASKORCH_DATABASE_URL",
    help="The database of the server (the same as `taskorch serve --database-url`).",
)
T = TypeVar("T")


def _with_ring(database_url: str, work: Callable[[KeyRing], Awaitable[T]]) -> T:
    return _with_db(database_url, lambda db: work(KeyRing(db)))


def _with_limits(database_url: str, work: Callable[[TenantRateLimits], Awaitable[T]]) -> T:
    return _with_db(database_url, lambda db: work(TenantRateLimits(db)))


def _with_db(database_url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(database_url, pool_size=1, writers=1)
        await db.open()
        try:
            return await work(db)
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except InvalidArgument as exc:
        errors.print(f"[red]error[/red]: {exc.message}", highlight=False)
        raise typer.Exit(2) from None
    except OSError as exc:
        errors.print(f"[red]error[/red]: cannot open {database_url}: {exc}", highlight=False)
        raise typer.Exit(1) from None


@app.command("create")
def create(
    tenant: str = typer.Option(..., "--tenant", help="The tenant whose data the key reaches."),
    role: str = typer.Option(
        USER, "--role", help=f"One of {', '.join(ROLES)}: admin sees every tenant."
    ),
    name: str = typer.Option("", "--name", help="A note to recognise the key by."),
    database_url: str = DATABASE_URL,
) -> None:
    """Creates a key and prints it once, alone on the last line (it is stored only hashed)."""
    created = _with_ring(database_url, lambda ring: ring.create(tenant, role, name))
    record = created.record
    errors.print(
        f"created key {record.key_id} (tenant {record.tenant_id}, role {record.role}); "
        "it is shown only now:",
        highlight=False,
    )
    typer.echo(created.secret)


@app.command("list")
def list_keys(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's keys."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line."),
    database_url: str = DATABASE_URL,
) -> None:
    """Lists keys (never the keys themselves: their id, tenant, role and first characters)."""
    records = _with_ring(database_url, lambda ring: ring.list(tenant))
    if json_out:
        for record in records:
            print_json(record)
        return
    for record in records:
        row = to_json(record)
        state = f"revoked {row['revoked_at']}" if record.revoked_at else "active"
        typer.echo(
            f"{record.key_id}  {record.prefix}…  tenant={record.tenant_id}  role={record.role}"
            f"  {state}  {record.name}".rstrip()
        )


@app.command("revoke")
def revoke(
    key: str = typer.Argument(..., help="The key itself or its id."),
    database_url: str = DATABASE_URL,
) -> None:
    """Revokes a key; every server stops accepting it within seconds."""
    record = _with_ring(database_url, lambda ring: ring.revoke(key))
    if record is None:
        errors.print("[red]error[/red]: no active key matches", highlight=False)
        raise typer.Exit(2)
    console.print(f"revoked {record.key_id} (tenant {record.tenant_id})", highlight=False)


@app.command("limit")
def limit(
    tenant: str = typer.Option(..., "--tenant", help="The tenant whose calls are limited."),
    rate: float | None = typer.Option(
        None,
        "--rate",
        help="Requests per second (per server replica); 0: no limit for this tenant, "
        "whatever the server's --tenant-rate-limit.",
    ),
    burst: int | None = typer.Option(
        None,
        "--burst",
        help="Requests at once after a quiet spell (the bucket's size); default: one "
        "second's worth of --rate, at least 1.",
    ),
    default: bool = typer.Option(
        False,
        "--default",
        help="Remove the tenant's own limit: the server's --tenant-rate-limit applies again.",
    ),
    database_url: str = DATABASE_URL,
) -> None:
    """Sets a tenant's request rate limit; every server applies it within seconds.

    Over it, calls get RESOURCE_EXHAUSTED (REST: 429 with Retry-After and X-RateLimit-*).
    """
    if default == (rate is not None):
        errors.print("[red]error[/red]: give either --rate (and --burst) or --default")
        raise typer.Exit(2)
    if default:
        if burst is not None:
            errors.print("[red]error[/red]: --burst goes with --rate, not --default")
            raise typer.Exit(2)
        found = _with_limits(database_url, lambda limits: limits.clear(tenant))
        state = "now has the server's default" if found else "had no limit of its own"
        console.print(f"tenant {tenant.strip()} {state}", highlight=False)
        return
    assert rate is not None
    record = _with_limits(database_url, lambda limits: limits.set(tenant, rate, burst))
    what = (
        "no limit"
        if record.rate_per_second == 0
        else f"{record.rate_per_second:g} requests/s, burst {record.burst}"
    )
    console.print(
        f"tenant {record.tenant_id}: {what} (every server applies it about "
        f"{CACHE_SECONDS:g} s from now)",
        highlight=False,
    )


@app.command("limits")
def list_limits(
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line."),
    database_url: str = DATABASE_URL,
) -> None:
    """Lists the tenants that have their own request rate limit (0: no limit)."""
    records = _with_limits(database_url, lambda limits: limits.list())
    for record in records:
        if json_out:
            print_json(record)
        else:
            typer.echo(
                f"{record.tenant_id}  rate={record.rate_per_second:g}/s  burst={record.burst}"
            )
