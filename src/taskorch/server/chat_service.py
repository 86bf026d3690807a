"""ChatService over gRPC: protobuf in, core/chat.py calls, protobuf out."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

from taskorch.core.chat import ChatService, NewMessage, NewSession, PageRequest
from taskorch.domain.chat_values import ChatEvent, ChatPage, Message, Session
from taskorch.server import convert
from taskorch.server.interceptors import current_caller
from taskorch.v1 import chat_service_pb2 as pb
from taskorch.v1 import chat_service_pb2_grpc as pb_grpc
from taskorch.v1 import task_service_pb2 as task_pb

# grpc ships no type information; servicer contexts are grpc.aio.ServicerContext.
Context: TypeAlias = Any


class ChatServicer(pb_grpc.ChatServiceServicer):
    """The ChatService RPCs, served by core's chat service."""

    def __init__(self, chat: ChatService) -> None:
        self.chat = chat

    async def CreateSession(self, request: pb.CreateSessionRequest, context: Context) -> pb.Session:
        """Opens a conversation with a text-generation model."""
        spec = NewSession(
            model_name=request.model_name,
            system_prompt=request.system_prompt,
            title=request.title,
            parameters=convert.optional_struct(request, "parameters"),
            collections=list(request.collections),
        )
        return session_to_proto(await self.chat.create_session(current_caller(), spec))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        """The caller's sessions, most recently created first."""
        page = await self.chat.list_sessions(
            current_caller(),
            PageRequest(request.limit, request.offset, request.page, request.page_token),
            request.model_name,
        )
        return pb.ListSessionsResponse(
            sessions=[session_to_proto(s) for s in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
            pagination=_pagination(page),
            next_page_token=page.next_page_token,
        )

    async def GetSession(self, request: pb.GetSessionRequest, context: Context) -> pb.Session:
        """One session with a page of its messages, oldest first."""
        paging = PageRequest(request.limit, request.offset, 0, request.page_token)
        session, page = await self.chat.get_session(current_caller(), request.session_id, paging)
        message = session_to_proto(session)
        message.messages.extend(message_to_proto(m) for m in page.items)
        message.next_page_token = page.next_page_token
        return message

    async def DeleteSession(self, request: pb.DeleteSessionRequest, context: Context) -> pb.Session:
        """Ends a session: deletes it and its messages, cancelling replies in progress."""
        return session_to_proto(
            await self.chat.delete_session(current_caller(), request.session_id)
        )

    async def PostMessage(
        self, request: pb.PostMessageRequest, context: Context
    ) -> pb.PostMessageResponse:
        """Posts a user message."""
        caller = current_caller()
        posted = await self.chat.post(caller, request.session_id, _new_message(request))
        reply = posted.reply
        if request.wait:
            reply = await self.chat.wait_reply(caller, posted)
        return pb.PostMessageResponse(
            message=message_to_proto(posted.message), reply=message_to_proto(reply)
        )

    async def PostMessageStream(
        self, request: pb.PostMessageRequest, context: Context
    ) -> AsyncIterator[pb.ChatEvent]:
        """Posts a user message and streams its reply on the same call."""
        events = self.chat.post_and_stream(
            current_caller(), request.session_id, _new_message(request)
        )
        async for event in events:
            yield event_to_proto(event)

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Context
    ) -> pb.ListMessagesResponse:
        """A page of a session's messages, oldest first."""
        paging = PageRequest(request.limit, request.offset, request.page, request.page_token)
        page = await self.chat.list_messages(current_caller(), request.session_id, paging)
        return pb.ListMessagesResponse(
            messages=[message_to_proto(m) for m in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
            pagination=_pagination(page),
            next_page_token=page.next_page_token,
        )

    async def GetMessage(self, request: pb.GetMessageRequest, context: Context) -> pb.Message:
        """One message of a session."""
        message = await self.chat.get_message(
            current_caller(), request.session_id, request.message_id
        )
        return message_to_proto(message)

    async def DeleteMessage(self, request: pb.DeleteMessageRequest, context: Context) -> pb.Message:
        """Deletes a message."""
        message = await self.chat.delete_message(
            current_caller(), request.session_id, request.message_id
        )
        return message_to_proto(message)

    async def WatchSession(
        self, request: pb.WatchSessionRequest, context: Context
    ) -> AsyncIterator[pb.ChatEvent]:
        """Streams a session: a SNAPSHOT (or the events after a sequence), then each event."""
        after = request.after_sequence if request.HasField("after_sequence") else None
        events = self.chat.watch(current_caller(), request.session_id, after)
        async for event in events:
            yield event_to_proto(event)


def _new_message(request: pb.PostMessageRequest) -> NewMessage:
    return NewMessage(
        content=request.content,
        parameters=convert.optional_struct(request, "parameters"),
        priority=request.priority,
        request_id=request.request_id,
    )


def _pagination(page: ChatPage[Any]) -> task_pb.Pagination:
    pages = math.ceil(page.total / page.limit) if page.limit else 0
    return task_pb.Pagination(page=page.page, limit=page.limit, total=page.total, pages=pages)


def session_to_proto(session: Session) -> pb.Session:
    """A session as the API's message."""
    message = pb.Session(
        session_id=session.session_id,
        model_name=session.model_name,
        system_prompt=session.system_prompt,
        title=session.title,
        message_count=session.message_count,
        sequence=session.sequence,
        collections=session.collections,
    )
    if session.parameters is not None:
        message.parameters.update(session.parameters)
    convert.set_time(message.created_at, session.created_at)
    convert.set_time(message.updated_at, session.updated_at)
    return message


def message_to_proto(message: Message) -> pb.Message:
    """A chat message as the API's message."""
    out = pb.Message(
        message_id=message.message_id,
        session_id=message.session_id,
        role=message.role.name,
        content=message.content,
        status=message.status.name,
        position=message.position,
        task_id=message.task_id or "",
        reply_to=message.reply_to or "",
        error=message.error or "",
        error_code=message.error_code or "",
        request_id=message.request_id or "",
        sources=[
            pb.Source(
                collection=s.collection, document_id=s.document_id, text=s.text, score=s.score
            )
            for s in message.sources
        ],
    )
    figures = message.generation
    if figures is not None:
        out.tokens_generated = figures.tokens_generated
        out.prompt_tokens = figures.prompt_tokens
        out.inference_time = figures.inference_time
        out.time_to_first_token = figures.time_to_first_token
        out.finish_reason = figures.finish_reason
        out.messages_dropped = figures.messages_dropped
    convert.set_time(out.created_at, message.created_at)
    convert.set_time(out.updated_at, message.updated_at)
    convert.set_time(out.completed_at, message.completed_at)
    return out


def event_to_proto(event: ChatEvent) -> pb.ChatEvent:
    """A chat event as the API's message."""
    out = pb.ChatEvent(
        session_id=event.session_id,
        sequence=event.sequence,
        type=event.type.name,
        message_id=event.message_id or "",
        status=event.status.name if event.status is not None else "STATUS_UNSPECIFIED",
        delta=event.delta or "",
    )
    if event.message is not None:
        out.message.CopyFrom(message_to_proto(event.message))
    if event.session is not None:
        session = session_to_proto(event.session)
        session.messages.extend(message_to_proto(m) for m in event.messages)
        out.session.CopyFrom(session)
    convert.set_time(out.created_at, event.created_at)
    return out
