"""Chat sessions: conversations with a text-generation model whose replies are tasks.

Posting a message stores, in ONE transaction, the user message, the reply (an assistant
message, PENDING) and the reply's task: a ``text_generation`` task on the session's model
whose ``input_data`` is ``{"messages": history}`` (the system prompt, then the user messages
and completed replies so far). The task is an ordinary task: it has a priority, shows in the
task list, and CancelTask cancels it. The inference handler streams its tokens as the task's
OUTPUT events.

A *follower* per unfinished reply turns the events of its task into the reply's state: it
watches the task (replaying stored events after the last one it applied, then live),
appends the generated text to the stored message and records the session's own events
(REPLY_STARTED, REPLY_DELTA, REPLY_FINISHED) in the same transaction, so the stored text
and the streamed deltas never disagree. Whatever arrived while it wrote is applied in the
next transaction, so a slow store coalesces tokens instead of falling behind.

Ordering: the replies of a session are generated one at a time, oldest first. Only the head
of a session's queue (its oldest unfinished reply) has runnable work; the task of a later
reply is created not ready and is released in the transaction that finishes the reply
before it, with the conversation rebuilt as it is then (so it sees that reply's text).

Crash recovery: nothing is acknowledged before its transaction commits. At start-up every
unfinished reply gets its follower back, which replays the task events it had not applied
yet, and stalled queues are released. A reply whose generation was interrupted by a crash
is regenerated: the task system re-runs the work of a killed server (next attempt), and the
follower sees that attempt start (REPLY_STARTED: the partial text is discarded and
streamed again). It only ever becomes COMPLETED with the text of one whole generation;
when the task runs out of attempts the reply is FAILED.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import structlog
from sqlalchemy import Connection

from taskorch.core import validation
from taskorch.core.caller import SYSTEM, Caller
from taskorch.core.chat_model import (
    ChatEvent,
    ChatEventType,
    ChatPage,
    Generation,
    Message,
    Role,
    Session,
)
from taskorch.core.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    MessageNotFound,
    SessionNotFound,
    TaskNotCancellable,
    TaskNotFound,
)
from taskorch.core.hub import EventHub
from taskorch.core.lifecycle import record
from taskorch.core.model import (
    DEFAULT_MAX_ATTEMPTS,
    JSON,
    EventType,
    Status,
    Subtask,
    Task,
    TaskEvent,
)
from taskorch.core.planning import INFERENCE
from taskorch.core.tasks import TaskService
from taskorch.events.bus import EventBus, SubscriptionLagged
from taskorch.store import chat as chat_store
from taskorch.store import subtasks as subtask_store
from taskorch.store import tasks as task_store
from taskorch.store.database import Database, Transaction
from taskorch.store.schema import utcnow

log = structlog.get_logger(__name__)

TEXT_GENERATION = "text_generation"
MAX_CONTENT_CHARS = 32_000
MAX_SYSTEM_PROMPT_CHARS = 32_000
MAX_TITLE_CHARS = 200
# Messages of a conversation handed to the model besides the system prompt; the engine then
# drops the oldest of them that do not fit the context window.
MAX_HISTORY_MESSAGES = 200
DEFAULT_SESSION_LIMIT = 50
DEFAULT_MESSAGE_LIMIT = 100
MAX_LIMIT = 1000
# How long a watch waits for a live event before re-reading the store.
WATCH_RECHECK_SECONDS = 5.0
FOLLOWER_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)


class ChatModels(Protocol):
    """What chat needs of the inference engine (see taskorch.inference.chat)."""

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


@dataclass(frozen=True)
class NewSession:
    model_name: str = ""
    system_prompt: str = ""
    title: str = ""
    parameters: JSON | None = None


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
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.hub = hub
        self.tasks = tasks
        self.models = models
        self.clock = clock
        self.bus: EventBus[ChatEvent] = EventBus()
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Resumes every unfinished reply (after a restart) and releases stalled queues."""
        replies = await self.db.read(chat_store.unfinished_replies)
        for reply in replies:
            self._follow(reply)
        sessions = sorted({reply.session_id for reply in replies})
        if sessions:

            def release(tx: Transaction) -> None:
                for session_id in sessions:
                    self._release_next(tx, session_id, self.clock())

            await self.db.write(release)
            log.info("resumed unfinished chat replies", replies=len(replies))

    async def close(self) -> None:
        """Stops the followers; whatever they had not applied is applied at the next start."""
        self._closed = True
        followers = list(self._followers.values())
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        self._followers.clear()

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
        now = self.clock()
        count = 1 if system_prompt else 0
        session = Session(
            session_id=str(uuid.uuid4()),
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
        )

        def insert(tx: Transaction) -> Session:
            chat_store.insert_session(tx.conn, session)
            if system_prompt:
                message = Message(
                    message_id=str(uuid.uuid4()),
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
            chat_store.delete_session(tx.conn, key)
            end = ChatEvent(
                session_id=key,
                tenant_id=session.tenant_id,
                sequence=session.sequence + 1,
                type=ChatEventType.SESSION_DELETED,
                created_at=self.clock(),
                session=session,
            )
            tx.after_commit(lambda: self.bus.publish(key, end))
            return session, unfinished

        session, unfinished = await self.db.write(remove)
        for reply in unfinished:
            await self._cancel_generation(reply, "chat session deleted")
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
        now = self.clock()
        message = Message(
            message_id=str(uuid.uuid4()),
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
            message_id=str(uuid.uuid4()),
            session_id=key,
            tenant_id=session.tenant_id,
            position=0,
            role=Role.ASSISTANT,
            status=Status.PENDING,
            task_id=str(uuid.uuid4()),
            reply_to=message.message_id,
            # The task's first event (queued) is applied by creating the reply.
            task_sequence=1,
            created_at=now,
            updated_at=now,
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
            history = _history(conn, key, answer.position)
            ready = not queued_behind
            self._insert_reply_task(
                tx, current, answer, history, parameters, priority, ready=ready, now=now
            )
            events = [
                _added(user, advanced.sequence - 1, now),
                _added(answer, advanced.sequence, now),
            ]
            chat_store.insert_events(conn, events)
            tx.after_commit(lambda: self._publish(events))
            tx.after_commit(lambda: self._follow(answer))
            return Posted(user, answer, advanced.sequence - 1)

        return await self.db.write(insert)

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

    def _insert_reply_task(
        self,
        tx: Transaction,
        session: Session,
        reply: Message,
        history: list[dict[str, str]],
        parameters: JSON,
        priority: int,
        *,
        ready: bool,
        now: datetime,
    ) -> None:
        assert reply.task_id is not None
        input_data: JSON = {"messages": history}
        waiting = (
            self.tasks.directory.waiting_message((INFERENCE,))
            if ready
            else f"waiting for the previous reply of chat session {session.session_id}"
        )
        task = Task(
            task_id=reply.task_id,
            tenant_id=session.tenant_id,
            status=Status.PENDING,
            task_type=TEXT_GENERATION,
            model_name=session.model_name,
            input_data=input_data,
            parameters=parameters or None,
            priority=priority,
            max_attempts=DEFAULT_MAX_ATTEMPTS,
            progress_message=waiting,
            sequence=1,
            created_at=now,
            updated_at=now,
        )
        subtask = Subtask(
            subtask_id=str(uuid.uuid4()),
            task_id=task.task_id,
            tenant_id=task.tenant_id,
            kind=INFERENCE,
            name="chat reply",
            model_name=session.model_name,
            input=_step_input(session.model_name, input_data, parameters),
            status=Status.PENDING,
            max_attempts=task.max_attempts,
            priority=priority,
            ready=ready,
            available_at=now,
            created_at=now,
            updated_at=now,
        )
        event = TaskEvent(
            task_id=task.task_id,
            tenant_id=task.tenant_id,
            sequence=1,
            type=EventType.STATUS_CHANGED,
            status=Status.PENDING,
            created_at=now,
            progress=0.0,
            message="queued" if ready else "queued behind the previous reply",
        )
        task_store.insert_task(tx.conn, task)
        subtask_store.insert_subtasks(tx.conn, [subtask])
        task_store.insert_event(tx.conn, event)
        tx.after_commit(lambda: self.hub.publish(event))
        if ready:
            tx.after_commit(self.hub.work.notify)

    def _release_next(self, tx: Transaction, session_id: str, now: datetime) -> None:
        """Lets the head of the session's reply queue run, with the conversation as it is now.

        Idempotent: does nothing when the head already runs or is waiting for a worker.
        """
        conn = tx.conn
        replies = chat_store.unfinished_replies(conn, session_id)
        if not replies or replies[0].task_id is None:
            return
        head = replies[0]
        task_id = head.task_id
        assert task_id is not None
        pending = [s for s in subtask_store.subtasks_of(conn, task_id) if not s.ready]
        if not pending or any(s.status is not Status.PENDING for s in pending):
            return
        task = task_store.get_task(conn, None, task_id)
        if task is None or task.status is not Status.PENDING:
            return
        input_data: JSON = {"messages": _history(conn, session_id, head.position)}
        step = _step_input(task.model_name, input_data, task.parameters or {})
        for subtask in pending:
            subtask_store.update_subtask(
                conn,
                subtask.subtask_id,
                {"input": step, "ready": True, "available_at": now, "updated_at": now},
                only_if_status=(Status.PENDING,),
            )
        message = "the previous reply finished; queued"
        record(
            tx,
            self.hub,
            task_id,
            {
                "input_data": input_data,
                "progress_message": self.tasks.directory.waiting_message((INFERENCE,)),
            },
            EventType.PROGRESS,
            now=now,
            only_if_status=(Status.PENDING,),
            message=message,
        )
        tx.after_commit(self.hub.work.notify)

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
            tx.after_commit(lambda: self._publish([event]))
            self._release_next(tx, session_key, now)
            return message, stop

        deleted, stop = await self.db.write(remove)
        for reply in stop:
            await self._cancel_generation(reply, "chat message deleted")
        return deleted

    async def _cancel_generation(self, reply: Message, reason: str) -> None:
        if reply.task_id is None:
            return
        with contextlib.suppress(TaskNotCancellable, TaskNotFound):
            await self.tasks.cancel(SYSTEM, reply.task_id, reason)

    # -- watch ---------------------------------------------------------------------------------

    async def watch(
        self, caller: Caller, session_id: str, after_sequence: int | None = None
    ) -> AsyncIterator[ChatEvent]:
        """Yields the session's SNAPSHOT (or, given ``after_sequence``, the stored events after
        it: 0 replays them all), then every event as it is stored, until the session is
        deleted.

        It subscribes before reading, so nothing between the read and the subscription is
        lost; gaps (a lagging subscriber, another replica's events) are read from the store.
        """
        key = validation.resource_id(session_id, SessionNotFound)
        if after_sequence is not None and after_sequence < 0:
            raise InvalidArgument("after_sequence must not be negative", field="after_sequence")
        subscription = self.bus.subscribe(key, buffer=self.hub.watch_buffer)
        try:

            def read(conn: Connection) -> tuple[Session | None, list[Message]]:
                session = chat_store.get_session(conn, caller.tenant_scope, key)
                if session is None or after_sequence is not None:
                    return session, []
                return session, chat_store.unfinished_replies(conn, key)

            session, running = await self.db.read(read)
            if session is None:
                raise SessionNotFound(session_id)
            last = after_sequence or 0
            if after_sequence is None:
                yield ChatEvent(
                    session_id=key,
                    tenant_id=session.tenant_id,
                    sequence=session.sequence,
                    type=ChatEventType.SNAPSHOT,
                    created_at=session.updated_at,
                    session=session,
                    messages=tuple(running),
                )
                last = session.sequence
            done = False
            async for event in self._replay(caller, key, last):
                yield event
                last, done = event.sequence, event.ends_session
            while not done:
                try:
                    live = await subscription.get(timeout=WATCH_RECHECK_SECONDS)
                except SubscriptionLagged:
                    live = None
                if live is not None and live.sequence <= last:
                    continue
                if live is not None and live.sequence == last + 1:
                    yield live
                    last, done = live.sequence, live.ends_session
                    continue
                async for event in self._replay(caller, key, last):
                    yield event
                    last, done = event.sequence, event.ends_session
        finally:
            subscription.close()

    async def _replay(
        self, caller: Caller, session_id: str, after: int
    ) -> AsyncIterator[ChatEvent]:
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

    def _publish(self, events: Sequence[ChatEvent]) -> None:
        for event in events:
            self.bus.publish(event.session_id, event)

    # -- followers: task events → reply --------------------------------------------------------

    def _follow(self, reply: Message) -> None:
        if self._closed or reply.message_id in self._followers:
            return
        follower = asyncio.create_task(
            self._follow_reply(reply), name=f"chat reply {reply.message_id}"
        )
        self._followers[reply.message_id] = follower
        follower.add_done_callback(lambda _: self._followers.pop(reply.message_id, None))

    async def _follow_reply(self, reply: Message) -> None:
        """Applies the reply's task events until the reply is finished (retrying on errors:
        each attempt resumes after the last event applied)."""
        failures = 0
        bound = structlog.contextvars.bound_contextvars(
            session_id=reply.session_id, message_id=reply.message_id, task_id=reply.task_id
        )
        with bound:
            while True:
                try:
                    await self._apply_task_events(reply)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = FOLLOWER_RETRY_SECONDS[min(failures, len(FOLLOWER_RETRY_SECONDS) - 1)]
                    failures += 1
                    log.warning(
                        "following a chat reply failed; resuming", error=str(exc), retry_in=delay
                    )
                    await asyncio.sleep(delay)

    async def _apply_task_events(self, reply: Message) -> None:
        assert reply.task_id is not None
        current = await self.db.read(
            lambda conn: chat_store.get_message(conn, None, reply.message_id)
        )
        after = current.task_sequence if current is not None else reply.task_sequence
        if current is not None and current.status.is_terminal:
            return
        queue: asyncio.Queue[TaskEvent | BaseException | None] = asyncio.Queue()
        pump = asyncio.create_task(self._pump(reply.task_id, max(after, 1), queue))
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                events = [item for item in items if isinstance(item, TaskEvent)]
                if events:
                    apply = partial(self._apply, reply=reply, events=events)
                    if await self.db.write(apply):
                        return
                for item in items:
                    if isinstance(item, BaseException):
                        raise item
                if None in items:
                    raise RuntimeError("the task's event stream ended before its end")
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _pump(
        self,
        task_id: str,
        after: int,
        queue: asyncio.Queue[TaskEvent | BaseException | None],
    ) -> None:
        try:
            async for event in self.tasks.watch(SYSTEM, task_id, after_sequence=after):
                queue.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            queue.put_nowait(exc)
        else:
            queue.put_nowait(None)

    def _apply(self, tx: Transaction, *, reply: Message, events: list[TaskEvent]) -> bool:
        """Applies task events to the reply in one transaction; True once the reply ended."""
        conn = tx.conn
        now = self.clock()
        # Locks in the order every chat writer takes them (session, then message), so that
        # concurrent writers on PostgreSQL wait for each other instead of deadlocking.
        chat_store.get_session(conn, None, reply.session_id, for_update=True)
        message = chat_store.get_message(conn, None, reply.message_id, for_update=True)
        ended = any(event.is_terminal for event in events)
        if message is None:  # deleted meanwhile: its place in the queue is free
            if ended:
                self._release_next(tx, reply.session_id, now)
            return ended
        if message.status.is_terminal:
            return True
        fresh = [e for e in events if e.sequence > message.task_sequence]
        if not fresh:
            return False
        projection = _Projection(message)
        for event in fresh:
            if projection.apply(event, partial(task_store.get_task, conn, None, event.task_id)):
                break
        if not projection.changes:
            chat_store.update_message(
                conn, message.message_id, {"task_sequence": fresh[-1].sequence}
            )
            return False
        values = projection.values(fresh[-1].sequence, now)
        updated = chat_store.update_message(conn, message.message_id, values)
        assert updated is not None
        advanced = chat_store.advance_session(
            conn, message.session_id, events=len(projection.changes), now=now
        )
        assert advanced is not None
        first = advanced.sequence - len(projection.changes) + 1
        stored = [
            change.event(updated, first + offset, now)
            for offset, change in enumerate(projection.changes)
        ]
        chat_store.insert_events(conn, stored)
        tx.after_commit(lambda: self._publish(stored))
        if updated.status.is_terminal:
            self._release_next(tx, message.session_id, now)
            return True
        return False


# -- projection of task events onto a reply ---------------------------------------------------


@dataclass(frozen=True)
class _Change:
    type: ChatEventType
    delta: str = ""

    def event(self, message: Message, sequence: int, now: datetime) -> ChatEvent:
        return ChatEvent(
            session_id=message.session_id,
            tenant_id=message.tenant_id,
            sequence=sequence,
            type=self.type,
            created_at=now,
            message_id=message.message_id,
            status=message.status if self.type is ChatEventType.REPLY_FINISHED else Status.RUNNING,
            delta=self.delta or None,
            message=message if self.type is ChatEventType.REPLY_FINISHED else None,
        )


class _Projection:
    """What a run of task events does to a reply: its text, status and the session events."""

    def __init__(self, message: Message) -> None:
        self.content = message.content
        self.status = message.status
        self.changes: list[_Change] = []
        self.generation: Generation | None = None
        self.error: str | None = None
        self.error_code: str | None = None

    def _delta(self, text: str) -> None:
        if self.changes and self.changes[-1].type is ChatEventType.REPLY_DELTA:
            self.changes[-1] = _Change(ChatEventType.REPLY_DELTA, self.changes[-1].delta + text)
        else:
            self.changes.append(_Change(ChatEventType.REPLY_DELTA, text))
        self.content += text

    def _start(self) -> None:
        self.content = ""
        self.status = Status.RUNNING
        self.changes.append(_Change(ChatEventType.REPLY_STARTED))

    def apply(self, event: TaskEvent, read_task: Callable[[], Task | None]) -> bool:
        """Applies one event; True when it ended the reply."""
        if _starts_attempt(event):
            # A (new) attempt of the generation: what an interrupted one streamed is void.
            self._start()
            return False
        if event.type is EventType.OUTPUT and event.output_delta:
            if self.status is Status.PENDING:
                self._start()
            self._delta(event.output_delta)
            return False
        if not event.is_terminal:
            return False
        task = event.task or read_task()
        self.status = event.status
        if event.status is Status.COMPLETED:
            result = (task.result if task is not None else None) or {}
            text = result.get("generated_text")
            if isinstance(text, str) and text != self.content:
                # Cannot happen while the stored events are complete; if it does, the final
                # text wins and the stream says so (start over, then the whole text).
                log.warning("streamed text differs from the result; resending it")
                self.changes.append(_Change(ChatEventType.REPLY_STARTED))
                self.content = ""
                self._delta(text)
            self.generation = Generation.from_json(result) or Generation()
        elif task is not None and event.status is Status.FAILED:
            self.error = task.error or "generation failed"
            self.error_code = task.error_code or "INTERNAL_ERROR"
        self.changes.append(_Change(ChatEventType.REPLY_FINISHED))
        return True

    def values(self, task_sequence: int, now: datetime) -> dict[str, Any]:
        values: dict[str, Any] = {
            "content": self.content,
            "status": int(self.status),
            "task_sequence": task_sequence,
            "updated_at": now,
        }
        if self.status.is_terminal:
            values["completed_at"] = now
            values["generation"] = self.generation.to_json() if self.generation else None
            values["error"] = self.error
            values["error_code"] = self.error_code
        return values


def _starts_attempt(event: TaskEvent) -> bool:
    """The scheduler's event for a worker starting the work (first start or a retry)."""
    if event.type is EventType.STATUS_CHANGED:
        return event.status is Status.RUNNING
    return event.type is EventType.PROGRESS and bool(event.data) and "attempt" in (event.data or {})


# -- helpers -----------------------------------------------------------------------------------


def _step_input(model_name: str, input_data: JSON, parameters: Mapping[str, Any]) -> JSON:
    """The inference subtask's input, as the InferencePlanner writes it."""
    return {
        "task_type": TEXT_GENERATION,
        "model_name": model_name,
        "input_data": input_data,
        "parameters": dict(parameters),
    }


def _history(conn: Connection, session_id: str, position: int) -> list[dict[str, str]]:
    messages = chat_store.history_before(conn, session_id, position, MAX_HISTORY_MESSAGES)
    return [{"role": m.role.word, "content": m.content} for m in messages]


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
    if request.limit < 0:
        raise InvalidArgument("limit must not be negative", field="limit")
    if request.offset < 0:
        raise InvalidArgument("offset must not be negative", field="offset")
    if request.page < 0:
        raise InvalidArgument("page must be 1 or more", field="page")
    if request.page and request.offset:
        raise InvalidArgument("give either page or offset, not both", field="page")
    limit = min(request.limit or default_limit, MAX_LIMIT)
    offset = (request.page - 1) * limit if request.page else request.offset
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
