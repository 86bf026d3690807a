"""``taskorch chat``: a conversation with a model in the terminal, replies token by token.

Interactive on a terminal: type a message, the reply streams in; Ctrl-C cancels the reply
being generated (its task is cancelled; the partial reply stays in the session, CANCELLED),
Ctrl-C again at the prompt (or Ctrl-D, or ``/quit``) leaves. When standard input is not a
terminal each line is a message and the replies are printed one per line (``--json``: the
session's events, one JSON object per line) — for scripts and tests.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import typer

from taskorch.cli._common import API_KEY, SERVER, client, errors, print_json, reporting_errors
from taskorch.client import ChatMessage, ChatSession, Client, ConflictError, NotFoundError

QUIT = frozenset({"/quit", "/exit"})


class CtrlC:
    """Ctrl-C as a KeyboardInterrupt only where the chat catches it.

    Only inside :meth:`waiting` (at the prompt, or while a reply streams), where it is caught. One
    pressed in between (while the chat prints) is kept and raised as soon as the next wait begins,
    instead of escaping where nothing catches it or being lost.
    """

    def __init__(self) -> None:
        self._armed = False
        self._pending = False

    def install(self) -> None:
        """Makes SIGINT go through this object (call once, before the chat starts)."""
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, _signum: int, _frame: object) -> None:
        if self._armed:
            self._armed = False  # a second press while this one is handled waits its turn
            raise KeyboardInterrupt
        self._pending = True

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """A block where Ctrl-C raises KeyboardInterrupt (one pressed before is raised now)."""
        self._armed = True
        try:
            if self._pending:
                self._pending = self._armed = False
                raise KeyboardInterrupt
            yield
        finally:
            self._armed = False


def chat(
    model: str = typer.Option(
        "", "--model", "-m", help="A text-generation model (default: the server's default)."
    ),
    session_id: str = typer.Option("", "--session", help="Continue this session."),
    system: str = typer.Option("", "--system", help="System prompt of a new session."),
    title: str = typer.Option("", "--title", help="Title of a new session."),
    collection: list[str] = typer.Option(
        [],
        "--collection",
        "-c",
        help="A new session answers from this collection (repeat it for several).",
    ),
    parameters: str | None = typer.Option(
        None,
        "--parameters",
        "-p",
        help="Generation parameters as JSON, e.g. '{\"temperature\": 0.7}'.",
    ),
    history: int = typer.Option(
        20, "--history", min=0, help="With --session: how many earlier messages to show."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the session's events as JSON, one object per line."
    ),
    server: str = SERVER,
    api_key: str | None = API_KEY,
) -> None:
    """Chat with a model: replies appear token by token; Ctrl-C cancels a reply."""
    generation = _object(parameters)
    interactive = sys.stdin.isatty() and not as_json
    with reporting_errors(), client(server, api_key) as api:
        if session_id:
            if model or system:
                errors.print("[yellow]--model and --system apply to new sessions only[/yellow]")
            session = api.chat.get_session(session_id, limit=1)
            if history:  # the last `history` messages
                skip = max(session.message_count - history, 0)
                session = api.chat.get_session(session_id, offset=skip, limit=history)
            else:
                session = replace(session, messages=[])
        else:
            session = api.chat.create_session(
                model,
                system_prompt=system,
                title=title,
                parameters=generation,
                collections=collection,
            )
        _announce(session, as_json)
        _converse(api, session, generation if session_id else None, interactive, as_json)


def _object(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--parameters") from None
    if not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--parameters")
    return parsed


def _announce(session: ChatSession, as_json: bool) -> None:
    if as_json:
        print_json({"type": "SESSION", "session": session})
        return
    _write(f"session {session.session_id} ({session.model_name})\n")
    for message in session.messages:
        if message.role == "SYSTEM":
            _write(f"system: {message.content}\n")
        elif message.role == "USER":
            _write(f"you> {message.content}\n")
        else:
            note = "" if message.status == "COMPLETED" else f" [{message.status.lower()}]"
            _write(f"{message.content}{note}\n")


def _converse(
    api: Client,
    session: ChatSession,
    parameters: dict[str, Any] | None,
    interactive: bool,
    as_json: bool,
) -> None:
    ctrl_c = CtrlC()
    ctrl_c.install()
    interrupted = False
    while True:
        try:
            with ctrl_c.waiting():
                line = input("you> " if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            if interrupted:
                break
            interrupted = True
            _write("\n(Ctrl-C again or Ctrl-D to leave)\n")
            continue
        interrupted = False
        text = line.strip()
        if not text:
            continue
        if text in QUIT:
            break
        _reply(api, session, text, parameters, as_json, ctrl_c)
    if interactive:
        _write("\n")


def _reply(
    api: Client,
    session: ChatSession,
    text: str,
    parameters: dict[str, Any] | None,
    as_json: bool,
    ctrl_c: CtrlC,
) -> None:
    """Streams one reply; Ctrl-C cancels it (the session keeps it, CANCELLED)."""
    events = api.chat.stream(session.session_id, text, parameters=parameters)
    task_id = ""
    printed = False
    try:
        with ctrl_c.waiting():
            for event in events:
                if event.type == "MESSAGE_ADDED" and event.message and event.message.task_id:
                    task_id = event.message.task_id
                if as_json:
                    print_json(event)
                elif event.type == "REPLY_STARTED" and printed:
                    # The server restarted mid-reply: it is generated again from the start.
                    _write(" [interrupted; generating again]\n")
                elif event.type == "REPLY_DELTA":
                    printed = True
                    _write(event.delta)
                elif event.type == "REPLY_FINISHED" and event.message is not None:
                    _finish(event.message)
    except KeyboardInterrupt:
        events.close()
        if task_id:
            with contextlib.suppress(ConflictError, NotFoundError):  # it ended meanwhile
                api.cancel_task(task_id, "cancelled from taskorch chat")
        if as_json:
            print_json({"type": "CANCELLED", "task_id": task_id})
        else:
            _write(" [cancelled]\n")


def _finish(reply: ChatMessage) -> None:
    if reply.status == "FAILED":
        _write("\n")
        errors.print(f"[red]{reply.error_code or 'error'}[/red]: {reply.error}", highlight=False)
    elif reply.status == "CANCELLED":
        _write(" [cancelled]\n")
    else:
        _write("\n")
    for number, source in enumerate(reply.sources, start=1):
        errors.print(
            f"[dim][{number}] {source.collection}/{source.document_id} ({source.score:.2f})[/dim]",
            highlight=False,
        )


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
