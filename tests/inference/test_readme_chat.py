"""The README's chat examples, run as written against a server with the real default model.

The commands, the question, the answer shown and the Python example are read from the
README's "Chat" section, so an example that stops reproducing (as ``--system "Answer
briefly."`` did: the model answered "La femme de France, ..." for 256 tokens) fails here.
Decoding is greedy (no sampling parameter is given), so a run answers as the README does.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskorch.client import ChatMessage
from tests import databases
from tests.servers import ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"
MODEL_MAX_NEW_TOKENS = 256  # the default model's max_new_tokens (model.yaml)
# A reply that answers stops far earlier than the limit; a looping one runs into it.
WELL_BEFORE_THE_LIMIT = 64


@dataclass(frozen=True)
class ChatExample:
    new_session: list[str]  # `taskorch chat ...` arguments of the first command
    question: str  # typed at its `you>` prompt
    answer: str  # the reply the README shows
    continued: list[str]  # arguments of `taskorch chat --session ...`
    piped_input: str  # what the scripted example pipes in
    piped: list[str]  # its arguments
    python: str  # the Python example, up to its endless watch loop


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _taskorch_args(line: str) -> list[str]:
    """``$ .venv/bin/taskorch chat --model x   # comment`` -> ``["chat", "--model", "x"]``."""
    words = shlex.split(line.split(".venv/bin/taskorch", 1)[1], comments=True)
    assert words[0] == "chat", line
    return words


def readme_chat_example() -> ChatExample:
    chat = _section(README.read_text(encoding="utf-8"), "Chat")
    console = re.search(r"```console\n(.*?)```", chat, re.S)
    python = re.search(r"```python\n(.*?)```", chat, re.S)
    assert console and python, "the Chat section lost its console or Python example"
    lines = console.group(1).splitlines()
    commands = [line for line in lines if line.startswith("$ ")]
    asked = next(i for i, line in enumerate(lines) if line.startswith("you> "))
    printf = re.match(r"\$ printf '([^']*)' \|", commands[2])
    assert printf, commands[2]
    code = python.group(1)
    return ChatExample(
        new_session=_taskorch_args(commands[0]),
        question=lines[asked].removeprefix("you> "),
        answer=lines[asked + 1],
        continued=_taskorch_args(commands[1]),
        piped_input=printf.group(1).encode().decode("unicode_escape"),
        piped=_taskorch_args(commands[2]),
        python=code[: code.index("    for event in client.chat.watch(")],
    )


@pytest.fixture(scope="module")
def example() -> ChatExample:
    return readme_chat_example()


@pytest.fixture(scope="module")
def chat_server(
    tmp_path_factory: pytest.TempPathFactory, default_models_dir: Path
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("readme-chat")
    url = databases.new_database(workdir, "sqlite")
    server = ServerProcess(
        workdir=workdir, database_url=url, models_dir=default_models_dir, args=("--workers", "1")
    )
    server.start()
    yield server
    server.stop()


def _chat(server: ServerProcess, args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "taskorch", *args, "--server", server.grpc_addr],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def _replies(server: ServerProcess, session_id: str) -> list[ChatMessage]:
    with server.client() as client:
        messages = client.chat.get_session(session_id, limit=100).messages
    return [m for m in messages if m.role == "ASSISTANT"]


def _assert_answered(reply: ChatMessage) -> None:
    """Finished by the model itself, well before the token limit (not a loop cut short)."""
    assert reply.status == "COMPLETED", reply
    assert reply.finish_reason == "eos", reply
    assert 0 < reply.tokens_generated < WELL_BEFORE_THE_LIMIT < MODEL_MAX_NEW_TOKENS, reply


def test_the_readme_chat_command_answers_the_question_it_shows(
    chat_server: ServerProcess, example: ChatExample
) -> None:
    assert "Paris" in example.answer, "the README's example should show the right answer"
    done = _chat(chat_server, example.new_session, example.question + "\n")
    opened = re.match(r"session (\S+) \(smollm2-135m-instruct\)\n", done.stdout)
    assert opened, done.stdout
    (reply,) = _replies(chat_server, opened.group(1))
    assert "Paris" in reply.content, reply.content
    assert reply.content in done.stdout
    _assert_answered(reply)
    # `taskorch chat --session ID` shows the conversation so far.
    args = [opened.group(1) if word.startswith("5b0e7c1e") else word for word in example.continued]
    shown = _chat(chat_server, args, "").stdout
    assert f"you> {example.question}\n{reply.content}\n" in shown, shown


def test_the_readme_scripted_chat_answers_every_line(
    chat_server: ServerProcess, example: ChatExample
) -> None:
    done = _chat(chat_server, example.piped, example.piped_input)
    opened = re.match(r"session (\S+) ", done.stdout)
    assert opened, done.stdout
    replies = _replies(chat_server, opened.group(1))
    assert len(replies) == len(example.piped_input.split()) == 2
    for reply in replies:
        _assert_answered(reply)


def test_the_readme_python_chat_example_runs_as_written(
    chat_server: ServerProcess, example: ChatExample
) -> None:
    code = example.python.replace('"127.0.0.1:50051"', repr(chat_server.grpc_addr))
    assert code != example.python, "the example no longer connects to 127.0.0.1:50051"
    from taskorch.client import Client

    printed = io.StringIO()
    namespace: dict[str, object] = {"Client": Client}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)
    fruit = printed.getvalue().splitlines()[0]
    assert re.search(r"banana|apple|orange|mango|grape|pear|cherr|berr", fruit, re.I), fruit
    answer = namespace["answer"]
    _assert_answered(answer.reply)  # type: ignore[attr-defined]
    assert answer.reply.content.strip()  # type: ignore[attr-defined]
