"""A second taskorch server uses the first through ``provider: openai`` models (written by
``taskorch models add-remote`` while it runs): a task, a chat session with a streamed reply and
embeddings give the first server's own results; stopping the first server makes the remote
models UNAVAILABLE with a clear message, and they recover when it comes back."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from taskorch.client import Client, ModelInfo, UnavailableError
from tests.security.conftest import create_key
from tests.servers import ServerProcess, sqlite_url

from .test_openai_client import EMBED, TEXT, start, tiny_repository

pytestmark = pytest.mark.xdist_group("openai-remote")

REMOTE_TEXT = "remote-gpt2"
REMOTE_EMBED = "remote-embed"
PARAMETERS = {"max_new_tokens": 10}


@dataclass
class Pair:
    first: ServerProcess  # serves the models (through its gateway, with API keys)
    second: ServerProcess  # uses them as remote models
    key: str


def taskorch(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "taskorch", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _eventually(check: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Polls ``check`` until it returns something truthy (or raises at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = check()
            if answer:
                return answer
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(0.2)


def _model(client: Client, name: str) -> ModelInfo:
    return next(m for m in client.models.list() if m.name == name)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("remote")
    first_url = sqlite_url(root / "first.sqlite")
    key = create_key(first_url, "acme")
    first = ServerProcess(
        workdir=root / "first",
        database_url=first_url,
        models_dir=tiny_repository(root / "first-models"),
        gateway=True,
        auth="keys",
        args=("--workers", "1"),
    )
    (root / "first").mkdir()
    second_models = root / "second-models"
    second_models.mkdir()
    second = ServerProcess(
        workdir=root / "second",
        database_url=sqlite_url(root / "second.sqlite"),
        models_dir=second_models,
        env={"FIRST_KEY": key},
        args=("--workers", "2"),
    )
    (root / "second").mkdir()
    try:
        start(first)
        start(second)
        base_url = f"{first.http_url}/openai/v1"
        # Added while the second server runs: it picks them up by itself. tiny-gpt2 has no
        # chat template, so a bare prompt goes to /completions as the first server reads it.
        common = ("--base-url", base_url, "--api-key-env", "FIRST_KEY", "--models-dir")
        taskorch(
            "models", "add-remote", REMOTE_TEXT, "--model", TEXT, "--prompts", "completions",
            *common, str(second_models),
        )  # fmt: skip
        taskorch(
            "models", "add-remote", REMOTE_EMBED, "--model", EMBED, "--task",
            "feature_extraction", *common, str(second_models),
        )  # fmt: skip
        with second.client() as client:
            _eventually(
                lambda: {_model(client, n).state for n in (REMOTE_TEXT, REMOTE_EMBED)} == {"READY"}
            )
        yield Pair(first, second, key)
    finally:
        second.stop()
        first.stop()


@pytest.fixture(scope="module")
def first(pair: Pair) -> Iterator[Client]:
    with pair.first.client(api_key=pair.key) as client:
        yield client


@pytest.fixture(scope="module")
def second(pair: Pair) -> Iterator[Client]:
    with pair.second.client() as client:
        yield client


def test_remote_models_are_listed_with_their_provider(pair: Pair, second: Client) -> None:
    model = _model(second, REMOTE_TEXT)
    assert model.provider == "openai" and model.remote_model == TEXT
    assert model.remote_url == f"{pair.first.http_url}/openai/v1"
    assert model.task == "text_generation" and model.state == "READY" and not model.error
    rows = json.loads(taskorch("models", "list", "--server", pair.second.grpc_addr, "--json"))
    listed = {row["name"]: row for row in rows}
    assert listed[REMOTE_EMBED]["provider"] == "openai"
    assert listed[REMOTE_EMBED]["remote_model"] == EMBED


def test_a_task_gives_the_first_servers_answer(first: Client, second: Client) -> None:
    prompt = {"prompt": "def main"}
    expected = first.models.infer(TEXT, input_data=prompt, parameters=PARAMETERS).result
    task = second.create_task(
        task_type="text_generation",
        model_name=REMOTE_TEXT,
        input_data=prompt,
        parameters=PARAMETERS,
    )
    done = second.wait_for_task(task.task_id, timeout=60)
    assert done.status == "COMPLETED", done
    assert done.result is not None
    assert done.result["generated_text"] == expected["generated_text"]
    assert done.result["tokens_generated"] == expected["tokens_generated"]
    assert done.result["prompt_tokens"] == expected["prompt_tokens"]


def test_a_streamed_chat_reply_is_the_first_servers(first: Client, second: Client) -> None:
    replies = []
    for client, model in ((first, TEXT), (second, REMOTE_TEXT)):
        session = client.chat.create_session(
            model, system_prompt="You are a test.", parameters=PARAMETERS
        )
        text, final = "", None
        for event in client.chat.stream(session.session_id, "hello there"):
            if event.type == "REPLY_STARTED":
                text = ""
            text += event.delta
            if event.type == "REPLY_FINISHED":
                final = event.message
        assert final is not None and final.status == "COMPLETED"
        assert text == final.content  # streamed, not only the final text
        replies.append(final.content)
    assert replies[0] and replies[0] == replies[1]


def test_embeddings_equal_the_first_servers(pair: Pair, first: Client, second: Client) -> None:
    texts = ["The sky is blue.", "Grass is green."]
    expected = first.models.infer(EMBED, texts).embeddings
    got = second.models.infer(REMOTE_EMBED, texts).embeddings
    assert expected is not None and got is not None
    for a, b in zip(got, expected, strict=True):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        norms = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
        assert dot / norms >= 0.9999
    metrics = httpx.get(pair.second.metrics_url, timeout=10).text
    assert f'taskorch_remote_requests_total{{model="{REMOTE_EMBED}",outcome="ok"}}' in metrics


def test_a_stopped_first_server_makes_the_remote_unavailable_until_it_returns(
    pair: Pair, second: Client
) -> None:
    pair.first.stop()
    with pytest.raises(UnavailableError) as caught:
        second.models.infer(REMOTE_EMBED, "anyone there?")
    assert "unreachable" in str(caught.value) and pair.first.http_url in str(caught.value)
    down = _eventually(lambda: _model(second, REMOTE_TEXT).state == "UNAVAILABLE" or None)
    assert down
    model = _model(second, REMOTE_TEXT)
    assert "unreachable" in model.error and pair.first.http_url in model.error
    with pytest.raises(UnavailableError) as refused:
        second.create_task(
            task_type="text_generation",
            model_name=REMOTE_TEXT,
            input_data={"prompt": "x"},
            parameters=PARAMETERS,
        )
    assert REMOTE_TEXT in str(refused.value)

    start(pair.first)
    _eventually(lambda: _model(second, REMOTE_TEXT).state == "READY")
    again = second.models.infer(
        REMOTE_TEXT, input_data={"prompt": "def main"}, parameters=PARAMETERS
    )
    assert again.result["generated_text"]
