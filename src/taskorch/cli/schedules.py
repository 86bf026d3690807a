"""``taskorch schedules create|list|get|pause|resume|trigger|delete``: recurring tasks."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from taskorch.cli._common import (
    API_KEY,
    JSON_OUT,
    SERVER,
    client,
    console,
    print_json,
    reporting_errors,
)
from taskorch.client import Schedule

app = typer.Typer(no_args_is_help=True)

NAME = typer.Argument(..., help="The schedule's name.")


def _task(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--task") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--task")
    return parsed


def _when(schedule: Schedule) -> str:
    if schedule.cron:
        return f"{schedule.cron} ({schedule.timezone})"
    return f"every {schedule.interval_seconds:g} s"


def _show(schedule: Schedule) -> None:
    state = "[yellow]paused[/yellow]" if schedule.paused else "[green]active[/green]"
    console.print(f"schedule [bold]{schedule.name}[/bold] {state}", highlight=False)
    console.print(f"  fires    {_when(schedule)}, catch_up {schedule.catch_up}", highlight=False)
    console.print(f"  task     {json.dumps(schedule.task, ensure_ascii=False)}", highlight=False)
    if schedule.next_fire_at:
        console.print(f"  next     {schedule.next_fire_at.isoformat()}", highlight=False)
    if schedule.last_fired_at:
        console.print(
            f"  last     {schedule.last_fired_at.isoformat()} -> task {schedule.last_task_id}",
            highlight=False,
        )
    console.print(f"  fired    {schedule.fire_count} times", highlight=False)
    if schedule.last_error:
        console.print(f"  [red]error[/red]    {schedule.last_error}", highlight=False)


def _print(schedule: Schedule, as_json: bool) -> None:
    if as_json:
        print_json(schedule)
    else:
        _show(schedule)


@app.command()
def create(
    name: str = NAME,
    task: str = typer.Option(
        ..., "--task", help='The task to create, as CreateTask JSON, e.g. \'{"text": "Hi"}\'.'
    ),
    cron: str = typer.Option("", "--cron", help='5-field cron expression, e.g. "*/5 * * * *".'),
    every: float = typer.Option(0.0, "--every", help="Or: seconds between firings (>= 1)."),
    timezone: str = typer.Option("", "--timezone", help="IANA time zone of --cron (UTC)."),
    catch_up: str = typer.Option(
        "", "--catch-up", help="Missed slots: one (default: run them once) or none (skip)."
    ),
    paused: bool = typer.Option(False, "--paused", help="Create it paused."),
    as_json: bool = JSON_OUT,
    server: str = SERVER,
    api_key: str | None = API_KEY,
) -> None:
    """Create a schedule: a task created on a cron expression or every N seconds."""
    with reporting_errors(), client(server, api_key) as api:
        schedule = api.schedules.create(
            name,
            task=_task(task),
            cron=cron,
            interval_seconds=every,
            timezone=timezone,
            catch_up=catch_up,
            paused=paused,
        )
    _print(schedule, as_json)


@app.command("list")
def list_schedules(
    as_json: bool = JSON_OUT, server: str = SERVER, api_key: str | None = API_KEY
) -> None:
    """List your schedules by name."""
    with reporting_errors(), client(server, api_key) as api:
        found = api.schedules.list()
    if as_json:
        for schedule in found:
            print_json(schedule)
        return
    table = Table("name", "fires", "state", "next_fire_at", "fired", "last_task_id")
    for schedule in found:
        table.add_row(
            schedule.name,
            _when(schedule),
            "paused" if schedule.paused else "active",
            schedule.next_fire_at.isoformat(timespec="seconds") if schedule.next_fire_at else "",
            str(schedule.fire_count),
            schedule.last_task_id,
        )
    console.print(table)


@app.command()
def get(
    name: str = NAME, as_json: bool = JSON_OUT, server: str = SERVER, api_key: str | None = API_KEY
) -> None:
    """Show one schedule with its next and last firing."""
    with reporting_errors(), client(server, api_key) as api:
        schedule = api.schedules.get(name)
    _print(schedule, as_json)


@app.command()
def pause(
    name: str = NAME, as_json: bool = JSON_OUT, server: str = SERVER, api_key: str | None = API_KEY
) -> None:
    """Stop a schedule from firing until it is resumed."""
    with reporting_errors(), client(server, api_key) as api:
        schedule = api.schedules.pause(name)
    _print(schedule, as_json)


@app.command()
def resume(
    name: str = NAME, as_json: bool = JSON_OUT, server: str = SERVER, api_key: str | None = API_KEY
) -> None:
    """Let a paused schedule fire again, from its next slot after now."""
    with reporting_errors(), client(server, api_key) as api:
        schedule = api.schedules.resume(name)
    _print(schedule, as_json)


@app.command()
def trigger(
    name: str = NAME, as_json: bool = JSON_OUT, server: str = SERVER, api_key: str | None = API_KEY
) -> None:
    """Create the schedule's task now; prints the task's id."""
    with reporting_errors(), client(server, api_key) as api:
        schedule, task = api.schedules.trigger(name)
    if as_json:
        print_json({"schedule": schedule, "task": task})
    else:
        console.print(
            f"schedule [bold]{schedule.name}[/bold] created task [bold]{task.task_id}[/bold] "
            f"{task.status}",
            highlight=False,
        )


@app.command()
def delete(name: str = NAME, server: str = SERVER, api_key: str | None = API_KEY) -> None:
    """Delete a schedule (the tasks it created stay)."""
    with reporting_errors(), client(server, api_key) as api:
        api.schedules.delete(name)
    console.print(f"schedule [bold]{name}[/bold] deleted", highlight=False)
