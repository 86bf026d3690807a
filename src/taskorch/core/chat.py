"""Chat sessions: conversations with a text-generation model whose replies are tasks.

Posting a message stores, in ONE transaction, the user message, the reply (an assistant
message, PENDING) and the reply's task: a ``text_generation`` task on the session's model
whose ``input_data`` is ``{"messages": history}`` (the system prompt, then the user messages
and completed replies so far). The task is an ordinary task: it has a priority, shows in the
task list, and CancelTask cancels it. How replies are ordered within a session and how a
reply follows its task (token by token, across restarts) is core/chat_replies.py.

Every change of a session is stored as an event with a per-session sequence number before
it is published, so a watcher can resume after the last number it saw. Nothing is
acknowledged before its transaction commits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import structlog

from taskorch.core import validation
from taskorch.core.chat_replies import Replies, conversation, grounded
from taskorch.core.tasks import TaskService
from taskorch.domain.caller import Caller
from taskorch.domain.chat_values import (
    ChatEvent,
    ChatEventType,
    ChatPage,
    Message,
    Role,
    Session,
    Source,
)
from taskorch.domain.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    MessageNotFound,
    SessionNotFound,
)
from taskorch.domain.ids import new_id
from taskorch.domain.values import (
    JSON,
    Status,
)
from taskorch.events import watch
from taskorch.events.hub import EventHub
from taskorch.store import chat as chat_store
from taskorch.store.database import Connection, Database, Transaction
from taskorch.store.schema import utcnow

log = structlog.get_logger(__name__)

MAX_CONTENT_CHARS = 32_000
MAX_SYSTEM_PROMPT_CHARS = 32_000
MAX_TITLE_CHARS = 200
DEFAULT_SESSION_LIMIT = 50
DEFAULT_MESSAGE_LIMIT = 100
MAX_LIMIT = 1000
# Retrieval-augmented sessions: chunks retrieved per user message (those that fit the
# prompt are kept), and collections a session may name.
RETRIEVED_CHUNKS = 4
MAX_SESSION_COLLECTIONS = 8


class ChatModels(Protocol):
    """What chat needs of the inference engine (see taskorch.inference.chat_models)."""

    def check_session(self, model_name: str, parameters: Mapping[str, Any]) -> str:
        """The text-generation model to use (the default one for ""), checked with the
        session's generation parameters.

        Raises:
            ModelNotFound, InvalidArgument (``model_name``, ``parameters.<name>``), Unavailable.
        """
        ...

    def prompt_size(
        self, model_name: str, messages: Sequence[Mapping[str, str]], parameters: Mapping[str, Any]
    ) -> tuple[int, int]:
        """Tokens of these messages as the model's prompt, and how many the prompt may have
        (the context window minus the tokens to generate).

        Raises:
            ModelNotFound, InvalidArgument (``parameters.<name>``), Unavailable.
        """
        ...


class Retriever(Protocol):
    """What retrieval-augmented sessions need of collections (core.collections)."""

    async def check_collections(self, caller: Caller, names: Sequence[str]) -> None:
        """Raises CollectionNotFound unless the caller's tenant has every collection named."""
        ...

    async def retrieve(
        self, caller: Caller, names: Sequence[str], query: str, top_k: int
    ) -> list[Source]:
        """The ``top_k`` chunks of these collections nearest to ``query``, best first."""
        ...


@dataclass(frozen=True)
class NewSession:
    model_name: str = ""
    system_prompt: str = ""
    title: str = ""
    parameters: JSON | None = None
    collections: Sequence[str] = ()


@dataclass(frozen=True)
class NewMessage:
    content: str
    parameters: JSON | None = None
    priority: int = 0
    request_id: str = ""


@dataclass(frozen=True)
class Posted:
    """A posted message and its reply; ``sequence`` is the event that added the message."""

    message: Message
    reply: Message
    sequence: int


@dataclass(frozen=True)
class PageRequest:
    limit: int = 0
    offset: int = 0
    page: int = 0
    page_token: str = ""


class ChatService:
    """Sessions and messages of the caller's tenant; replies generated as tasks."""

    def __init__(
        self,
        db: Database,
        hub: EventHub,
        tasks: TaskService,
        models: ChatModels,
        *,
        retriever: Retriever | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.hub = hub
        self.tasks = tasks
        self.models = models
        self.retriever = retriever
        self.clock = clock
        self.replies = Replies(db, hub, tasks, clock=clock)

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Resumes every unfinished reply (after a restart) and releases stalled queues."""
        await self.replies.resume()

    async def close(self) -> None:
        """Stops following replies; the next start resumes them."""
        await self.replies.close()

    # -- sessions ------------------------------------------------------------------------------

    async def create_session(self, caller: Caller, spec: NewSession) -> Session:
        """Opens a session with a text-generation model (the default one for "").

        Raises:
            ModelNotFound, InvalidArgument (naming the field), Unavailable (model loading).
        """
        title = validation.short_text(spec.title, "title", limit=MAX_TITLE_CHARS)
        system_prompt = spec.system_prompt if spec.system_prompt.strip() else ""
        if len(system_prompt) > MAX_SYSTEM_PROMPT_CHARS:
            raise InvalidArgument(
                f"system_prompt is {len(system_prompt)} characters long; the limit is "
                f"{MAX_SYSTEM_PROMPT_CHARS}",
                field="system_prompt",
                reason="MESSAGE_TOO_LONG",
            )
        parameters = dict(spec.parameters or {})
        model_name = self.models.check_session(spec.model_name, parameters)
        if system_prompt:
            system = [{"role": "system", "content": system_prompt}]
            tokens, budget = self.models.prompt_size(model_name, system, parameters)
            if tokens > budget:
                raise InvalidArgument(
                    f"system_prompt is {tokens} tokens; model {model_name!r} has room for "
                    f"{budget} in a prompt",
                    field="system_prompt",
                    reason="MESSAGE_TOO_LONG",
                )
        collections = await self._check_collections(caller, spec.collections)
        now = self.clock()
        count = 1 if system_prompt else 0
        session = Session(
            session_id=new_id(),
            tenant_id=caller.tenant_id,
            model_name=model_name,
            system_prompt=system_prompt,
            title=title,
            parameters=parameters or None,
            sequence=count,
            last_position=count,
            message_count=count,
            created_at=now,
            updated_at=now,
            collections=collections,
        )

        def insert(tx: Transaction) -> Session:
            chat_store.insert_session(tx.conn, session)
            if system_prompt:
                message = Message(
                    message_id=new_id(),
                    session_id=session.session_id,
                    tenant_id=session.tenant_id,
                    position=1,
                    role=Role.SYSTEM,
                    status=Status.COMPLETED,
                    content=system_prompt,
                    created_at=now,
                    updated_at=now,
                    completed_at=now,
                )
                chat_store.insert_messages(tx.conn, [message])
                event = _added(message, 1, now)
                chat_store.insert_events(tx.conn, [event])
            return session

        return await self.db.write(insert)

    async def list_sessions(
        self, caller: Caller, request: PageRequest, model_name: str = ""
    ) -> ChatPage[Session]:
        limit, offset, page = _paging(request, DEFAULT_SESSION_LIMIT)
        query = chat_store.SessionQuery(
            tenant_id=caller.tenant_scope,
            model_name=model_name.strip() or None,
            limit=limit,
            offset=offset,
        )
        fingerprint = _fingerprint(["sessions", query.tenant_id, query.model_name])
        if request.page_token:
            body = _decode_token(request.page_token, fingerprint)
            try:
                after = (datetime.fromisoformat(body["t"]), str(uuid.UUID(body["id"])))
            except (KeyError, TypeError, ValueError):
                raise _bad_token() from None
            query = replace(query, offset=0, after=after)
        items, total = await self.db.read(lambda conn: chat_store.list_sessions(conn, query))
        token = ""
        if len(items) == limit and (query.after is not None or offset + len(items) < total):
            last = items[-1]
            token = _encode_token(
                {"f": fingerprint, "t": last.created_at.isoformat(), "id": last.session_id}
            )
        return ChatPage(tuple(items), total, limit, offset, page, token)

    async def get_session(
        self, caller: Caller, session_id: str, request: PageRequest | None = None
    ) -> tuple[Session, ChatPage[Message]]:
        """The session and a page of its messages (oldest first)."""
        key = validation.resource_id(session_id, SessionNotFound)
        limit, offset, page = _paging(request or PageRequest(), DEFAULT_MESSAGE_LIMIT)
        after = _message_token(request.page_token, key) if request and request.page_token else None

        def read(conn: Connection) -> tuple[Session | None, list[Message], int]:
            session = chat_store.get_session(conn, caller.tenant_scope, key)
            if session is None:
                return None, [], 0
            items, total = chat_store.list_messages(
                conn, key, limit=limit, offset=offset, after_position=after
            )
            return session, items, total

        session, items, total = await self.db.read(read)
        if session is None:
            raise SessionNotFound(session_id)
        return session, _message_page(key, items, total, limit, offset, page, after)

    async def delete_session(self, caller: Caller, session_id: str) -> Session:
        """Deletes the session and its messages; cancels the replies still being generated."""
        key = validation.resource_id(session_id, SessionNotFound)

        def remove(tx: Transaction) -> tuple[Session, list[Message]]:
            session = chat_store.get_session(tx.conn, caller.tenant_scope, key, for_update=True)
            if session is None:
                raise SessionNotFound(session_id)
            unfinished = chat_store.unfinished_replies(tx.conn, key)
            end = ChatEvent(
                session_id=key,
                tenant_id=session.tenant_id,
                sequence=session.sequence + 1,
                type=ChatEventType.SESSION_DELETED,
                created_at=self.clock(),
                session=session,
            )
            chat_store.delete_session(tx.conn, key, end=end)
            tx.after_commit(lambda: self.hub.publish_chat([end]))
            return session, unfinished

        session, unfinished = await self.db.write(remove)
        for reply in unfinished:
            await self.replies.cancel(reply, "chat session deleted")
        return session

    # -- messages ------------------------------------------------------------------------------

    async def post(self, caller: Caller, session_id: str, new: NewMessage) -> Posted:
        """Stores a user message and queues its reply (a text_generation task).

        Idempotent on ``request_id``: a repeat answers the first message and its reply.

        Raises:
            SessionNotFound; InvalidArgument naming ``content`` (empty, or MESSAGE_TOO_LONG),
            ``parameters.<name>``, ``priority`` or ``request_id``; Unavailable.
        """
        key = validation.resource_id(session_id, SessionNotFound)
        content = new.content
        if not content.strip():
            raise InvalidArgument("content must not be empty", field="content")
        if len(content) > MAX_CONTENT_CHARS:
            raise InvalidArgument(
                f"content is {len(content)} characters long; the limit is {MAX_CONTENT_CHARS}",
                field="content",
                reason="MESSAGE_TOO_LONG",
            )
        priority = validation.priority(new.priority)
        request_id = validation.short_text(new.request_id, "request_id")
        session = await self.db.read(
            lambda conn: chat_store.get_session(conn, caller.tenant_scope, key)
        )
        if session is None:
            raise SessionNotFound(session_id)
        parameters = {**(session.parameters or {}), **(new.parameters or {})}
        self._check_fits(session, content, parameters)
        sources = await self._sources(caller, session, content, parameters)
        now = self.clock()
        message = Message(
            message_id=new_id(),
            session_id=key,
            tenant_id=session.tenant_id,
            position=0,
            role=Role.USER,
            status=Status.COMPLETED,
            content=content,
            request_id=request_id or None,
            created_at=now,
            updated_at=now,
            completed_at=now,
        )
        reply = Message(
            message_id=new_id(),
            session_id=key,
            tenant_id=session.tenant_id,
            position=0,
            role=Role.ASSISTANT,
            status=Status.PENDING,
            task_id=new_id(),
            reply_to=message.message_id,
            # The task's first event (queued) is applied by creating the reply.
            task_sequence=1,
            created_at=now,
            updated_at=now,
            sources=sources,
        )

        def insert(tx: Transaction) -> Posted:
            conn = tx.conn
            current = chat_store.get_session(conn, caller.tenant_scope, key, for_update=True)
            if current is None:
                raise SessionNotFound(session_id)
            if request_id:
                earlier = chat_store.find_by_request_id(conn, key, request_id)
                if earlier:
                    return _same_post(conn, earlier, message)
            queued_behind = chat_store.unfinished_replies(conn, key)
            advanced = chat_store.advance_session(
                conn, key, events=2, positions=2, messages=2, now=now
            )
            assert advanced is not None
            user = replace(message, position=advanced.last_position - 1)
            answer = replace(reply, position=advanced.last_position)
            chat_store.insert_messages(conn, [user, answer])
            history = conversation(conn, key, answer.position)
            ready = not queued_behind
            self.replies.create_task(
                tx, current, answer, history, parameters, priority, ready=ready, now=now
            )
            events = [
                _added(user, advanced.sequence - 1, now),
                _added(answer, advanced.sequence, now),
            ]
            chat_store.insert_events(conn, events)
            tx.after_commit(lambda: self.hub.publish_chat(events))
            tx.after_commit(lambda: self.replies.follow(answer))
            return Posted(user, answer, advanced.sequence - 1)

        return await self.db.write(insert)

    async def _check_collections(self, caller: Caller, names: Sequence[str]) -> tuple[str, ...]:
        wanted = tuple(dict.fromkeys(name.strip() for name in names))
        if not wanted:
            return ()
        if "" in wanted:
            raise InvalidArgument("collections must not name an empty name", field="collections")
        if len(wanted) > MAX_SESSION_COLLECTIONS:
            raise InvalidArgument(
                f"a session may name at most {MAX_SESSION_COLLECTIONS} collections",
                field="collections",
            )
        if self.retriever is None:
            raise InvalidArgument("this server has no collections", field="collections")
        await self.retriever.check_collections(caller, wanted)
        return wanted

    async def _sources(
        self, caller: Caller, session: Session, content: str, parameters: Mapping[str, Any]
    ) -> tuple[Source, ...]:
        """The chunks of the session's collections for ``content`` that fit the prompt
        together with it (and the system prompt), best first."""
        if not session.collections or self.retriever is None:
            return ()
        found = await self.retriever.retrieve(
            caller, session.collections, content, RETRIEVED_CHUNKS
        )
        kept: list[Source] = []
        for source in found:
            messages = [{"role": "user", "content": grounded(content, [*kept, source])}]
            if session.system_prompt:
                messages.insert(0, {"role": "system", "content": session.system_prompt})
            tokens, budget = self.models.prompt_size(session.model_name, messages, parameters)
            if tokens <= budget:
                kept.append(source)
        return tuple(kept)

    def _check_fits(self, session: Session, content: str, parameters: Mapping[str, Any]) -> None:
        """Refuses a message that could not fit the model's prompt even on its own (with the
        system prompt): the model would only ever see its end."""
        messages = [{"role": "user", "content": content}]
        if session.system_prompt:
            messages.insert(0, {"role": "system", "content": session.system_prompt})
        tokens, budget = self.models.prompt_size(session.model_name, messages, parameters)
        if tokens > budget:
            raise InvalidArgument(
                f"content is too long for model {session.model_name!r}: with the system "
                f"prompt it is {tokens} tokens, and the model has room for {budget} in a "
                "prompt (its context window minus the tokens to generate)",
                field="content",
                reason="MESSAGE_TOO_LONG",
            )

    async def post_and_stream(
        self, caller: Caller, session_id: str, new: NewMessage
    ) -> AsyncIterator[ChatEvent]:
        """Posts a message, then yields the events of it and its reply: MESSAGE_ADDED (both),
        REPLY_STARTED, REPLY_DELTA..., ending with REPLY_FINISHED (or the reply's deletion)."""
        posted = await self.post(caller, session_id, new)
        async for event in self.follow_reply(caller, posted):
            yield event

    async def follow_reply(self, caller: Caller, posted: Posted) -> AsyncIterator[ChatEvent]:
        """The session's events about a posted message and its reply, until the reply ends."""
        ours = {posted.message.message_id, posted.reply.message_id}
        if posted.sequence == 0 and posted.reply.status.is_terminal:  # events not found
            yield _finished(posted.reply, 0)
            return
        after = max(posted.sequence - 1, 0)
        watch = self.watch(caller, posted.message.session_id, after_sequence=after)
        async for event in watch:
            if event.type is ChatEventType.SNAPSHOT:
                continue
            if event.ends_session:
                yield event
                return
            if event.message_id not in ours:
                continue
            yield event
            if event.finishes(posted.reply.message_id):
                return

    async def wait_reply(self, caller: Caller, posted: Posted) -> Message:
        """Waits until the posted message's reply ends; returns it as it ended."""
        final = posted.reply
        async for event in self.follow_reply(caller, posted):
            if event.message is not None and event.message_id == posted.reply.message_id:
                final = event.message
            if event.ends_session and not final.status.is_terminal:
                return replace(final, status=Status.CANCELLED)
        return final

    async def list_messages(
        self, caller: Caller, session_id: str, request: PageRequest
    ) -> ChatPage[Message]:
        _, page = await self.get_session(caller, session_id, request)
        return page

    async def get_message(self, caller: Caller, session_id: str, message_id: str) -> Message:
        session_key = validation.resource_id(session_id, SessionNotFound)
        key = validation.resource_id(message_id, MessageNotFound)

        def read(conn: Connection) -> tuple[Session | None, Message | None]:
            session = chat_store.get_session(conn, caller.tenant_scope, session_key)
            if session is None:
                return None, None
            return session, chat_store.get_message(conn, caller.tenant_scope, key)

        session, message = await self.db.read(read)
        if session is None:
            raise SessionNotFound(session_id)
        if message is None or message.session_id != session_key:
            raise MessageNotFound(message_id)
        return message

    async def delete_message(self, caller: Caller, session_id: str, message_id: str) -> Message:
        """Deletes a message. A reply still being generated, or the message it answers, has
        that generation cancelled. Answers the message as it was (a reply that was being
        generated is answered CANCELLED).

        Raises:
            SessionNotFound, MessageNotFound, Conflict (the system prompt).
        """
        session_key = validation.resource_id(session_id, SessionNotFound)
        key = validation.resource_id(message_id, MessageNotFound)

        def remove(tx: Transaction) -> tuple[Message, list[Message]]:
            conn = tx.conn
            now = self.clock()
            session = chat_store.get_session(
                conn, caller.tenant_scope, session_key, for_update=True
            )
            if session is None:
                raise SessionNotFound(session_id)
            message = chat_store.get_message(conn, caller.tenant_scope, key, for_update=True)
            if message is None or message.session_id != session_key:
                raise MessageNotFound(message_id)
            if message.role is Role.SYSTEM:
                raise Conflict(
                    "The system prompt is part of the session and cannot be deleted; "
                    "create a new session instead",
                    reason="SYSTEM_PROMPT_NOT_DELETABLE",
                )
            stop = []
            if message.is_reply and not message.status.is_terminal:
                stop.append(message)
                message = replace(message, status=Status.CANCELLED, updated_at=now)
            elif message.role is Role.USER:
                stop += [r for r in chat_store.replies_to(conn, key) if not r.status.is_terminal]
            chat_store.delete_message(conn, key)
            advanced = chat_store.advance_session(conn, session_key, events=1, messages=-1, now=now)
            assert advanced is not None
            event = ChatEvent(
                session_id=session_key,
                tenant_id=session.tenant_id,
                sequence=advanced.sequence,
                type=ChatEventType.MESSAGE_DELETED,
                created_at=now,
                message_id=key,
                status=message.status,
                message=message,
            )
            chat_store.insert_events(conn, [event])
            tx.after_commit(lambda: self.hub.publish_chat([event]))
            self.replies.release_next(tx, session_key, now)
            return message, stop

        deleted, stop = await self.db.write(remove)
        for reply in stop:
            await self.replies.cancel(reply, "chat message deleted")
        return deleted

    # -- watch ---------------------------------------------------------------------------------

    async def watch(
        self, caller: Caller, session_id: str, after_sequence: int | None = None
    ) -> AsyncIterator[ChatEvent]:
        """Yields the session's SNAPSHOT (or, given ``after_sequence``, the stored events after
        it: 0 replays them all), then every event as it is stored, until the session is
        deleted.

        It subscribes before reading, so nothing between the read and the subscription is
        lost; gaps (a lagging subscriber, a lost notice of another replica) are read from the
        store (events/watch.py).
        """
        key = validation.resource_id(session_id, SessionNotFound)
        if after_sequence is not None and after_sequence < 0:
            raise InvalidArgument("after_sequence must not be negative", field="after_sequence")

        def read(conn: Connection) -> tuple[Session | None, list[Message]]:
            session = chat_store.get_session(conn, caller.tenant_scope, key)
            if session is None or after_sequence is not None:
                return session, []
            return session, chat_store.unfinished_replies(conn, key)

        async def snapshot() -> ChatEvent | None:
            session, running = await self.db.read(read)
            if session is None:
                raise SessionNotFound(session_id)
            if after_sequence is not None:
                return None
            return ChatEvent(
                session_id=key,
                tenant_id=session.tenant_id,
                sequence=session.sequence,
                type=ChatEventType.SNAPSHOT,
                created_at=session.updated_at,
                session=session,
                messages=tuple(running),
            )

        events = watch.follow(
            self.hub.subscribe_chat(key),
            snapshot,
            partial(self._replay, caller, key),
            after_sequence=after_sequence or 0,
            is_terminal=lambda event: event.ends_session,
        )
        async with aclosing(events):
            async for event in events:
                yield event

    async def _replay(
        self, caller: Caller, session_id: str, after: int
    ) -> AsyncGenerator[ChatEvent, None]:
        """The stored events after ``after``; a SESSION_DELETED when the session is gone."""
        while True:

            def read(conn: Connection, after: int = after) -> tuple[bool, list[ChatEvent]]:
                exists = chat_store.get_session(conn, caller.tenant_scope, session_id) is not None
                return exists, chat_store.events_after(conn, session_id, after)

            exists, events = await self.db.read(read)
            for event in events:
                yield event
                after = event.sequence
            if not exists and not events:
                yield ChatEvent(
                    session_id=session_id,
                    tenant_id=caller.tenant_id,
                    sequence=after + 1,
                    type=ChatEventType.SESSION_DELETED,
                    created_at=self.clock(),
                )
                return
            if len(events) < 1000:
                return


# -- helpers -----------------------------------------------------------------------------------


def _added(message: Message, sequence: int, now: datetime) -> ChatEvent:
    return ChatEvent(
        session_id=message.session_id,
        tenant_id=message.tenant_id,
        sequence=sequence,
        type=ChatEventType.MESSAGE_ADDED,
        created_at=now,
        message_id=message.message_id,
        status=message.status,
        message=message,
    )


def _finished(message: Message, sequence: int) -> ChatEvent:
    return ChatEvent(
        session_id=message.session_id,
        tenant_id=message.tenant_id,
        sequence=sequence,
        type=ChatEventType.REPLY_FINISHED,
        created_at=message.updated_at,
        message_id=message.message_id,
        status=message.status,
        message=message,
    )


def _same_post(conn: Connection, earlier: list[Message], message: Message) -> Posted:
    """The first post of an idempotent retry; another message with the same key is refused."""
    first = earlier[0]
    if first.content != message.content or len(earlier) < 2:
        raise AlreadyExists(
            f"request_id {message.request_id!r} was already used for another message "
            f"({first.message_id})",
            reason="REQUEST_ID_REUSED",
        )
    sequence = chat_store.added_at(conn, first.session_id, first.message_id)
    return Posted(first, earlier[1], sequence)


def _paging(request: PageRequest, default_limit: int) -> tuple[int, int, int]:
    limit, offset = validation.paging(
        request.limit,
        request.offset,
        request.page,
        default_limit=default_limit,
        max_limit=MAX_LIMIT,
    )
    if request.page_token:
        offset = 0
    return limit, offset, offset // limit + 1


def _message_page(
    session_id: str,
    items: list[Message],
    total: int,
    limit: int,
    offset: int,
    page: int,
    after: int | None,
) -> ChatPage[Message]:
    token = ""
    if len(items) == limit and (after is not None or offset + len(items) < total):
        token = _encode_token(
            {"f": _fingerprint(["messages", session_id]), "p": items[-1].position}
        )
    return ChatPage(tuple(items), total, limit, offset, page, token)


def _message_token(token: str, session_id: str) -> int:
    body = _decode_token(token, _fingerprint(["messages", session_id]))
    position = body.get("p")
    if not isinstance(position, int) or position < 0:
        raise _bad_token()
    return position


def _fingerprint(key: list[object]) -> str:
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:16]


def _encode_token(body: JSON) -> str:
    data = json.dumps({"v": 1, **body}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode()


def _decode_token(token: str, fingerprint: str) -> JSON:
    try:
        body = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(body, dict) or body.get("v") != 1:
            raise ValueError
    except (ValueError, binascii.Error, json.JSONDecodeError):
        raise _bad_token() from None
    if body.get("f") != fingerprint:
        raise InvalidArgument(
            "page_token belongs to another list; repeat the call's filters unchanged",
            field="page_token",
        )
    return body


def _bad_token() -> InvalidArgument:
    return InvalidArgument("page_token is not a token this server issued", field="page_token")
