"""Chat that answers from collections: a session names collections, each user message
retrieves their best chunks into the prompt (within the context window), and the stored
reply lists them as sources; over gRPC, REST (Envoy) and the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from taskorch.client import NotFoundError
from tests.gateway._http import assert_json_error
from tests.servers import ServerProcess, sqlite_url

from .conftest import CHAT_MODEL, EMBEDDER

pytestmark = pytest.mark.xdist_group("retrieval-chat")

FACTS = [
    {"id": "cats", "text": "Cats purr when they are content.", "metadata": {"topic": "pets"}},
    {"id": "tea", "text": "Green tea is brewed at 80 degrees.", "metadata": {"topic": "drinks"}},
    {
        "id": "moon",
        "text": "The Moon orbits the Earth every 27 days.",
        "metadata": {"topic": "space"},
    },
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, retrieval_models: Path
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("rag")
    process = ServerProcess(
        workdir=workdir,
        database_url=sqlite_url(workdir / "db.sqlite"),
        models_dir=retrieval_models,
        gateway=True,
    )
    process.start()
    with process.client() as client:
        client.collections.create("facts", EMBEDDER)
        client.collections.add("facts", FACTS)
    yield process
    process.stop()


def test_a_reply_cites_the_chunks_put_into_its_prompt(server: ServerProcess) -> None:
    with server.client() as client:
        session = client.chat.create_session(
            CHAT_MODEL, parameters={"max_new_tokens": 4}, collections=["facts"]
        )
        assert session.collections == ("facts",)
        answer = client.chat.post(session.session_id, "Why does my cat purr?")
        reply = answer.reply
        assert reply.status == "COMPLETED"
        assert reply.sources and reply.sources[0].document_id == "cats"
        assert reply.sources[0].collection == "facts"
        assert reply.sources[0].text == FACTS[0]["text"] and 0 < reply.sources[0].score <= 1
        scores = [s.score for s in reply.sources]
        assert scores == sorted(scores, reverse=True)
        # The model saw them: the reply's task got them in the message it answers.
        task = client.get_task(reply.task_id)
        prompt = task.input_data["messages"][-1]["content"]
        assert prompt.startswith("Answer using these sources")
        assert "[1] (facts/cats) Cats purr when they are content." in prompt
        assert prompt.endswith("Question: Why does my cat purr?")
        # Stored: read back later, the reply still lists them; the user message has none.
        stored = client.chat.get_message(session.session_id, reply.message_id)
        assert stored.sources == reply.sources
        assert client.chat.get_message(session.session_id, answer.message.message_id).sources == ()


def test_a_session_without_collections_has_no_sources(server: ServerProcess) -> None:
    with server.client() as client:
        session = client.chat.create_session(CHAT_MODEL, parameters={"max_new_tokens": 2})
        reply = client.chat.post(session.session_id, "Why does my cat purr?").reply
        assert reply.sources == ()
        task = client.get_task(reply.task_id)
        assert task.input_data["messages"][-1]["content"] == "Why does my cat purr?"


def test_a_session_naming_an_unknown_collection_is_refused(server: ServerProcess) -> None:
    with server.client() as client, pytest.raises(NotFoundError) as info:
        client.chat.create_session(CHAT_MODEL, collections=["facts", "nope"])
    assert info.value.reason == "COLLECTION_NOT_FOUND" and "nope" in str(info.value)


def test_rest_sessions_take_collections_and_replies_carry_sources(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.http_url, timeout=60) as rest:
        made = rest.post(
            "/v1/chat/sessions",
            json={
                "model_name": CHAT_MODEL,
                "collections": ["facts"],
                "parameters": {"max_new_tokens": 3},
            },
        )
        assert made.status_code == 200, made.text
        session = made.json()
        assert session["collections"] == ["facts"]
        posted = rest.post(
            f"/v1/chat/sessions/{session['session_id']}/messages",
            json={"content": "How hot should the water be for green tea?", "wait": True},
        )
        assert posted.status_code == 200, posted.text
        sources = posted.json()["reply"]["sources"]
        assert sources[0]["document_id"] == "tea" and sources[0]["collection"] == "facts"
        assert set(sources[0]) == {"collection", "document_id", "text", "score"}
        assert_json_error(
            rest.post("/chat", json={"model_name": CHAT_MODEL, "collections": ["gone"]}), 404
        )


def test_grpc_status_of_an_unknown_collection(server: ServerProcess) -> None:
    from taskorch.v1 import chat_service_pb2 as chat_pb
    from taskorch.v1 import chat_service_pb2_grpc as chat_grpc

    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = chat_grpc.ChatServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateSession(
                chat_pb.CreateSessionRequest(model_name=CHAT_MODEL, collections=["x"])
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
