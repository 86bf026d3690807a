"""``taskorch gateway render|openapi``: the gateway's configuration for people who run Envoy."""

from __future__ import annotations

from pathlib import Path

import typer

from taskorch.config import DEFAULT_GRPC_ADDR, DEFAULT_HTTP_ADDR
from taskorch.gateway import openapi
from taskorch.gateway.config import GatewaySettings, RateLimit, parse_origins, render_yaml
from taskorch.gateway.descriptor import descriptor_set, service_names

app = typer.Typer(no_args_is_help=True)


@app.command()
def render(
    upstream: list[str] = typer.Option(
        [DEFAULT_GRPC_ADDR],
        "--upstream",
        "-u",
        help="gRPC address of a taskorch server; repeat for several replicas.",
    ),
    http_addr: str = typer.Option(DEFAULT_HTTP_ADDR, "--http-addr", help="Where Envoy listens."),
    admin_addr: str = typer.Option("127.0.0.1:9901", "--admin-addr", help="Envoy's admin API."),
    descriptor: Path = typer.Option(
        Path("gateway/taskorch.pb"),
        "--descriptor",
        help="Descriptor set path written into the config (--write-assets creates it).",
    ),
    rate_limit: str = typer.Option(
        "100/60s,20/10s", "--rate-limit", help="SUSTAINED[,BURST] as TOKENS/PERIOD, or 'off'."
    ),
    web_upstream: str = typer.Option(
        "127.0.0.1:8081",
        "--web-upstream",
        help="The servers' web endpoint (serve --web-addr): dashboard, /docs, WebSockets. "
        "'' leaves those routes out.",
    ),
    cors_origins: str = typer.Option(
        "",
        "--cors-origins",
        help="Comma-separated origins whose pages may call the API ('*': any; default none).",
    ),
    write_descriptor: bool = typer.Option(
        False, "--write-descriptor", help="Also write the descriptor set to --descriptor."
    ),
) -> None:
    """Print the Envoy configuration (YAML) for a gateway in front of the given servers.

    ``/metrics`` goes to a server like any call (admin credentials needed where the server
    requires credentials); scrape each server's metrics port for every replica's figures.
    """
    try:
        limit = RateLimit.parse(rate_limit)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rate-limit") from None
    try:
        origins = parse_origins(cors_origins)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--cors-origins") from None
    if write_descriptor:
        descriptor.parent.mkdir(parents=True, exist_ok=True)
        descriptor.write_bytes(descriptor_set())
    settings = GatewaySettings(
        listen=http_addr,
        upstreams=upstream,
        descriptor=descriptor,
        admin=admin_addr,
        rate_limit=limit,
        services=service_names(),
        web=web_upstream or None,
        cors_origins=origins,
    )
    typer.echo(render_yaml(settings), nl=False)


@app.command("openapi")
def openapi_command() -> None:
    """Print the OpenAPI 3 document of the REST surface."""
    typer.echo(openapi.document_json(), nl=False)
