"""Remote models (``provider: openai``) against a scripted OpenAI server: what their
``model.yaml`` accepts, what is retried (only what is safe), and how the remote's failures
become ours."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from taskorch.domain.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from taskorch.inference.config import ModelConfigError, parse_model_config
from taskorch.inference.remote import RemoteModel
from taskorch.inference.task_types import TaskType
from taskorch.inference.types import ModelState

Handler = Callable[[httpx.Request], httpx.Response]


def _remote(handler: Handler, task: str = "text_generation", **extra: object) -> RemoteModel:
    config = parse_model_config(
        {
            "provider": "openai",
            "task": task,
            "base_url": "http://remote.test/v1",
            "model": "their-model",
            "max_retries": 2,
            **extra,
        }
    )
    return RemoteModel("ours", Path("/nonexistent"), config, transport=httpx.MockTransport(handler))


def _sse(*events: object) -> httpx.Response:
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})


def _chunk(content: str | None, finish: str | None = None) -> dict[str, object]:
    delta = {"content": content} if content is not None else {}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_a_remote_model_yaml_is_checked() -> None:
    config = parse_model_config(
        {"provider": "openai", "task": "chat", "base_url": "http://h:8000/v1/", "model": "m"}
    )
    assert config.remote is not None and config.remote.base_url == "http://h:8000/v1"
    assert config.task is TaskType.TEXT_GENERATION and config.remote.max_concurrency == 16
    assert parse_model_config(config.to_yaml_dict()) == config
    for bad, says in (
        ({"base_url": "h:8000"}, "base_url"),
        ({"task": "image_classification"}, "text_generation"),
        ({"onnx": {"file": "x"}}, "unknown keys"),
        ({"provider": "sagemaker"}, "provider"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"prompts": "raw"}, "prompts"),
    ):
        raw = {"provider": "openai", "task": "text_generation", "base_url": "http://h/v1", **bad}
        with pytest.raises(ModelConfigError, match=says):
            parse_model_config(raw)


async def test_generation_streams_greedy_by_default_and_reports_usage() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        assert request.url.path == "/v1/chat/completions"
        usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
        return _sse(_chunk(""), _chunk("Hel"), _chunk("lo"), _chunk(None, "stop"), usage)

    remote = _remote(handler)
    deltas: list[str] = []

    async def on_output(delta: str) -> None:
        deltas.append(delta)

    result = await remote.run(
        TaskType.TEXT_GENERATION,
        {"prompt": "Say hello"},
        {"max_new_tokens": 5, "stop": ["."]},
        on_output=on_output,
    )
    assert deltas == ["Hel", "lo"] and result["generated_text"] == "Hello"
    assert result["tokens_generated"] == 3 and result["prompt_tokens"] == 7
    assert result["finish_reason"] == "stop"
    (body,) = seen
    assert body["model"] == "their-model" and body["temperature"] == 0
    assert body["max_tokens"] == 5 and body["stop"] == ["."] and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "Say hello"}]
    await remote.close()


async def test_requests_that_never_reached_the_remote_are_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if len(calls) == 2:
            return httpx.Response(503, json={"error": {"message": "warming up"}})
        return _sse(_chunk("ok", "stop"))

    remote = _remote(handler)
    result = await remote.run(TaskType.TEXT_GENERATION, {"prompt": "x"}, {})
    assert result["generated_text"] == "ok" and len(calls) == 3
    assert remote.state is ModelState.READY
    await remote.close()


async def test_a_generation_that_timed_out_is_not_sent_again() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    remote = _remote(handler)
    with pytest.raises(DeadlineExceeded):
        await remote.run(TaskType.TEXT_GENERATION, {"prompt": "x"}, {})
    assert len(calls) == 1
    await remote.close()


async def test_an_embedding_that_timed_out_is_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        data = [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]
        return httpx.Response(200, json={"data": data, "usage": {"prompt_tokens": 4}})

    remote = _remote(handler, task="feature_extraction")
    result = await remote.run(TaskType.FEATURE_EXTRACTION, {"inputs": ["a", "b"]}, {})
    assert result["embeddings"] == [[1.0, 0.0], [0.0, 1.0]] and result["dimensions"] == 2
    assert result["prompt_tokens"] == 4 and len(calls) == 2
    await remote.close()


async def test_an_unreachable_remote_is_unavailable_and_marks_the_model() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    remote = _remote(handler)
    with pytest.raises(Unavailable, match=r"unreachable at http://remote\.test/v1"):
        await remote.run(TaskType.TEXT_GENERATION, {"prompt": "x"}, {})
    assert remote.state is ModelState.UNAVAILABLE and "Connection refused" in str(remote.error)
    with pytest.raises(Unavailable, match="unavailable"):
        remote.check_serving()
    await remote.close()


@pytest.mark.parametrize(
    ("status", "error", "says"),
    [
        (400, InvalidArgument, "refused the request: bad temperature"),
        (401, Unavailable, "refused our credentials"),
        (404, Unavailable, "does not serve 'their-model'"),
        (429, ResourceExhausted, "rate limiting"),
        (500, Unavailable, "answered HTTP 500"),
    ],
)
async def test_the_remotes_refusals_map_to_ours(
    status: int, error: type[Exception], says: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": "bad temperature", "param": "temperature"}}
        return httpx.Response(status, json=body, headers={"retry-after": "0"})

    remote = _remote(handler)
    with pytest.raises(error, match=says):
        await remote.run(TaskType.TEXT_GENERATION, {"prompt": "x"}, {})
    await remote.close()


async def test_an_error_event_mid_stream_fails_the_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return _sse(_chunk("par"), {"error": {"message": "model crashed"}})

    remote = _remote(handler)
    with pytest.raises(Unavailable, match="model crashed"):
        await remote.run(
            TaskType.TEXT_GENERATION, {"messages": [{"role": "user", "content": "x"}]}, {}
        )
    await remote.close()


async def test_the_probe_finds_a_missing_model() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"object": "list", "data": [{"id": "other"}]})

    remote = _remote(handler)
    await remote.probe()
    assert remote.state is ModelState.UNAVAILABLE
    assert "does not serve model 'their-model' (it serves other)" in str(remote.error)
    await remote.close()
