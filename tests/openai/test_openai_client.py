"""The official ``openai`` Python client against a served taskorch through Envoy
(``/openai/v1``): models, chat completions streamed and not, completions, embeddings equal to
``ModelService.Infer``'s, and OpenAI's error shape and statuses, with the server's API keys."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from taskorch.client import Client
from tests.inference.tiny_models import build_tiny_models
from tests.security.conftest import create_key
from tests.servers import ServerProcess, sqlite_url

# Starting with models and Envoy takes long on a machine shared with benchmarks.
STARTUP_SECONDS = 180.0

pytestmark = pytest.mark.xdist_group("openai-client")

TEXT = "tiny-gpt2"
EMBED = "tiny-bert-embed"
CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Name a colour of the sky."},
]


def start(process: ServerProcess) -> None:
    """Starts ``process``, giving it STARTUP_SECONDS; stops it if it never got healthy."""
    process.start(wait=False)
    try:
        process.wait_healthy(STARTUP_SECONDS)
    except BaseException:
        process.stop()  # SIGTERM: the server stops its Envoy too
        raise


def tiny_repository(root: Path) -> Path:
    """The tiny text-generation and embedding models (built once, cached)."""
    tiny = build_tiny_models()
    root.mkdir(parents=True, exist_ok=True)
    for name in (TEXT, EMBED):
        (root / name).symlink_to(tiny.models_dir / name, target_is_directory=True)
    return root


class Served:
    def __init__(self, process: ServerProcess, key: str) -> None:
        self.process = process
        self.key = key
        self.base_url = f"{process.http_url}/openai/v1"

    def openai(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key or self.key, max_retries=0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("openai")
    url = sqlite_url(workdir / "db.sqlite")
    key = create_key(url, "acme")
    process = ServerProcess(
        workdir=workdir,
        database_url=url,
        models_dir=tiny_repository(workdir / "models"),
        gateway=True,
        auth="keys",
        args=("--workers", "1"),
    )
    start(process)
    yield Served(process, key)
    process.stop()


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[openai.OpenAI]:
    with served.openai() as client:
        yield client


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_models_are_listed_and_retrieved(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {TEXT, EMBED}
    assert models[TEXT].object == "model" and models[TEXT].owned_by == "taskorch"
    assert client.models.retrieve(EMBED).id == EMBED


def test_a_chat_completion_answers_with_usage(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=TEXT,
        messages=CONVERSATION,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert raw.headers["x-request-id"] and completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion" and completion.model == TEXT
    (choice,) = completion.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0 and 0 < completion.usage.completion_tokens <= 8
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_streamed_deltas_concatenate_to_the_greedy_answer(client: openai.OpenAI) -> None:
    # Deltas that queue up while one is sent are merged: enough tokens that a loaded machine
    # still sends more than one (12 arrived as one delta once, under load).
    whole = client.chat.completions.create(
        model=TEXT,
        messages=CONVERSATION,  # type: ignore[arg-type]
        max_completion_tokens=48,
        temperature=0,
    )
    chunks = list(
        client.chat.completions.create(
            model=TEXT,
            messages=CONVERSATION,  # type: ignore[arg-type]
            max_completion_tokens=48,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([d for d in deltas if d]) >= 2  # really streamed
    assert "".join(deltas) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_the_stream_ends_with_done(served: Served) -> None:
    with httpx.stream(
        "POST",
        f"{served.base_url}/chat/completions",
        headers={"authorization": f"Bearer {served.key}"},
        json={"model": TEXT, "messages": CONVERSATION, "max_tokens": 4, "stream": True},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-1])


def test_a_completion_continues_the_raw_prompt(client: openai.OpenAI) -> None:
    prompt = "def main"
    completion = client.completions.create(model=TEXT, prompt=prompt, max_tokens=6, temperature=0)
    assert completion.object == "text_completion"
    (choice,) = completion.choices
    assert choice.text and choice.finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens <= 6
    streamed = client.completions.create(
        model=TEXT, prompt=prompt, max_tokens=6, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == choice.text
    echoed = client.completions.create(
        model=TEXT, prompt=prompt, max_tokens=6, temperature=0, echo=True
    )
    assert echoed.choices[0].text == prompt + choice.text


def test_embeddings_equal_those_of_model_service_infer(
    served: Served, client: openai.OpenAI
) -> None:
    texts = ["The sky is blue.", "Grass is green, mostly."]
    with Client(served.process.grpc_addr, api_key=served.key) as taskorch:
        expected = taskorch.models.infer(EMBED, texts).embeddings
    assert expected is not None
    # The openai client asks for base64 by default and decodes it; ask for floats too.
    for answer in (
        client.embeddings.create(model=EMBED, input=texts),
        client.embeddings.create(model=EMBED, input=texts, encoding_format="float"),
    ):
        assert answer.model == EMBED and [d.index for d in answer.data] == [0, 1]
        for got, want in zip(answer.data, expected, strict=True):
            assert len(got.embedding) == len(want)
            assert _cosine(got.embedding, want) >= 0.9999
        assert answer.usage.prompt_tokens > 0
    single = client.embeddings.create(model=EMBED, input=texts[0])
    assert _cosine(single.data[0].embedding, expected[0]) >= 0.9999


def test_a_bad_model_name_is_openai_s_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="no-such-model",
            messages=CONVERSATION,  # type: ignore[arg-type]
        )
    error = caught.value
    assert error.status_code == 404
    assert error.code == "model_not_found" and error.type == "invalid_request_error"
    assert "no-such-model" in error.message and error.request_id
    body = error.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}


def test_a_missing_or_wrong_key_is_openai_s_401(served: Served) -> None:
    anonymous = httpx.post(
        f"{served.base_url}/chat/completions",
        json={"model": TEXT, "messages": CONVERSATION},
        timeout=30,
    )
    assert anonymous.status_code == 401
    error = anonymous.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert "credentials" in error["message"].lower()
    with (
        served.openai("tko_not-a-real-key") as wrong,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        wrong.models.list()
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"


def test_unsupported_parameters_are_refused_by_name(client: openai.OpenAI) -> None:
    # Their neutral values are accepted, as frameworks send them.
    accepted = client.chat.completions.create(
        model=TEXT,
        messages=CONVERSATION,  # type: ignore[arg-type]
        max_tokens=2,
        n=1,
        logit_bias={},
        presence_penalty=0,
        user="someone",
        response_format={"type": "text"},
    )
    assert accepted.choices[0].message.content is not None
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=TEXT,
            messages=CONVERSATION,  # type: ignore[arg-type]
            n=2,
        )
    assert caught.value.param == "n" and "not supported" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=TEXT,
            messages=CONVERSATION,  # type: ignore[arg-type]
            max_tokens=10**9,
        )
    assert caught.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=TEXT, input="a text")
    assert caught.value.param == "model" and "feature_extraction" in caught.value.message


def test_malformed_json_is_openai_s_400(served: Served) -> None:
    response = httpx.post(
        f"{served.base_url}/chat/completions",
        headers={"authorization": f"Bearer {served.key}", "content-type": "application/json"},
        content=b"{not json",
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert json.loads(response.text)["error"]["code"] == "invalid_json"


def test_calls_are_counted_in_the_server_metrics(served: Served, client: openai.OpenAI) -> None:
    client.embeddings.create(model=EMBED, input="counted")
    text = httpx.get(served.process.metrics_url, timeout=10).text
    assert 'method="/taskorch.v1.OpenAIService/CreateEmbedding"' in text


def test_the_gateway_rate_limit_answers_openai_s_429(tmp_path: Path) -> None:
    process = ServerProcess(
        workdir=tmp_path,
        database_url=sqlite_url(tmp_path / "db.sqlite"),
        models_dir=tiny_repository(tmp_path / "models"),
        gateway=True,
        args=("--workers", "0", "--rate-limit", "2/60s"),
    )
    start(process)
    try:
        with (
            openai.OpenAI(
                base_url=f"{process.http_url}/openai/v1", api_key="any", max_retries=0
            ) as limited,
            pytest.raises(openai.RateLimitError) as caught,
        ):
            for _ in range(5):
                limited.models.list()
        error = caught.value
        assert error.status_code == 429 and error.code == "rate_limit_exceeded"
        assert error.type == "rate_limit_error" and "rate limit" in error.message
        assert error.response.headers["retry-after"]
    finally:
        process.stop()
