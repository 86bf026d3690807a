"""The server's web endpoint behind Envoy: the dashboard, ``/docs`` and the WebSockets.

Envoy routes ``/``, ``/docs`` and ``/ui/*`` (static files shipped in ``server/static/``) and
the WebSocket upgrades of ``/ws/tasks`` and ``/ws/chat`` here: HTTP/1.1 on a loopback port
(``serve --web-addr``). The WebSockets speak seed 001's protocol, extended::

    client -> server                                    server -> client
    {"action": "auth", "api_key": "tko_..."}            {"type": "authenticated", "tenant_id"}
    {"action": "subscribe", "task_id": ID,              {"type": "subscribed", "task_id"}
     "after_sequence": N}                               {"type": "update", "task_id", "status",
    {"action": "subscribe", "task_id": "*"}              "progress", "message", "sequence",
    {"action": "unsubscribe", "task_id": ID}             "event", "output_delta", "task"?}
    {"action": "post", "session_id", "content"}         {"type": "chat", "session_id", "event",
    {"action": "watch_session", "session_id"}            "sequence", "delta", "message"?, ...}
    {"action": "unsubscribe", "session_id": ID}         {"type": "lagged", "task_id",
    {"action": "ping"}                                   "after_sequence"}  {"type": "pong"}
                                                        {"type": "error", "code", "message"}

Updates come from the same watch as gRPC's WatchTask and REST's SSE (``TaskService.watch``):
the state first, then every change in order, the final task on the terminal one. Credentials
are an ``x-api-key`` or ``authorization`` header on the upgrade, or the first message (a
browser cannot set headers on a WebSocket); never the URL. Each connection has a bounded
outbox: a subscription whose updates the client does not take in time is ended with a
``lagged`` message naming the last sequence it got, and the client subscribes again from
there; a slow client never holds up the server or other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import WSMsgType, web
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from taskorch.core.chat import ChatService, NewMessage
from taskorch.core.tasks import TaskService
from taskorch.domain.caller import Caller
from taskorch.domain.errors import Conflict, InvalidArgument, TaskorchError, Unauthenticated
from taskorch.domain.values import TaskEvent
from taskorch.server import convert
from taskorch.server.access import authorize
from taskorch.server.chat_service import event_to_proto as chat_event_to_proto

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
# Messages queued for one connection before its slowest subscription is told it lagged.
OUTBOX_CAPACITY = 256
# How long a subscription waits for room in a full outbox before it is ended as lagged.
LAG_SECONDS = 5.0
# WebSocket pings (a dead peer is dropped after twice this without a pong).
HEARTBEAT_SECONDS = 20.0
# A connection without credentials in its headers must send them within this.
AUTH_SECONDS = 10.0
MAX_MESSAGE_BYTES = 256 * 1024
MAX_SUBSCRIPTIONS = 1000
ALL_TASKS = "*"

WATCH_METHOD = "/taskorch.v1.TaskService/WatchTask"
CHAT_POST_METHOD = "/taskorch.v1.ChatService/PostMessageStream"
CHAT_WATCH_METHOD = "/taskorch.v1.ChatService/WatchSession"

Authenticate = Callable[[str, dict[str, str]], Awaitable[Caller]]


class Lagged(Exception):
    """The connection's outbox stayed full for :data:`LAG_SECONDS`."""


class Outbox:
    """The messages waiting to be written to one WebSocket connection.

    They are few and must arrive).
    """

    def __init__(self, capacity: int = OUTBOX_CAPACITY) -> None:
        self.capacity = capacity
        self._items: deque[dict[str, Any]] = deque()
        self._has_items = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()

    async def put(self, item: dict[str, Any], patience: float = LAG_SECONDS) -> None:
        """Queues ``item``, waiting up to ``patience`` seconds for room.

        Raises:
            Lagged: still full after ``patience`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while len(self._items) >= self.capacity:
            self._has_room.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._has_room.wait()
            except TimeoutError:
                raise Lagged from None
        self.notice(item)

    def notice(self, item: dict[str, Any]) -> None:
        """Adds an item whatever the room (a notice the client must get)."""
        self._items.append(item)
        self._has_items.set()

    async def get(self) -> dict[str, Any]:
        """The oldest item, waiting for one."""
        while not self._items:
            self._has_items.clear()
            await self._has_items.wait()
        item = self._items.popleft()
        self._has_room.set()
        return item

    def __len__(self) -> int:
        return len(self._items)


def proto_json(message: ProtoMessage) -> dict[str, Any]:
    """A message as REST prints it (snake_case names, every field)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def error_message(exc: Exception, **about: str) -> dict[str, Any]:
    """The WebSocket error message of an exception (its code and message)."""
    if isinstance(exc, TaskorchError):
        return {"type": "error", "code": exc.reason, "message": exc.message, **about}
    return {"type": "error", "code": "INTERNAL_ERROR", "message": "unexpected error", **about}


class LiveConnection:
    """One WebSocket client: its caller, its subscriptions and its outbox."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        tasks: TaskService,
        chat: ChatService,
        authenticate: Authenticate,
        caller: Caller | None,
        *,
        capacity: int = OUTBOX_CAPACITY,
        patience: float = LAG_SECONDS,
    ) -> None:
        self.ws = ws
        self.patience = patience
        self.tasks = tasks
        self.chat = chat
        self.authenticate = authenticate
        self.caller = caller
        self.outbox = Outbox(capacity)
        self.subscriptions: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Serves the connection until the client goes or the server stops."""
        writer = asyncio.create_task(self._write(), name="ws-writer")
        try:
            async with asyncio.timeout(None if self.caller else AUTH_SECONDS) as deadline:
                async for frame in self.ws:
                    if frame.type is WSMsgType.TEXT:
                        await self._handle(frame.data)
                    elif frame.type is WSMsgType.BINARY:
                        self.outbox.notice(_bad("send JSON text messages, not binary ones"))
                    else:
                        break
                    if self.caller is not None:
                        deadline.reschedule(None)
        except TimeoutError:
            self.outbox.notice(_unauthenticated("no credentials within 10 s"))
            await self._flush()
            await self.ws.close(code=4401, message=b"unauthenticated")
        finally:
            for task in self.subscriptions.values():
                task.cancel()
            await asyncio.gather(*self.subscriptions.values(), return_exceptions=True)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _flush(self) -> None:
        while len(self.outbox):
            await self.ws.send_json(await self.outbox.get())

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not self.ws.closed:
                await self.ws.send_json(await self.outbox.get())

    async def _handle(self, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            self.outbox.notice(_bad("a message must be a JSON object"))
            return
        if not isinstance(request, dict):
            self.outbox.notice(_bad("a message must be a JSON object"))
            return
        action = request.get("action")
        try:
            if action == "ping":
                self.outbox.notice({"type": "pong"})
            elif action == "auth":
                await self._authenticate(request)
            elif self.caller is None:
                raise Unauthenticated(
                    'Missing credentials: send {"action": "auth", "api_key": ...} (or "token") '
                    "first, or an x-api-key header on the upgrade"
                )
            elif action == "subscribe":
                self._subscribe(request)
            elif action == "unsubscribe":
                self._unsubscribe(request)
            elif action == "post":
                self._post(request)
            elif action == "watch_session":
                self._watch_session(request)
            else:
                raise InvalidArgument(
                    f"unknown action {action!r}: use subscribe, unsubscribe, post, "
                    "watch_session, auth or ping",
                    field="action",
                )
        except TaskorchError as exc:
            self.outbox.notice(error_message(exc, action=str(action)))

    async def _authenticate(self, request: Mapping[str, Any]) -> None:
        metadata: dict[str, str] = {}
        if isinstance(key := request.get("api_key"), str):
            metadata["x-api-key"] = key
        if isinstance(token := request.get("token"), str):
            metadata["authorization"] = f"Bearer {token}"
        if not metadata:
            raise InvalidArgument("auth needs an api_key or a token", field="api_key")
        self.caller = await self.authenticate(WATCH_METHOD, metadata)
        self.outbox.notice({"type": "authenticated", "tenant_id": self.caller.tenant_id})

    def _start(self, key: str, follow: Awaitable[None]) -> None:
        if key not in self.subscriptions and len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            close = getattr(follow, "close", None)
            if close is not None:
                close()
            raise InvalidArgument(
                f"a connection may hold at most {MAX_SUBSCRIPTIONS} subscriptions",
                field="task_id",
            )
        previous = self.subscriptions.pop(key, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.ensure_future(follow)
        self.subscriptions[key] = task
        task.add_done_callback(lambda done: self._ended(key, done))

    def _ended(self, key: str, task: asyncio.Task[None]) -> None:
        if self.subscriptions.get(key) is task:
            del self.subscriptions[key]

    def _subscribe(self, request: Mapping[str, Any]) -> None:
        task_id = request.get("task_id")
        if request.get("all") is True:
            task_id = ALL_TASKS
        if not isinstance(task_id, str) or not task_id:
            raise InvalidArgument(
                'subscribe needs a task_id (or "*" for all of your tasks)', field="task_id"
            )
        after = _sequence(request)
        assert self.caller is not None
        authorize(WATCH_METHOD, self.caller)
        if task_id == ALL_TASKS:
            self._start(task_id, self._follow_all(self.caller))
        else:
            self._start(task_id, self._follow_task(self.caller, task_id, after))

    def _unsubscribe(self, request: Mapping[str, Any]) -> None:
        key = request.get("task_id")
        if request.get("all") is True:
            key = ALL_TASKS
        if isinstance(request.get("session_id"), str):
            key = f"session:{request['session_id']}"
        if not isinstance(key, str) or not key:
            raise InvalidArgument("unsubscribe needs a task_id or a session_id", field="task_id")
        task = self.subscriptions.pop(key, None)
        if task is not None:
            task.cancel()
        about = "session_id" if key.startswith("session:") else "task_id"
        self.outbox.notice(
            {"type": "unsubscribed", about: key.removeprefix("session:"), "found": bool(task)}
        )

    def _update(self, event: TaskEvent) -> dict[str, Any]:
        update: dict[str, Any] = {
            "type": "update",
            "task_id": event.task_id,
            "status": event.status.name,
            "progress": event.progress or 0.0,
            "message": event.message or "",
            "sequence": event.sequence,
            "event": event.type.name,
            "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        }
        if event.output_delta:
            update["output_delta"] = event.output_delta
        if event.data is not None:
            update["data"] = event.data
        if event.task is not None:
            task = convert.task_to_proto(event.task, self.tasks.estimate_completion(event.task))
            update["task"] = proto_json(task)
        return update

    async def _follow_task(self, caller: Caller, task_id: str, after: int) -> None:
        last = after
        self.outbox.notice({"type": "subscribed", "task_id": task_id, "after_sequence": after})
        try:
            async for event in self.tasks.watch(caller, task_id, after):
                await self.outbox.put(self._update(event), self.patience)
                last = event.sequence
        except Lagged:
            self.outbox.notice(_lagged(task_id, last))
        except TaskorchError as exc:
            self.outbox.notice(error_message(exc, action="subscribe", task_id=task_id))
        except Exception as exc:
            log.exception("websocket watch failed", task_id=task_id)
            self.outbox.notice(error_message(exc, action="subscribe", task_id=task_id))

    async def _follow_all(self, caller: Caller) -> None:
        """Every change of the caller's tasks as it happens.

        No replay: list the tasks to know their state, then follow one with ``task_id`` to replay
        its history.
        """

        async def subscribed() -> None:
            self.outbox.notice({"type": "subscribed", "task_id": ALL_TASKS})

        live: Callable[[], Awaitable[None]] | None = subscribed
        while True:
            try:
                async for event in self.tasks.watch_many(caller, live=live):
                    try:
                        await self.outbox.put(self._update(event), self.patience)
                    except Lagged:
                        self.outbox.notice(_lagged(ALL_TASKS, 0))
                        return
                return
            except Conflict as exc:
                if exc.reason != "WATCH_LAGGED":
                    raise
                # The server's own buffer overflowed: say so, and follow on from here.
                self.outbox.notice(_lagged(ALL_TASKS, 0))
                live = None

    def _post(self, request: Mapping[str, Any]) -> None:
        session_id = _text(request, "session_id")
        content = request.get("content")
        if not isinstance(content, str):
            raise InvalidArgument("post needs the message's content", field="content")
        parameters = request.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidArgument("parameters must be an object", field="parameters")
        assert self.caller is not None
        authorize(CHAT_POST_METHOD, self.caller)
        new = NewMessage(content=content, parameters=parameters)
        events = self.chat.post_and_stream(self.caller, session_id, new)
        self._start(f"post:{session_id}:{id(request)}", self._follow_chat(session_id, events))

    def _watch_session(self, request: Mapping[str, Any]) -> None:
        session_id = _text(request, "session_id")
        after = request.get("after_sequence")
        if after is not None:
            after = _sequence(request)
        assert self.caller is not None
        authorize(CHAT_WATCH_METHOD, self.caller)
        events = self.chat.watch(self.caller, session_id, after)
        self.outbox.notice({"type": "subscribed", "session_id": session_id})
        self._start(f"session:{session_id}", self._follow_chat(session_id, events))

    async def _follow_chat(self, session_id: str, events: AsyncIterator[Any]) -> None:
        last = 0
        try:
            async for event in events:
                body = proto_json(chat_event_to_proto(event))
                body["event"] = body.pop("type")
                body["sequence"] = int(body.get("sequence", 0))
                chat_event = {"type": "chat", **body, "session_id": session_id}
                await self.outbox.put(chat_event, self.patience)
                last = event.sequence
        except Lagged:
            self.outbox.notice({**_lagged("", last), "session_id": session_id})
        except TaskorchError as exc:
            self.outbox.notice(error_message(exc, session_id=session_id))
        except Exception as exc:
            log.exception("websocket chat failed", session_id=session_id)
            self.outbox.notice(error_message(exc, session_id=session_id))


def _bad(message: str) -> dict[str, Any]:
    return {"type": "error", "code": "VALIDATION_ERROR", "message": message}


def _unauthenticated(message: str) -> dict[str, Any]:
    return {"type": "error", "code": "UNAUTHENTICATED", "message": message}


def _lagged(task_id: str, last: int) -> dict[str, Any]:
    return {
        "type": "lagged",
        "task_id": task_id,
        "after_sequence": last,
        "message": "this connection fell behind: subscribe again with after_sequence to resume",
    }


def _text(request: Mapping[str, Any], name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} must be a non-empty string", field=name)
    return value


def _sequence(request: Mapping[str, Any]) -> int:
    value = request.get("after_sequence", 0)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(
            "after_sequence must be a whole number, 0 or more", field="after_sequence"
        )
    return value


@dataclass
class WebSettings:
    """Where the web endpoint listens, and the origins that may call it."""

    listen: str
    cors_origins: Sequence[str] = ()


class WebEndpoint:
    """The aiohttp server of the dashboard, /docs and the WebSockets."""

    def __init__(
        self,
        settings: WebSettings,
        tasks: TaskService,
        chat: ChatService,
        authenticate: Authenticate,
    ) -> None:
        self.settings = settings
        self.tasks = tasks
        self.chat = chat
        self.authenticate = authenticate
        self.address = ""
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()

    def app(self) -> web.Application:
        """The aiohttp application: the pages, the static files and the WebSockets."""
        app = web.Application()
        app.router.add_get("/", self._page("index.html"))
        app.router.add_get("/docs", self._page("docs.html"))
        app.router.add_static("/ui/", STATIC_DIR)
        app.router.add_get("/ws/tasks", self._websocket)
        app.router.add_get("/ws/chat", self._websocket)
        return app

    async def start(self) -> None:
        """Starts listening; ``address`` is then the bound address."""
        from taskorch.config import split_addr

        host, port = split_addr(self.settings.listen)
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses
        bound = int(addresses[0][1]) if addresses else port
        self.address = f"{host}:{bound}"

    async def stop(self) -> None:
        """Closes the WebSockets (1001) and stops listening."""
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutting down")
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def page(_request: web.Request) -> web.StreamResponse:
            return web.FileResponse(STATIC_DIR / name, headers={"cache-control": "no-cache"})

        return page

    def _origin_allowed(self, request: web.Request) -> bool:
        """A browser page may open a WebSocket only from this origin or an allowed one."""
        origin = request.headers.get("origin")
        if origin is None:
            return True  # not a browser
        allowed = self.settings.cors_origins
        if "*" in allowed or origin.rstrip("/") in allowed:
            return True
        return urlsplit(origin).netloc == request.headers.get("host", "")

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self._origin_allowed(request):
            return web.json_response(
                {"code": 403, "error": "this origin may not open WebSockets here (--cors-origins)"},
                status=403,
            )
        metadata = {
            name: request.headers[name]
            for name in ("x-api-key", "authorization")
            if name in request.headers
        }
        try:
            caller: Caller | None = await self.authenticate(WATCH_METHOD, metadata)
        except Unauthenticated as exc:
            if metadata:
                return web.json_response(error_message(exc), status=401)
            caller = None  # the first message may carry them
        except TaskorchError as exc:
            return web.json_response(error_message(exc), status=403)
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            connection = LiveConnection(ws, self.tasks, self.chat, self.authenticate, caller)
            await connection.run()
        finally:
            self._sockets.discard(ws)
        return ws
