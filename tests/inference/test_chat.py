"""Chat through a real server with real models run by ONNX Runtime: the tiny GPT-2 the tests
build (fast, random weights), a copy of it with a small context window (history trimming), and
the default smollm2-135m-instruct (a real instruction-following model).

Replies are text_generation tasks; their tokens stream into the stored reply and to the
session's watchers, and the text streamed is the text stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from taskorch.client import (
    ChatEvent,
    ChatMessage,
    Client,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)
from taskorch.inference import InferenceEngine
from taskorch.inference.pipelines.text_generation import build_prompt
from tests.conftest import ServerFactory
from tests.servers import ServerProcess, sqlite_url

from .tiny_models import TinyModels

TINY = "tiny-gpt2"
SHORT = "tiny-gpt2-short"  # the same model with a 96-token context window
SMOLLM = "smollm2-135m-instruct"
EMBED = "tiny-bert-embed"
SHORT_WINDOW = 96

pytestmark = pytest.mark.xdist_group("chat-server")


def chat_repository(root: Path, tiny: TinyModels, default_models_dir: Path) -> Path:
    """A model repository for chat: tiny GPT-2, its short-context twin, smollm2, an encoder."""
    root.mkdir(parents=True, exist_ok=True)
    for source in (tiny.models_dir / TINY, tiny.models_dir / EMBED, default_models_dir / SMOLLM):
        (root / source.name).symlink_to(source, target_is_directory=True)
    short = root / SHORT
    short.mkdir()
    for item in (tiny.models_dir / TINY).iterdir():
        if item.name != "model.yaml":
            (short / item.name).symlink_to(item)
    config = yaml.safe_load((tiny.models_dir / TINY / "model.yaml").read_text())
    config.update(context_window=SHORT_WINDOW, max_new_tokens=4)
    (short / "model.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.fixture(scope="module")
def models_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny: TinyModels, default_models_dir: Path
) -> Path:
    return chat_repository(tmp_path_factory.mktemp("chat") / "models", tiny, default_models_dir)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("chat-server")
    process = ServerProcess(
        workdir=workdir,
        database_url=sqlite_url(workdir / "db.sqlite"),
        models_dir=models_dir,
        args=("--workers", "4"),
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client(timeout=60) as api:
        yield api


def _collect(events: Iterator[ChatEvent]) -> tuple[list[ChatEvent], str, ChatMessage]:
    """All events of one reply, the text its deltas add up to, and the final reply."""
    seen, text, final = [], "", None
    for event in events:
        seen.append(event)
        if event.type == "REPLY_STARTED":
            text = ""
        text += event.delta
        if event.type == "REPLY_FINISHED":
            final = event.message
    assert final is not None, seen
    return seen, text, final


def _first_delta(client: Client, session_id: str, timeout: float = 60) -> None:
    """Waits until the session streamed a token (of any reply)."""
    deadline = time.monotonic() + timeout
    for event in client.chat.watch(session_id, after_sequence=0):
        if event.type == "REPLY_DELTA":
            return
        assert time.monotonic() < deadline, "no token streamed"


def _finished(client: Client, session_id: str, count: int) -> list[ChatMessage]:
    """The first ``count`` replies of the session to finish, as they finished."""
    done: list[ChatMessage] = []
    for event in client.chat.watch(session_id, after_sequence=0):
        if event.type == "REPLY_FINISHED" and event.message is not None:
            done.append(event.message)
            if len(done) == count:
                return done
    raise AssertionError("the watch ended early")


# -- streaming and storage ---------------------------------------------------------------------


def test_streamed_tokens_add_up_to_the_stored_reply(client: Client) -> None:
    session = client.chat.create_session(
        TINY, system_prompt="You are a test.", parameters={"max_new_tokens": 12}
    )
    assert session.model_name == TINY and session.message_count == 1
    events, text, reply = _collect(client.chat.stream(session.session_id, "def main():"))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["MESSAGE_ADDED", "MESSAGE_ADDED", "REPLY_STARTED"], kinds
    assert kinds[-1] == "REPLY_FINISHED" and "REPLY_DELTA" in kinds
    assert [e.sequence for e in events] == list(range(events[0].sequence, events[-1].sequence + 1))
    assert reply.status == "COMPLETED" and reply.role == "ASSISTANT"
    assert reply.content == text != ""
    assert reply.tokens_generated >= 1 and reply.finish_reason in ("eos", "length")
    assert reply.inference_time > 0 and reply.prompt_tokens > 0
    stored = client.chat.get_message(session.session_id, reply.message_id)
    assert stored.content == text and stored.status == "COMPLETED"
    # The reply is a text_generation task like any other.
    task = client.get_task(reply.task_id)
    assert task.task_type == "text_generation" and task.model_name == TINY
    assert task.status == "COMPLETED" and task.result is not None
    assert task.result["generated_text"] == text
    assert task.input_data == {
        "messages": [
            {"role": "system", "content": "You are a test."},
            {"role": "user", "content": "def main():"},
        ]
    }
    listed = client.list_tasks(task_type="text_generation", limit=100)
    assert reply.task_id in {t.task_id for t in listed.tasks}


def test_a_real_model_answers_with_the_conversation_so_far(client: Client) -> None:
    session = client.chat.create_session(
        SMOLLM,
        system_prompt="You are a helpful assistant. Answer in one short sentence.",
        parameters={"max_new_tokens": 24},
    )
    first = client.chat.post(session.session_id, "The secret word is banana. Remember it.")
    _, text, second = _collect(client.chat.stream(session.session_id, "What is the secret word?"))
    assert first.reply.status == "COMPLETED" and first.reply.content
    assert second.status == "COMPLETED" and second.content == text
    assert "banana" in second.content.lower()
    assert second.time_to_first_token > 0
    history = client.get_task(second.task_id).input_data
    assert history is not None
    assert [m["role"] for m in history["messages"]] == ["system", "user", "assistant", "user"]
    assert history["messages"][2]["content"] == first.reply.content
    shown = client.chat.get_session(session.session_id)
    assert [m.role for m in shown.messages] == ["SYSTEM", "USER", "ASSISTANT", "USER", "ASSISTANT"]
    assert [m.position for m in shown.messages] == [1, 2, 3, 4, 5]


def test_a_long_history_drops_the_oldest_messages_but_keeps_the_system_prompt(
    client: Client, models_dir: Path
) -> None:
    system = "You are a test."
    session = client.chat.create_session(SHORT, system_prompt=system)
    line = "return self.value if value is None else default"  # ~10 tokens
    replies = [client.chat.post(session.session_id, f"{i}: {line}").reply for i in range(8)]
    assert all(r.status == "COMPLETED" for r in replies)
    assert replies[0].messages_dropped == 0
    last = replies[-1]
    assert last.messages_dropped > 0
    # The task got the whole conversation; the model saw it trimmed, oldest first, and kept
    # the system prompt: the same prompt the engine builds from that input.
    history = client.get_task(last.task_id).input_data
    assert history is not None and len(history["messages"]) == 1 + 2 * 8 - 1
    engine_dir = models_dir.parent / "short-only"
    engine_dir.mkdir(exist_ok=True)
    if not (engine_dir / SHORT).exists():
        (engine_dir / SHORT).symlink_to(models_dir / SHORT, target_is_directory=True)

    async def rebuild() -> tuple[str, int]:
        engine = InferenceEngine(engine_dir, poll_seconds=0)
        await engine.start()
        try:
            model = engine._serving(SHORT)
            prompt = build_prompt(model, history, budget=SHORT_WINDOW - 4)
            return prompt.text, prompt.messages_dropped
        finally:
            await engine.close()

    text, dropped = asyncio.run(rebuild())
    assert dropped == last.messages_dropped
    assert text.startswith(f"system: {system}\n")
    assert f"7: {line}" in text and f"0: {line}" not in text


def test_concurrent_posts_are_answered_in_order_each_seeing_the_replies_before(
    client: Client,
) -> None:
    session = client.chat.create_session(TINY, parameters={"max_new_tokens": 16})
    posted: dict[int, ChatMessage] = {}

    def post(i: int) -> None:
        with Client(client.target, timeout=30) as other:
            posted[i] = other.chat.post(session.session_id, f"question {i}", wait=False).reply

    threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    replies = sorted(posted.values(), key=lambda r: r.position)
    final = _finished(client, session.session_id, 4)
    assert [r.message_id for r in final] == [r.message_id for r in replies]  # in order
    assert [r.status for r in final] == ["COMPLETED"] * 4
    tasks = [client.get_task(r.task_id) for r in replies]
    for before, after, reply_before in zip(tasks, tasks[1:], final, strict=False):
        assert before.completed_at is not None and after.started_at is not None
        assert after.started_at >= before.completed_at
        assert after.input_data is not None
        assistant = [m for m in after.input_data["messages"] if m["role"] == "assistant"]
        assert assistant[-1]["content"] == reply_before.content
    questions = [m["content"] for m in (tasks[-1].input_data or {})["messages"]]
    assert [q for q in questions if q.startswith("question")] == [
        f"question {i}" for i in sorted(posted, key=lambda i: posted[i].position)
    ]


def test_watch_resumes_after_a_sequence_number(client: Client) -> None:
    session = client.chat.create_session(TINY, parameters={"max_new_tokens": 8})
    client.chat.post(session.session_id, "first")
    client.chat.post(session.session_id, "second")
    snapshot = next(iter(client.chat.watch(session.session_id)))
    assert snapshot.type == "SNAPSHOT" and snapshot.session is not None
    assert snapshot.sequence == snapshot.session.sequence > 0
    replayed: list[ChatEvent] = []
    for after in (0, 3):
        replayed = []
        for event in client.chat.watch(session.session_id, after_sequence=after):
            replayed.append(event)
            if event.sequence == snapshot.sequence:
                break
        assert [e.sequence for e in replayed] == list(range(after + 1, snapshot.sequence + 1))
    finished = [e.message for e in replayed if e.type == "REPLY_FINISHED" and e.message]
    assert [m.status for m in finished] == ["COMPLETED", "COMPLETED"]


# -- cancelling --------------------------------------------------------------------------------


def test_deleting_a_reply_while_it_is_generated_cancels_it_and_frees_the_queue(
    client: Client,
) -> None:
    session = client.chat.create_session(SMOLLM, parameters={"max_new_tokens": 300})
    long = client.chat.post(session.session_id, "Tell me a very long story.", wait=False)
    short = {"max_new_tokens": 4}
    queued = client.chat.post(session.session_id, "Say hi.", parameters=short, wait=False)
    dropped = client.chat.post(session.session_id, "Never mind.", parameters=short, wait=False)
    assert client.get_task(queued.reply.task_id).status == "PENDING"
    _first_delta(client, session.session_id)
    # Deleting a question cancels its reply, even one still waiting for its turn.
    client.chat.delete_message(session.session_id, dropped.message.message_id)
    assert client.wait_for_task(dropped.reply.task_id, timeout=30).status == "CANCELLED"
    deleted = client.chat.delete_message(session.session_id, long.reply.message_id)
    assert deleted.status == "CANCELLED"
    task = client.wait_for_task(long.reply.task_id, timeout=30)
    assert task.status == "CANCELLED"
    with pytest.raises(NotFoundError) as missing:
        client.chat.get_message(session.session_id, long.reply.message_id)
    assert missing.value.reason == "MESSAGE_NOT_FOUND"
    # The reply queued behind it runs, without the deleted one in its history.
    events = []
    for event in client.chat.watch(session.session_id, after_sequence=0):
        events.append(event)
        if event.type == "REPLY_FINISHED" and event.message_id == queued.reply.message_id:
            break
    assert events[-1].message is not None and events[-1].message.status == "COMPLETED"
    after = client.get_task(queued.reply.task_id)
    assert after.input_data is not None
    assert [m["role"] for m in after.input_data["messages"]] == ["user", "user"]
    deletions = [e.message_id for e in events if e.type == "MESSAGE_DELETED"]
    assert deletions == [dropped.message.message_id, long.reply.message_id]
    finished = {e.message_id: e.message for e in events if e.type == "REPLY_FINISHED"}
    cancelled = finished[dropped.reply.message_id]
    assert cancelled is not None and cancelled.status == "CANCELLED" and cancelled.content == ""


def test_deleting_a_session_cancels_its_generation_and_ends_its_watchers(client: Client) -> None:
    session = client.chat.create_session(SMOLLM, parameters={"max_new_tokens": 300})
    posted = client.chat.post(session.session_id, "Write a long poem.", wait=False)
    seen: list[ChatEvent] = []
    watcher = threading.Thread(target=lambda: seen.extend(client.chat.watch(session.session_id)))
    watcher.start()
    _first_delta(client, session.session_id)
    gone = client.chat.delete_session(session.session_id)
    assert gone.session_id == session.session_id
    assert client.wait_for_task(posted.reply.task_id, timeout=30).status == "CANCELLED"
    watcher.join(10)
    assert not watcher.is_alive() and seen[-1].type == "SESSION_DELETED"
    with pytest.raises(NotFoundError) as missing:
        client.chat.get_session(session.session_id)
    assert missing.value.reason == "SESSION_NOT_FOUND"


def test_cancelling_the_reply_task_keeps_the_partial_reply(client: Client) -> None:
    session = client.chat.create_session(SMOLLM, parameters={"max_new_tokens": 300})
    events = client.chat.stream(session.session_id, "Count slowly from one to a hundred.")
    streamed, final = "", None
    for event in events:
        streamed += event.delta
        if event.type == "REPLY_DELTA" and final is None:
            final = event  # cancel once the first tokens arrived
            assert event.message_id
            reply = client.chat.get_message(session.session_id, event.message_id)
            client.cancel_task(reply.task_id)
        if event.type == "REPLY_FINISHED":
            final = event
    assert final is not None and final.message is not None
    assert final.message.status == "CANCELLED" and final.message.content == streamed
    assert client.get_task(final.message.task_id).status == "CANCELLED"


# -- the API's other promises ------------------------------------------------------------------


def test_a_reply_task_takes_the_priority_given(client: Client) -> None:
    session = client.chat.create_session(TINY, parameters={"max_new_tokens": 2})
    posted = client.chat.post(session.session_id, "hi", priority=9, wait=False)
    assert client.get_task(posted.reply.task_id).priority == 9


def test_posting_again_with_the_same_request_id_answers_the_first_post(client: Client) -> None:
    session = client.chat.create_session(TINY, parameters={"max_new_tokens": 4})
    first = client.chat.post(session.session_id, "once", request_id="k-1")
    again = client.chat.post(session.session_id, "once", request_id="k-1")
    assert again.message.message_id == first.message.message_id
    assert again.reply.message_id == first.reply.message_id
    assert again.reply.content == first.reply.content
    assert client.chat.get_session(session.session_id).message_count == 2
    with pytest.raises(ConflictError) as reused:
        client.chat.post(session.session_id, "another", request_id="k-1")
    assert reused.value.reason == "REQUEST_ID_REUSED"


def test_sessions_and_messages_are_listed_in_pages(client: Client) -> None:
    made = [client.chat.create_session(TINY, title=f"s{i}").session_id for i in range(3)]
    first = client.chat.list_sessions(model_name=TINY, limit=2)
    assert first.total >= 3 and len(first.sessions) == 2 and first.next_page_token
    second = client.chat.list_sessions(model_name=TINY, limit=2, page_token=first.next_page_token)
    listed = [s.session_id for s in first.sessions + second.sessions]
    assert listed[:3] == made[::-1]  # newest first
    session = made[0]
    for i in range(2):
        client.chat.post(session, f"m{i}", parameters={"max_new_tokens": 2})
    page = client.chat.list_messages(session, limit=3)
    assert page.total == 4 and [m.position for m in page.messages] == [1, 2, 3]
    rest = client.chat.list_messages(session, limit=3, page_token=page.next_page_token)
    assert [m.position for m in rest.messages] == [4] and not rest.next_page_token
    shown = client.chat.get_session(session, limit=2, offset=2)
    assert [(m.role, m.position) for m in shown.messages] == [("USER", 3), ("ASSISTANT", 4)]


def test_bad_input_gets_clear_errors_naming_the_field(client: Client) -> None:
    with pytest.raises(NotFoundError) as unknown_model:
        client.chat.create_session("no-such-model")
    assert unknown_model.value.reason == "MODEL_NOT_FOUND"
    assert TINY in unknown_model.value.message  # it lists what there is
    with pytest.raises(InvalidArgumentError) as encoder:
        client.chat.create_session(EMBED)
    assert encoder.value.field_violations[0].field == "model_name"
    with pytest.raises(InvalidArgumentError) as hot:
        client.chat.create_session(TINY, parameters={"temperature": -1})
    assert hot.value.field_violations[0].field == "parameters.temperature"

    session = client.chat.create_session(SHORT, system_prompt="Be brief.").session_id
    for content in ("", "   \n"):
        with pytest.raises(InvalidArgumentError) as empty:
            client.chat.post(session, content)
        assert empty.value.reason == "VALIDATION_ERROR"
        assert empty.value.field_violations[0].field == "content"
    with pytest.raises(InvalidArgumentError) as huge:
        client.chat.post(session, "x" * 32_001)
    assert huge.value.reason == "MESSAGE_TOO_LONG"
    assert huge.value.field_violations[0].field == "content"
    with pytest.raises(InvalidArgumentError) as too_many_tokens:
        client.chat.post(session, "word " * 200)  # the 96-token window cannot hold it
    assert too_many_tokens.value.reason == "MESSAGE_TOO_LONG"
    assert "tokens" in too_many_tokens.value.message
    with pytest.raises(InvalidArgumentError) as bad_parameter:
        client.chat.post(session, "hi", parameters={"top_p": 5})
    assert bad_parameter.value.field_violations[0].field == "parameters.top_p"

    for bad_id in ("11111111-2222-4333-8444-555555555555", "not-a-uuid"):
        with pytest.raises(NotFoundError) as no_session:
            client.chat.post(bad_id, "hello")
        assert no_session.value.reason == "SESSION_NOT_FOUND"
    with pytest.raises(NotFoundError) as no_message:
        client.chat.get_message(session, "11111111-2222-4333-8444-555555555555")
    assert no_message.value.reason == "MESSAGE_NOT_FOUND"
    system = client.chat.get_session(session).messages[0]
    with pytest.raises(ConflictError) as keep_system:
        client.chat.delete_message(session, system.message_id)
    assert keep_system.value.reason == "SYSTEM_PROMPT_NOT_DELETABLE"
    with pytest.raises(InvalidArgumentError) as token:
        client.chat.list_messages(session, page_token="garbage")
    assert token.value.field_violations[0].field == "page_token"
    with pytest.raises(InvalidArgumentError) as negative:
        next(iter(client.chat.watch(session, after_sequence=-1)))
    assert negative.value.field_violations[0].field == "after_sequence"


# -- the command line --------------------------------------------------------------------------


@contextlib.contextmanager
def _taskorch(server: ServerProcess, *args: str) -> Iterator[subprocess.Popen[str]]:
    """The CLI as a child process with pipes; killed (if still running) and reaped after."""
    env = {**os.environ, "TASKORCH_SERVER": server.grpc_addr, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "taskorch", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def test_cli_chats_line_by_line_and_continues_a_session(
    server: ServerProcess, client: Client
) -> None:
    with _taskorch(
        server, "chat", "--model", TINY, "--system", "Be brief.", "-p", '{"max_new_tokens": 6}'
    ) as chat:
        out, err = chat.communicate("hello\n\nworld\n", timeout=60)
    assert chat.returncode == 0, err
    header, _, streamed = out.partition("\n")
    assert header.startswith("session ") and header.endswith(f"({TINY})")
    session_id = header.split()[1]
    replies = [m for m in client.chat.get_session(session_id).messages if m.role == "ASSISTANT"]
    assert [r.status for r in replies] == ["COMPLETED", "COMPLETED"]
    assert streamed == "".join(f"{r.content}\n" for r in replies)

    with _taskorch(server, "chat", "--session", session_id, "--json") as again:
        out, err = again.communicate("once more\n", timeout=60)
    assert again.returncode == 0, err
    objects = [json.loads(line) for line in out.splitlines()]
    assert objects[0]["type"] == "SESSION"
    assert [m["content"] for m in objects[0]["session"]["messages"][:2]] == ["Be brief.", "hello"]
    finished = [o for o in objects if o["type"] == "REPLY_FINISHED"]
    assert finished[0]["message"]["position"] == 7
    assert "".join(o.get("delta", "") for o in objects) == finished[0]["message"]["content"]


def test_cli_ctrl_c_cancels_the_reply_and_twice_leaves(
    server: ServerProcess, client: Client
) -> None:
    with _taskorch(server, "chat", "--model", SMOLLM, "-p", '{"max_new_tokens": 300}') as chat:
        assert chat.stdin is not None and chat.stdout is not None
        header = chat.stdout.readline()
        session_id = header.split()[1]
        chat.stdin.write("Tell me a very long story about the sea.\n")
        chat.stdin.flush()
        assert chat.stdout.read(1)  # the first streamed character
        chat.send_signal(signal.SIGINT)
        assert chat.stdout.readline().endswith("[cancelled]\n")
        reply = client.chat.get_session(session_id).messages[-1]
        assert client.wait_for_task(reply.task_id, timeout=30).status == "CANCELLED"
        chat.send_signal(signal.SIGINT)  # at the prompt: a hint, then a second one leaves
        assert chat.stdout.readline() == "\n"
        assert chat.stdout.readline() == "(Ctrl-C again or Ctrl-D to leave)\n"
        # Sent as soon as the hint is read: the chat may not be back at its prompt yet.
        chat.send_signal(signal.SIGINT)
        assert chat.wait(timeout=30) == 0  # (stdin still open: it left because of Ctrl-C)
    final = client.chat.get_message(session_id, reply.message_id)
    assert final.status == "CANCELLED" and final.content


# -- crash in the middle of a reply ------------------------------------------------------------


def test_a_reply_interrupted_by_a_crash_is_generated_again_never_left_half_done(
    server_factory: ServerFactory, models_dir: Path
) -> None:
    first = server_factory("--workers", "2", models_dir=models_dir)
    with first.client(timeout=60) as api:
        session = api.chat.create_session(SMOLLM, parameters={"max_new_tokens": 80})
        posted = api.chat.post(session.session_id, "Describe the sea in detail.", wait=False)
        streamed = 0
        for event in api.chat.watch(session.session_id):
            streamed += event.type == "REPLY_DELTA"
            if streamed == 3:
                break
        partial = api.chat.get_message(session.session_id, posted.reply.message_id)
    assert partial.status == "RUNNING" and partial.content
    first.kill()  # SIGKILL in the middle of the reply

    second = server_factory(
        "--workers", "2", models_dir=models_dir, database_url=first.database_url
    )
    with second.client(timeout=60) as api:
        events = []
        for event in api.chat.watch(session.session_id, after_sequence=0):
            events.append(event)
            if event.type == "REPLY_FINISHED":
                break
        final = events[-1].message
        assert final is not None and final.status == "COMPLETED"
        starts = [i for i, e in enumerate(events) if e.type == "REPLY_STARTED"]
        assert len(starts) == 2  # the killed attempt, then the one after the restart
        before_crash = "".join(e.delta for e in events[starts[0] : starts[1]])
        assert before_crash.startswith(partial.content)
        after_restart = "".join(e.delta for e in events[starts[1] :])
        assert final.content == after_restart
        task = api.get_task(final.task_id)
        assert task.attempt == 2 and task.result is not None
        assert task.result["generated_text"] == final.content
        stored = api.chat.get_message(session.session_id, final.message_id)
        assert stored.content == final.content and stored.status == "COMPLETED"


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "asyncio"])
def test_post_times_out_at_its_deadline_while_no_reply_comes(
    server_factory: ServerFactory, models_dir: Path, blocking: bool
) -> None:
    """No worker runs the reply, so no token comes: both clients give up at the deadline."""
    server = server_factory("--workers", "0", models_dir=models_dir)
    with server.client(timeout=60) as api:
        session = api.chat.create_session(TINY)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        if blocking:
            with server.client() as api:
                api.chat.post(session.session_id, "anyone there?", timeout=2)
        else:

            async def post() -> None:
                async with server.async_client() as api:
                    await api.chat.post(session.session_id, "anyone there?", timeout=2)

            asyncio.run(post())
    assert 1.9 <= time.monotonic() - started <= 4.0


# -- the asyncio SDK ---------------------------------------------------------------------------


async def test_the_async_client_has_the_same_chat_methods(server: ServerProcess) -> None:
    async with server.async_client(timeout=60) as api:
        session = await api.chat.create_session(TINY, parameters={"max_new_tokens": 4})
        answered = await api.chat.post(session.session_id, "one")
        assert answered.reply.status == "COMPLETED"
        streamed, final = "", None
        async for event in api.chat.stream(session.session_id, "two"):
            streamed += event.delta
            final = event.message if event.type == "REPLY_FINISHED" else final
        assert final is not None and final.content == streamed
        queued = await api.chat.post(session.session_id, "three", wait=False)
        assert queued.reply.status in ("PENDING", "RUNNING")
        page = await api.chat.list_messages(session.session_id)
        assert [m.content for m in page.messages if m.role == "USER"] == ["one", "two", "three"]
        got = await api.chat.get_message(session.session_id, answered.message.message_id)
        assert got.content == "one"
        sessions = await api.chat.list_sessions(model_name=TINY)
        assert session.session_id in {s.session_id for s in sessions.sessions}
        async for event in api.chat.watch(session.session_id, after_sequence=0):
            if event.type == "REPLY_FINISHED" and event.message_id == queued.reply.message_id:
                break
        await api.chat.delete_message(session.session_id, queued.message.message_id)
        assert (await api.chat.get_session(session.session_id)).message_count == 5
        await api.chat.delete_session(session.session_id)
