"""``taskorch task submit|get|list|watch|events|cancel|artifact``: the task API from a terminal."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import typer
from rich.console import Group
from rich.json import JSON
from rich.live import Live
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from taskorch.cli._common import (
    API_KEY,
    JSON_OUT,
    SERVER,
    client,
    console,
    errors,
    print_json,
    reporting_errors,
)
from taskorch.client import Client, Task

app = typer.Typer(no_args_is_help=True)

EXIT_FAILED = 1
EXIT_CANCELLED = 3
STATUS_STYLE = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
}


def _object(value: str | None, option: str) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=option)
    return parsed


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("not an RFC 3339 time", param_hint=option) from None
    if at.tzinfo is None:
        raise typer.BadParameter("give a time zone (a Z or +hh:mm suffix)", param_hint=option)
    return at


@app.command()
def submit(
    text: str | None = typer.Option(None, "--text", "-t", help="Text to analyse (<= 4000 chars)."),
    task_type: str = typer.Option("", "--task-type", help="e.g. text_generation."),
    model: str = typer.Option("", "--model", "-m", help="Model name for inference tasks."),
    input_data: str | None = typer.Option(
        None, "--input", help='input_data as JSON, e.g. \'{"prompt": "Hi"}\'.'
    ),
    parameters: str | None = typer.Option(None, "--parameters", "-p", help="Parameters as JSON."),
    template: str = typer.Option("", "--template", help="Run a named template."),
    priority: int = typer.Option(0, "--priority", help="1 (lowest) to 10 (highest); default 5."),
    depends_on: list[str] = typer.Option([], "--depends-on", help="Task id to wait for."),
    request_id: str = typer.Option("", "--request-id", help="Idempotency key."),
    run_at: str | None = typer.Option(
        None, "--run-at", help='Run later, at this RFC 3339 time, e.g. "2026-12-03T18:00:00Z".'
    ),
    delay: float = typer.Option(0.0, "--delay", help="Run later, this many seconds from now."),
    concurrency_key: str = typer.Option(
        "", "--concurrency-key", help="At most --concurrency-limit tasks of this key run at once."
    ),
    concurrency_limit: int = typer.Option(
        0, "--concurrency-limit", help="The key's limit, 1-10000 (0: keep it; a new key: 1)."
    ),
    watch: bool = typer.Option(True, "--watch/--no-watch", help="Follow the task to its end."),
    as_json: bool = JSON_OUT,
    server: str = SERVER,
    api_key: str | None = API_KEY,
) -> None:
    """Submit a task, print its id, and follow its progress live to the result."""
    with reporting_errors(), client(server, api_key) as api:
        task = api.create_task(
            text=text,
            task_type=task_type,
            model_name=model,
            input_data=_object(input_data, "--input"),
            parameters=_object(parameters, "--parameters"),
            template=template,
            priority=priority,
            depends_on=depends_on,
            request_id=request_id,
            run_at=_time(run_at, "--run-at"),
            run_after_seconds=delay,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
        )
        if as_json:
            print_json(task)
        else:
            console.print(f"task [bold]{task.task_id}[/bold] {task.status}", highlight=False)
        if watch:
            # Replay from the creation event on: nothing streamed before the watch began is
            # missed, however fast the task starts.
            _exit_for(_follow(api, task.task_id, task.sequence, as_json))


@app.command()
def get(
    task_id: str = typer.Argument(..., help="The task's id."),
    as_json: bool = JSON_OUT,
    server: str = SERVER,
    api_key: str | None = API_KEY,
) -> None:
    """Show one task with its result or error."""
    with reporting_errors(), client(server, api_key) as api:
        task = api.get_task(task_id)
    if as_json:
        print_json(task)
    else:
        _show(task)


@app.command("list")
def list_tasks(
    status: str = typer.Option("", "--status", help="PENDING, RUNNING, ... (any case)."),
    task_type: str = typer.Option("", "--task-type"),
    model: str = typer.Option("", "--model"),
    template: str = typer.Option("", "--template"),
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    offset: int = typer.Option(0, "--offset", min=0),
    page: int = typer.Option(0, "--page", min=0, help="1-based page of --limit tasks."),
    sort_by: str = typer.Option("created_at", "--sort-by"),
    order: str = typer.Option("desc", "--order", help="asc or desc."),
    as_json: bool = JSON_OUT,
    server: str = SERVER,
    api_key: str | None = API_KEY,
) -> None:
    """List tasks, newest first, with filters and paging."""
    with reporting_errors(), client(server, api_key) as api:
        result = api.list_tasks(
            status=status,
            task_type=task_type,
            model_name=model,
            template=template,
            limit=limit,
            offset=offset,
            page=page,
            sort_by=sort_by,
            sort_order=order,
        )
    if as_json:
        print_json(result)
        return
    table = Table("task_id", "status", "type", "model", "priority", "created_at", "progress")
    for task in result.tasks:
        table.add_row(
            task.task_id,
            Text(task.status, style=STATUS_STYLE.get(task.status, "")),
            task.task_type,
            task.model_name,
            str(task.priority),
            task.created_at.isoformat(timespec="seconds") if task.created_at else "",
            f"{task.progress:.0f}%",
        )
    console.print(table)
    console.print(
        f"page {result.page} of {result.pages} ({result.total} tasks)", style="dim", highlight=False
    )


@app.command()
def watch(
    task_id: str = typer.Argument(..., help="The task's id."),
    after: int = typer.Option(0, "--after", min=0, help="Resume after this event sequence."),
    as_json: bool = JSON_OUT,
    server: str = SERVER,
    api_key: str | None = API_KEY,
) -> None:
    """Follow a task live: status, progress and streamed output, until it ends."""
    with reporting_errors(), client(server, api_key) as api:
        _exit_for(_follow(api, task_id, after, as_json))


@app.command()
def events(
    task_ids: list[str] = typer.Argument(
        None, help="Only these tasks (the stream ends when all have ended); none: all of yours."
    ),
    terminal_only: bool = typer.Option(
        False, "--terminal-only", help="Only the events that end a task."
    ),
    as_json: bool = JSON_OUT,
    server: str = SERVER,
    api_key: str | None = API_KEY,
) -> None:
    """Follow your tasks' changes over one stream, a line per event (Ctrl-C stops)."""
    with (
        reporting_errors(),
        client(server, api_key) as api,
        api.watch_tasks(task_ids or (), terminal_only=terminal_only) as watch,
    ):
        for event in watch.events():
            if as_json:
                print_json(event)
                continue
            style = STATUS_STYLE.get(event.status, "")
            note = f" {event.message}" if event.message else ""
            console.print(
                f"{event.task_id} #{event.sequence} {event.type} "
                f"[{style}]{event.status}[/{style}]{note}",
                highlight=False,
            )


@app.command()
def cancel(
    task_id: str = typer.Argument(..., help="The task's id."),
    reason: str = typer.Option("", "--reason", help="Recorded on the task."),
    as_json: bool = JSON_OUT,
    server: str = SERVER,
    api_key: str | None = API_KEY,
) -> None:
    """Cancel a pending or running task."""
    with reporting_errors(), client(server, api_key) as api:
        task = api.cancel_task(task_id, reason)
    if as_json:
        print_json(task)
    else:
        console.print(f"task [bold]{task.task_id}[/bold] {task.status}", highlight=False)


@app.command()
def artifact(
    task_id: str = typer.Argument(..., help="The task's id."),
    name: str = typer.Argument(..., help="The artifact's name, as the task's result lists it."),
    output: str = typer.Option(
        ..., "--output", "-o", help="The file to write the artifact's bytes to ('-': stdout)."
    ),
    server: str = SERVER,
    api_key: str | None = API_KEY,
) -> None:
    """Download one binary result of a task (a WAV, a PNG) to a file."""
    with reporting_errors(), client(server, api_key) as api:
        found = api.get_task_artifact(task_id, name)
    if output == "-":
        sys.stdout.buffer.write(found.data)
        sys.stdout.buffer.flush()
        return
    found.save(output)
    console.print(
        f"wrote {len(found.data)} bytes ({found.content_type}) to {output}", highlight=False
    )


def _follow(api: Client, task_id: str, after: int, as_json: bool) -> Task | None:
    final: Task | None = None
    if as_json:
        for event in api.watch_task(task_id, after_sequence=after):
            print_json(event)
            final = event.task if event.is_terminal else final
        return final
    output = Text()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    bar = progress.add_task("PENDING", total=100)
    with Live(Group(output, progress), console=console, refresh_per_second=12, transient=True):
        for event in api.watch_task(task_id, after_sequence=after):
            if event.output_delta:
                output.append(event.output_delta)
            style = STATUS_STYLE.get(event.status, "")
            note = f" {event.message}" if event.message else ""
            progress.update(
                bar,
                completed=event.progress,
                description=f"[{style}]{event.status}[/{style}]{note}"[:120],
            )
            if event.is_terminal:
                final = event.task
    if output:
        console.print(output)
    if final is not None:
        _show(final)
    return final


def _show(task: Task) -> None:
    style = STATUS_STYLE.get(task.status, "")
    console.print(
        f"task [bold]{task.task_id}[/bold] [{style}]{task.status}[/{style}]", highlight=False
    )
    if task.result is not None:
        console.print(JSON.from_data(task.result))
    if task.error:
        errors.print(f"[red]{task.error_code or 'error'}[/red]: {task.error}", highlight=False)
    elif task.progress_message:
        console.print(task.progress_message, style="dim")


def _exit_for(task: Task | None) -> None:
    if task is None:
        return
    if task.status == "FAILED":
        raise typer.Exit(EXIT_FAILED)
    if task.status == "CANCELLED":
        raise typer.Exit(EXIT_CANCELLED)
