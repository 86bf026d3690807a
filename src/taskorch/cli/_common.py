"""What the client commands share: connection options, JSON output, error reporting."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import typer
from rich.console import Console

from taskorch.client import Client, InvalidArgumentError, NotFoundError, TaskorchClientError

console = Console()
errors = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

SERVER = typer.Option(
    "127.0.0.1:50051", "--server", "-s", envvar="TASKORCH_SERVER", help="HOST:PORT of the API."
)
API_KEY = typer.Option(
    None,
    "--api-key",
    envvar="TASKORCH_API_KEY",
    help="API key to send. An OAuth bearer token is taken from $TASKORCH_TOKEN.",
)
JSON_OUT = typer.Option(False, "--json", help="Print JSON (one object per line) for scripts.")


def client(server: str, api_key: str | None) -> Client:
    return Client(server, api_key=api_key, bearer_token=bearer_token())


def bearer_token() -> str | None:
    """The OAuth access token to send, from ``$TASKORCH_TOKEN``.

    It is kept off the command line, where other users of the machine could read it.
    """
    return os.environ.get("TASKORCH_TOKEN") or None


def to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_json(value), ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turns SDK errors into a one-line message on stderr and an exit code (2: bad input)."""
    try:
        yield
    except TaskorchClientError as exc:
        errors.print(f"[red]error[/red]: {exc}", highlight=False)
        if exc.request_id:
            errors.print(f"[dim]request id: {exc.request_id}[/dim]", highlight=False)
        code = 2 if isinstance(exc, InvalidArgumentError | NotFoundError) else 1
        raise typer.Exit(code) from None
