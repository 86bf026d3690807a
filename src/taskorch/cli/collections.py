"""``taskorch collections …``: collections, their documents, and search.

Create, list, show and delete collections; add documents (files, or text on stdin), show and delete
them; search.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

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
from taskorch.client import Collection, NewDocument

app = typer.Typer(
    name="collections",
    help="Collections of documents embedded by a model of the server, and search over them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _pairs(items: list[str], option: str) -> dict[str, Any]:
    """KEY=VALUE options as a dict; a value that reads as JSON (a number, true) is that."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _show(collection: Collection, as_json: bool) -> None:
    if as_json:
        print_json(collection)
        return
    console.print(
        f"{collection.name}: {collection.document_count} documents, {collection.chunk_count} "
        f"chunks; {collection.model_name} ({collection.dimensions} dimensions), "
        f"{collection.backend} {collection.index} index",
        highlight=False,
    )


@app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="Letters, digits, '_', '-', '.'.")],
    model: str = typer.Option("", "--model", "-m", help="Embedding model (default: the server's)."),
    chunk_size: int = typer.Option(0, "--chunk-size", help="Characters per chunk (default 800)."),
    chunk_overlap: int | None = typer.Option(
        None, "--chunk-overlap", help="Characters repeated between chunks (default 100)."
    ),
    server: str = SERVER,
    api_key: str | None = API_KEY,
    as_json: bool = JSON_OUT,
) -> None:
    """Create a collection on an embedding model."""
    with reporting_errors(), client(server, api_key) as c:
        _show(
            c.collections.create(name, model, chunk_size=chunk_size, chunk_overlap=chunk_overlap),
            as_json,
        )


@app.command("list")
def list_command(
    server: str = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON_OUT
) -> None:
    """Your collections."""
    with reporting_errors(), client(server, api_key) as c:
        found = c.collections.list()
    if as_json:
        for collection in found:
            print_json(collection)
        return
    table = Table("name", "model", "documents", "chunks", "index")
    for collection in found:
        table.add_row(
            collection.name,
            collection.model_name,
            str(collection.document_count),
            str(collection.chunk_count),
            collection.index,
        )
    console.print(table)


@app.command("show")
def show_command(
    name: str, server: str = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON_OUT
) -> None:
    """One collection."""
    with reporting_errors(), client(server, api_key) as c:
        _show(c.collections.get(name), as_json)


@app.command("delete")
def delete_command(
    name: str, server: str = SERVER, api_key: str | None = API_KEY, as_json: bool = JSON_OUT
) -> None:
    """Delete a collection with all its documents."""
    with reporting_errors(), client(server, api_key) as c:
        _show(c.collections.delete(name), as_json)


@app.command("add")
def add_command(
    name: str,
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Text files, one document each (id: the file name). None: stdin."),
    ] = None,
    document_id: str = typer.Option("", "--id", help="Id of the document read from stdin."),
    metadata: list[str] = typer.Option(
        [], "--metadata", help="KEY=VALUE for every document added; repeat it."
    ),
    server: str = SERVER,
    api_key: str | None = API_KEY,
    as_json: bool = JSON_OUT,
) -> None:
    """Add documents; an id already stored is replaced."""
    fields = _pairs(metadata, "--metadata") or None
    if files:
        documents = [
            NewDocument(text=path.read_text(encoding="utf-8"), id=path.name, metadata=fields)
            for path in files
        ]
    else:
        documents = [NewDocument(text=sys.stdin.read(), id=document_id, metadata=fields)]
    with reporting_errors(), client(server, api_key) as c:
        added = c.collections.add(name, documents)
        if added.task_id:
            # A large add runs as a task: follow it to the end.
            if not as_json:
                console.print(f"task {added.task_id}", highlight=False)
            for event in c.watch_task(added.task_id):
                if as_json:
                    print_json(event)
                elif event.type == "PROGRESS" and event.message:
                    console.print(f"[dim]{event.message}[/dim]", highlight=False)
            task = c.get_task(added.task_id)
            if task.status != "COMPLETED":
                errors.print(f"[red]{task.status}[/red]: {task.error}", highlight=False)
                raise typer.Exit(1)
    if as_json:
        print_json({"document_ids": added.document_ids, "task_id": added.task_id})
        return
    for document_id in added.document_ids:
        console.print(document_id, highlight=False)


@app.command("search")
def search_command(
    name: str,
    query: str,
    top_k: int = typer.Option(5, "--top-k", "-k", help="Results (1-1000)."),
    mode: str = typer.Option("vector", "--mode", help="vector, keyword or hybrid."),
    filter_: list[str] = typer.Option(
        [], "--filter", help="KEY=VALUE the document's metadata must have; repeat it."
    ),
    server: str = SERVER,
    api_key: str | None = API_KEY,
    as_json: bool = JSON_OUT,
) -> None:
    """The chunks that best match QUERY, best first."""
    wanted = _pairs(filter_, "--filter") or None
    with reporting_errors(), client(server, api_key) as c:
        results = c.collections.search(name, query, top_k=top_k, mode=mode, filter=wanted)
    if as_json:
        for result in results:
            print_json(result)
        return
    for result in results:
        text = " ".join(result.text.split())
        console.print(
            f"[bold]{result.score:.4f}[/bold] {result.document_id}"
            f"[dim]#{result.chunk_index}[/dim]  {text[:200]}",
            highlight=False,
        )


@app.command("get-document")
def get_document_command(
    name: str,
    document_id: str,
    server: str = SERVER,
    api_key: str | None = API_KEY,
    as_json: bool = JSON_OUT,
) -> None:
    """One document with its whole text."""
    with reporting_errors(), client(server, api_key) as c:
        document = c.collections.get_document(name, document_id)
    if as_json:
        print_json(document)
    else:
        console.print(document.text, highlight=False, markup=False)


@app.command("delete-document")
def delete_document_command(
    name: str,
    document_id: str,
    server: str = SERVER,
    api_key: str | None = API_KEY,
    as_json: bool = JSON_OUT,
) -> None:
    """Delete a document and its chunks."""
    with reporting_errors(), client(server, api_key) as c:
        document = c.collections.delete_document(name, document_id)
    if as_json:
        print_json(document)
    else:
        console.print(f"deleted {document.document_id}", highlight=False)
