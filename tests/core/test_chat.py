"""Chat sessions on a real store (a SQLite file, and PostgreSQL when reachable), with the test
as the worker: a reply is a text-generation task over the conversation, the streamed text
becomes the reply, one session's replies run one at a time in order, and bad posts are
refused naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from taskorch.core.chat import ChatService, NewMessage, NewSession
from taskorch.core.engine import TaskEngine, WorkerIdentity
from taskorch.core.planning import Catalog
from taskorch.core.tasks import TaskService
from taskorch.domain.caller import Caller
from taskorch.domain.errors import InvalidArgument, ModelNotFound, SessionNotFound
from taskorch.domain.values import Lease, Status
from taskorch.events.hub import EventHub
from taskorch.store.database import Database
from tests import databases

ACME = Caller(tenant_id="acme")
GLOBEX = Caller(tenant_id="globex")
GENERATOR = WorkerIdentity("generator-1", ("inference",))
MODEL = "tiny-chat"


class Models:
    """The ChatModels of one text-generation model whose prompt holds 50 words."""

    def check_session(self, model_name: str, parameters: Mapping[str, Any]) -> str:
        if model_name not in ("", MODEL):
            raise ModelNotFound(model_name, available=[MODEL])
        return MODEL

    def prompt_size(
        self, model_name: str, messages: Sequence[Mapping[str, str]], parameters: Mapping[str, Any]
    ) -> tuple[int, int]:
        return sum(len(m["content"].split()) for m in messages), 50


@dataclass
class Chat:
    service: ChatService
    engine: TaskEngine

    async def generate(self, text: str) -> Lease:
        """Runs the next reply as a worker would: streams ``text`` in two parts."""
        [lease] = await self.engine.take(GENERATOR)
        half = len(text) // 2
        for part in (text[:half], text[half:]):
            await self.engine.output(lease.subtask.subtask_id, lease.lease_id, delta=part)
        result = {"generated_text": text, "tokens_generated": len(text.split())}
        await self.engine.complete(lease.subtask.subtask_id, lease.lease_id, result)
        return lease


@pytest.fixture(params=["sqlite", "postgresql"])
async def chat(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Chat]:
    url = databases.new_database(tmp_path, request.param)
    db = Database(url)
    await db.open()
    hub = EventHub()
    engine = TaskEngine(db, hub)
    service = ChatService(db, hub, TaskService(db, hub, engine, Catalog()), Models())
    await service.start()
    yield Chat(service, engine)
    await service.close()
    await db.close()
    databases.discard(url)


async def test_a_reply_is_generated_over_the_conversation_and_streamed_into_the_message(
    chat: Chat,
) -> None:
    session = await chat.service.create_session(ACME, NewSession(system_prompt="Be brief."))
    assert session.model_name == MODEL
    posted = await chat.service.post(ACME, session.session_id, NewMessage("What is a lease?"))
    assert (
        posted.reply.status is Status.PENDING and posted.reply.reply_to == posted.message.message_id
    )
    waiting = asyncio.create_task(chat.service.wait_reply(ACME, posted))
    lease = await chat.generate("A claim on work until a deadline.")
    assert lease.subtask.input is not None
    assert lease.subtask.input["input_data"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a lease?"},
    ]
    reply = await asyncio.wait_for(waiting, 10)
    assert reply.status is Status.COMPLETED
    assert reply.content == "A claim on work until a deadline."
    assert reply.generation is not None and reply.generation.tokens_generated == 7
    stored = await chat.service.get_message(ACME, session.session_id, reply.message_id)
    assert stored.content == reply.content and stored.status is Status.COMPLETED


async def test_replies_of_one_session_run_one_at_a_time_in_order(chat: Chat) -> None:
    session = await chat.service.create_session(ACME, NewSession())
    first = await chat.service.post(ACME, session.session_id, NewMessage("One?"))
    second = await chat.service.post(ACME, session.session_id, NewMessage("Two?"))
    [lease] = await chat.engine.take(GENERATOR, limit=5)  # only the head of the queue
    assert lease.subtask.task_id == first.reply.task_id
    await chat.engine.complete(lease.subtask.subtask_id, lease.lease_id, {"generated_text": "1"})
    await asyncio.wait_for(chat.service.wait_reply(ACME, first), 10)
    [after] = await chat.engine.take(GENERATOR, limit=5, wait_seconds=10)
    assert after.subtask.task_id == second.reply.task_id
    # The second reply sees the first one's answer in its conversation.
    assert after.subtask.input is not None
    assert [m["content"] for m in after.subtask.input["input_data"]["messages"]] == [
        "One?",
        "1",
        "Two?",
    ]


async def test_a_repeated_request_id_answers_the_first_post(chat: Chat) -> None:
    session = await chat.service.create_session(ACME, NewSession())
    message = NewMessage("Hello?", request_id="client-1")
    first = await chat.service.post(ACME, session.session_id, message)
    again = await chat.service.post(ACME, session.session_id, message)
    assert (again.message.message_id, again.reply.message_id) == (
        first.message.message_id,
        first.reply.message_id,
    )
    assert len(await chat.engine.take(GENERATOR, limit=5)) == 1


@pytest.mark.parametrize(
    ("message", "field", "reason"),
    [
        (NewMessage("   "), "content", "VALIDATION_ERROR"),
        (NewMessage("word " * 60), "content", "MESSAGE_TOO_LONG"),  # past the model's prompt
        (NewMessage("ok", priority=11), "priority", "VALIDATION_ERROR"),
    ],
)
async def test_bad_posts_are_refused_naming_the_field(
    chat: Chat, message: NewMessage, field: str, reason: str
) -> None:
    session = await chat.service.create_session(ACME, NewSession())
    with pytest.raises(InvalidArgument) as caught:
        await chat.service.post(ACME, session.session_id, message)
    assert caught.value.metadata.get("field") == field and caught.value.reason == reason
    assert await chat.engine.take(GENERATOR) == []


async def test_another_tenants_session_is_not_found(chat: Chat) -> None:
    session = await chat.service.create_session(ACME, NewSession(title="mine"))
    with pytest.raises(SessionNotFound):
        await chat.service.post(GLOBEX, session.session_id, NewMessage("Hi"))
    with pytest.raises(SessionNotFound):
        await chat.service.get_session(GLOBEX, session.session_id)
    with pytest.raises(ModelNotFound):
        await chat.service.create_session(ACME, NewSession(model_name="gpt-9"))
