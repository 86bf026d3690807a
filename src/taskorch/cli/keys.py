"""``taskorch keys …``: create, list and revoke API keys, straight in the server's database.

These commands talk to the database, not to a server, so they work before the first key
exists. Keys are checked by servers started with ``--auth keys`` (the default) or
``--auth keys,oauth``; creating or revoking one never switches a server's mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

from taskorch.cli._common import console, errors, print_json, to_json
from taskorch.core.auth import ROLES, KeyRing
from taskorch.core.caller import USER
from taskorch.core.errors import InvalidArgument
from taskorch.store.database import DEFAULT_URL, Database

app = typer.Typer(
    name="keys",
    help="Create, list and revoke API keys (in the database given by --database-url). Servers "
    "check them with --auth keys (the default); revoking the last key leaves such a server "
    "refusing every call, never open.",
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
    async def run() -> T:
        db = Database(database_url, pool_size=1, writers=1)
        await db.open()
        try:
            return await work(KeyRing(db))
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
