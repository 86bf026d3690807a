"""The ``taskorch`` command: ``serve``, ``task …``, ``chat`` (more sub-commands as they land)."""

from __future__ import annotations

import typer

from taskorch import __version__
from taskorch.cli.chat import chat
from taskorch.cli.collections import app as collections_app
from taskorch.cli.gateway import app as gateway_app
from taskorch.cli.keys import app as keys_app
from taskorch.cli.models import app as models_app
from taskorch.cli.schedules import app as schedules_app
from taskorch.cli.serve import serve
from taskorch.cli.tasks import app as task_app
from taskorch.cli.worker import worker

app = typer.Typer(
    name="taskorch",
    help="Queue, schedule, run and stream AI tasks over gRPC (REST through Envoy).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(help="Run the server: gRPC API, in-process workers, REST gateway and metrics.")(serve)
app.command(help="Run a worker: take and run work of a server (remote worker).")(worker)
app.add_typer(task_app, name="task", help="Submit, inspect, list, watch and cancel tasks.")
app.command(help="Chat with a model: replies stream token by token; Ctrl-C cancels one.")(chat)
app.add_typer(
    collections_app, name="collections", help="Collections of documents: add, search, delete."
)
app.add_typer(gateway_app, name="gateway", help="Envoy configuration and OpenAPI document.")
app.add_typer(keys_app, name="keys", help="Create, list and revoke API keys.")
app.add_typer(models_app, name="models", help="The model repository: import, defaults, list.")
app.add_typer(
    schedules_app,
    name="schedules",
    help="Recurring tasks: create (cron or interval), list, get, pause, resume, trigger, delete.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"taskorch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """taskorch: AI task orchestration over gRPC."""


def main() -> None:
    """Runs the ``taskorch`` command."""
    app()
