"""OpenAIService: OpenAI's REST API (``/openai/v1``) over the inference engine.

Bodies travel as ``google.api.HttpBody``: the gateway hands us the client's JSON untouched and
sends ours back byte for byte, so answers are exactly OpenAI's shapes (``chat.completion``,
``chat.completion.chunk`` events ending with ``data: [DONE]``, ``text_completion``, embedding
lists as floats or base64). Requests run through the engine like ``ModelService`` calls: chat
templates, continuous batching, the same metrics. Refusals raise the domain errors, which the
interceptor turns into gRPC statuses and the gateway into OpenAI's error body
(``{"error": {"message", "type", "param", "code"}}``) with the matching HTTP status. An error
after a stream has begun arrives as a last ``data: {"error": ...}`` event, as OpenAI sends it.

What of OpenAI's parameters is served (the others are refused with a 400 naming them, so a
client never silently gets something else than it asked for):

- chat: ``messages`` (system, developer, user, assistant; text content or text parts),
  ``temperature``, ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``stop``, ``seed``,
  ``n`` = 1, ``stream``, ``stream_options.include_usage``, and vLLM's extensions ``top_k`` and
  ``repetition_penalty``; ``user``, ``metadata``, ``store`` and zero penalties are accepted
  and ignored.
- completions: ``prompt`` (a string or a list of one), the same sampling parameters,
  ``max_tokens`` (default 16, as OpenAI's), ``echo``.
- embeddings: ``input`` (a string or a list of strings), ``encoding_format`` float or base64,
  ``dimensions`` equal to the model's.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeAlias

import numpy as np
from google.api import httpbody_pb2

from taskorch.domain.errors import FieldViolation, InvalidArgument, TaskorchError
from taskorch.inference import InferenceEngine
from taskorch.inference.task_types import TaskType
from taskorch.inference.types import InferenceRequest, InferenceResult, ModelState
from taskorch.server import interceptors
from taskorch.server.model_service import generation
from taskorch.v1 import openai_service_pb2 as pb
from taskorch.v1 import openai_service_pb2_grpc as pb_grpc

Context: TypeAlias = Any
JSON = "application/json"
EVENT_STREAM = "text/event-stream"
DONE = b"data: [DONE]\n\n"
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /completions

# Parameters accepted without effect (bookkeeping of OpenAI's own platform).
_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "prompt_cache_key"})
# Parameters whose neutral value is accepted; any other value is refused.
_NEUTRAL: dict[str, tuple[object, ...]] = {
    "n": (1, None),
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "logprobs": (False, None),
    "top_logprobs": (None, 0),
    "logit_bias": (None,),
    "tools": (None,),
    "tool_choice": (None, "none", "auto"),
    "functions": (None,),
    "function_call": (None, "none", "auto"),
    "parallel_tool_calls": (None, True, False),
    "response_format": (None,),
    "best_of": (1, None),
    "suffix": (None, ""),
    "modalities": (None,),
    "audio": (None,),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
}
_CHAT_KEYS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "stream",
        "stream_options",
        "top_k",
        "repetition_penalty",
    }
)
_COMPLETION_KEYS = frozenset(
    {"model", "prompt", "temperature", "top_p", "max_tokens", "stop", "seed", "stream", "echo"}
    | {"stream_options", "top_k", "repetition_penalty"}
)
_EMBEDDING_KEYS = frozenset({"model", "input", "encoding_format", "dimensions"})
# Our request fields (engine and pipelines) → OpenAI's parameter names, for error params.
_PARAMS = {
    "parameters.max_new_tokens": "max_tokens",
    "input_data.messages": "messages",
    "input_data.prompt": "prompt",
    "input_data.inputs": "input",
    "model_name": "model",
}


def _body(data: bytes, content_type: str = JSON) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=content_type, data=data)


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _event(value: object) -> httpbody_pb2.HttpBody:
    return _body(b"data: " + _json(value) + b"\n\n", EVENT_STREAM)


def _param(field: str) -> str:
    """OpenAI's name for one of our request fields."""
    if field in _PARAMS:
        return _PARAMS[field]
    for prefix in ("input_data.", "parameters."):
        if field.startswith(prefix):
            rest = field[len(prefix) :]
            return _PARAMS.get(prefix + rest.split("[", 1)[0], rest)
    return field


def _openai_error(exc: TaskorchError) -> TaskorchError:
    """``exc`` with its field names spelled as OpenAI's parameters."""
    if not exc.violations:
        return exc
    exc.violations = tuple(FieldViolation(_param(v.field), v.description) for v in exc.violations)
    if "field" in exc.metadata:
        exc.metadata = {**exc.metadata, "field": _param(exc.metadata["field"])}
    return exc


def _error_event(exc: BaseException) -> httpbody_pb2.HttpBody:
    """A failure after a stream began, as OpenAI streams it: one ``data: {"error"}`` event."""
    if isinstance(exc, TaskorchError):
        message, code = exc.message, exc.reason.lower()
        kind = "invalid_request_error" if exc.status.value == "INVALID_ARGUMENT" else "server_error"
    else:
        message, code, kind = "internal error", "internal_error", "server_error"
    return _event({"error": {"message": message, "type": kind, "param": None, "code": code}})


def _request(body: httpbody_pb2.HttpBody, known: frozenset[str]) -> dict[str, Any]:
    """The JSON object of a request, with parameters we cannot honour refused."""
    try:
        value = json.loads(body.data or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(
            f"We could not parse the JSON body of your request: {exc}", reason="INVALID_JSON"
        ) from None
    if not isinstance(value, dict):
        raise InvalidArgument("The request body must be a JSON object", reason="INVALID_JSON")
    for key, item in value.items():
        if key in known or key in _IGNORED:
            continue
        if key in _NEUTRAL:
            # Clients (LangChain, LlamaIndex) send empty tools or logit_bias as often as none.
            neutral = item in _NEUTRAL[key] or item == {} or item == []
            if neutral or (item == {"type": "text"} and key == "response_format"):
                continue
            raise InvalidArgument(
                f"{key}={json.dumps(item)[:80]} is not supported by this server",
                field=key,
                reason="UNSUPPORTED_PARAMETER",
            )
        raise InvalidArgument(f"Unrecognized request argument supplied: {key}", field=key)
    model = value.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidArgument("you must provide a model parameter", field="model")
    return value


def _sampling(request: Mapping[str, Any], *, default_max_tokens: int | None) -> dict[str, Any]:
    """OpenAI's sampling parameters as the engine's generation parameters."""
    parameters: dict[str, Any] = {}
    for key in ("temperature", "top_p", "seed", "top_k", "repetition_penalty"):
        if request.get(key) is not None:
            parameters[key] = request[key]
    temperature = request.get("temperature")
    if temperature is not None and not (
        isinstance(temperature, int | float) and 0 <= temperature <= 2
    ):
        raise InvalidArgument("temperature must be a number from 0 to 2", field="temperature")
    for key in ("max_completion_tokens", "max_tokens"):
        if request.get(key) is not None:
            parameters["max_new_tokens"] = request[key]
            break
    else:
        if default_max_tokens is not None:
            parameters["max_new_tokens"] = default_max_tokens
    if request.get("stop") is not None:
        parameters["stop"] = request["stop"]
    return parameters


def _messages(value: object) -> list[dict[str, str]]:
    """OpenAI's messages as the engine's conversation (text only)."""
    if not isinstance(value, list) or not value:
        raise InvalidArgument("messages must be a non-empty array", field="messages")
    messages = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise InvalidArgument("each message must be an object", field=where)
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise InvalidArgument(
                f"role {role!r} is not supported (system, developer, user, assistant)",
                field=f"{where}.role",
            )
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, Mapping) or part.get("type") != "text":
                    raise InvalidArgument(
                        "only text content parts are supported", field=f"{where}.content"
                    )
                parts.append(str(part.get("text", "")))
            content = "".join(parts)
        if content is None and role == "assistant":
            content = ""
        if not isinstance(content, str):
            raise InvalidArgument("content must be a string or text parts", field=where)
        if message.get("tool_calls") or message.get("function_call"):
            raise InvalidArgument("tool calls are not supported", field=f"{where}.tool_calls")
        messages.append({"role": role, "content": content})
    return messages


def _stream_options(request: Mapping[str, Any]) -> bool:
    """Whether a streamed answer ends with a usage chunk (``stream_options.include_usage``)."""
    options = request.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, Mapping) or not request.get("stream"):
        raise InvalidArgument(
            "stream_options is only allowed with stream: true", field="stream_options"
        )
    return bool(options.get("include_usage"))


def _finish_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _usage(result: Mapping[str, Any]) -> dict[str, int]:
    prompt = int(result.get("prompt_tokens", 0))
    completion = int(result.get("tokens_generated", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _response_id(prefix: str) -> str:
    try:
        request_id = interceptors.current().request_id
    except RuntimeError:
        request_id = ""
    return f"{prefix}-{request_id.removeprefix('req_') or uuid.uuid4().hex}"


class OpenAIServicer(pb_grpc.OpenAIServiceServicer):
    """The OpenAI-compatible RPCs (``/openai/v1/...`` through Envoy)."""

    def __init__(self, engine: InferenceEngine) -> None:
        self.engine = engine

    # --- models ----------------------------------------------------------------------------

    def _model_object(self, name: str) -> dict[str, Any]:
        info = self.engine.model(name)
        try:
            created = int(info.path.stat().st_mtime)
        except OSError:
            created = 0
        return {
            "id": info.name,
            "object": "model",
            "created": created,
            "owned_by": info.provider or "taskorch",
            # Not OpenAI's, but what a client choosing a model wants to know.
            "task": str(info.task or ""),
            "ready": info.state is ModelState.READY,
        }

    async def ListOpenAIModels(
        self, request: pb.ListOpenAIModelsRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """The models of the repository as OpenAI model objects (`{"object": "list", "data"}`)."""
        data = [self._model_object(m.name) for m in self.engine.models()]
        return _body(_json({"object": "list", "data": data}))

    async def GetOpenAIModel(
        self, request: pb.GetOpenAIModelRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """One model (404 with code model_not_found when there is no such model)."""
        return _body(_json(self._model_object(request.model)))

    # --- generation ------------------------------------------------------------------------

    def _check(
        self, model: str, input_data: dict[str, Any], parameters: dict[str, Any]
    ) -> InferenceRequest:
        try:
            return self.engine.check(TaskType.TEXT_GENERATION, model, input_data, parameters)
        except TaskorchError as exc:
            raise _openai_error(exc) from None

    async def CreateChatCompletion(
        self, request: httpbody_pb2.HttpBody, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """A chat completion of a text-generation model."""
        body = _request(request, _CHAT_KEYS)
        usage_chunk = _stream_options(body)
        checked = self._check(
            body["model"],
            {"messages": _messages(body.get("messages"))},
            _sampling(body, default_max_tokens=None),
        )
        response_id, created = _response_id("chatcmpl"), int(time.time())
        head = {
            "id": response_id,
            "object": "chat.completion",
            "created": created,
            "model": checked.model_name,
            "system_fingerprint": None,
        }
        if not body.get("stream"):
            result = (await self.engine.run(checked)).result
            answer = {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": result["generated_text"],
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": _finish_reason(result["finish_reason"]),
                    }
                ],
                "usage": _usage(result),
            }
            yield _body(_json(answer))
            return
        head["object"] = "chat.completion.chunk"
        # The chunk's fixed part is encoded once; each delta only splices its content in.
        prefix = b"data: " + _json(head)[:-1] + b',"choices":[{"index":0,"delta":{"content":'
        suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'

        def chunk(delta: str) -> httpbody_pb2.HttpBody:
            return _body(prefix + _json(delta) + suffix, EVENT_STREAM)

        yield _event(
            {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
            }
        )
        async for item in self._generate(checked):
            if isinstance(item, str):
                yield chunk(item)
                continue
            if isinstance(item, BaseException):
                yield _error_event(item)
                yield _body(DONE, EVENT_STREAM)
                return
            result = item.result
            yield _event(
                {
                    **head,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {},
                            "logprobs": None,
                            "finish_reason": _finish_reason(result["finish_reason"]),
                        }
                    ],
                }
            )
            if usage_chunk:
                yield _event({**head, "choices": [], "usage": _usage(result)})
        yield _body(DONE, EVENT_STREAM)

    async def CreateCompletion(
        self, request: httpbody_pb2.HttpBody, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """A (legacy) text completion of a raw prompt, streamed or not."""
        body = _request(request, _COMPLETION_KEYS)
        usage_chunk = _stream_options(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise InvalidArgument(
                "prompt must be a non-empty string (or a list of one; token arrays and "
                "batches of prompts are not supported)",
                field="prompt",
            )
        parameters = _sampling(body, default_max_tokens=COMPLETION_DEFAULT_MAX_TOKENS)
        # A completion continues the raw text: no chat template around it.
        parameters["use_chat_template"] = False
        checked = self._check(body["model"], {"prompt": prompt}, parameters)
        echo = prompt if body.get("echo") else ""
        head = {
            "id": _response_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": checked.model_name,
            "system_fingerprint": None,
        }

        def choice(text: str, finish: str | None) -> dict[str, Any]:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

        if not body.get("stream"):
            result = (await self.engine.run(checked)).result
            finish = _finish_reason(result["finish_reason"])
            answer = {
                **head,
                "choices": [choice(echo + result["generated_text"], finish)],
                "usage": _usage(result),
            }
            yield _body(_json(answer))
            return
        if echo:
            yield _event({**head, "choices": [choice(echo, None)]})
        async for item in self._generate(checked):
            if isinstance(item, str):
                yield _event({**head, "choices": [choice(item, None)]})
                continue
            if isinstance(item, BaseException):
                yield _error_event(item)
                yield _body(DONE, EVENT_STREAM)
                return
            result = item.result
            finish = _finish_reason(result["finish_reason"])
            yield _event({**head, "choices": [choice("", finish)]})
            if usage_chunk:
                yield _event({**head, "choices": [], "usage": _usage(result)})
        yield _body(DONE, EVENT_STREAM)

    async def _generate(
        self, checked: InferenceRequest
    ) -> AsyncIterator[str | InferenceResult | BaseException]:
        """A generation's deltas as they come, then its result.

        Deltas as they come (those that queued up while one was sent are merged), then the result,
        or the error that ended the generation.
        """
        try:
            async with contextlib.aclosing(generation(self.engine, checked)) as items:
                async for item in items:
                    yield item
        except TaskorchError as exc:
            yield exc

    # --- embeddings ------------------------------------------------------------------------

    async def CreateEmbedding(
        self, request: httpbody_pb2.HttpBody, context: Context
    ) -> httpbody_pb2.HttpBody:
        """Embeddings of a string or a list of strings, as floats or base64."""
        body = _request(request, _EMBEDDING_KEYS)
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if (
            not isinstance(texts, list)
            or not texts
            or not all(isinstance(t, str) and t for t in texts)
        ):
            raise InvalidArgument(
                "input must be a non-empty string or a non-empty array of non-empty strings "
                "(token arrays are not supported)",
                field="input",
            )
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise InvalidArgument(
                "encoding_format must be float or base64", field="encoding_format"
            )
        try:
            checked = self.engine.check(
                TaskType.FEATURE_EXTRACTION, body["model"], {"inputs": texts}, {}
            )
        except TaskorchError as exc:
            raise _openai_error(exc) from None
        result = (await self.engine.run(checked)).result
        vectors: list[list[float]] = result["embeddings"]
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != result["dimensions"]:
            raise InvalidArgument(
                f"model {checked.model_name!r} has {result['dimensions']} dimensions; "
                "it cannot shorten its embeddings",
                field="dimensions",
                reason="UNSUPPORTED_PARAMETER",
            )
        encode: Callable[[list[float]], object] = (
            _base64 if encoding == "base64" else (lambda vector: vector)
        )
        tokens = int(result.get("prompt_tokens", 0))
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(vector)}
                for i, vector in enumerate(vectors)
            ],
            "model": checked.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return _body(_json(answer))


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the little-endian float32 bytes."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
