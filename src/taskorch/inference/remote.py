"""Remote models: a ``provider: openai`` folder of the repository, served by calling an
OpenAI-compatible server (vLLM, TGI, TEI, Ollama, llama.cpp's server, a hosted API, or another
taskorch's ``/openai/v1``) instead of ONNX Runtime.

A :class:`RemoteModel` takes the engine's requests (text generation with a prompt or a
conversation, streamed; feature extraction) and answers the engine's result shapes, so it is
usable wherever a local model is: tasks, chat sessions, templates, ``Infer`` and
``Generate``. Taskorch's generation defaults hold (greedy unless sampling is asked for, the
model's ``max_new_tokens``), so the same request gives the same answer as the remote's own
model would through taskorch.

Failures map to our errors: a remote that cannot be reached is UNAVAILABLE (never INTERNAL),
one that takes too long DEADLINE_EXCEEDED, the remote's 400 our INVALID_ARGUMENT, its 429
RESOURCE_EXHAUSTED. Only what is safe is retried: a request that never reached the remote
(connection refused or timed out), a 429/502/503/504 answered before any output, and a read
timeout of an idempotent call (listing models, embeddings); never a generation that has begun
to stream. A probe (``GET /models``) every few seconds keeps the model's state (READY or
UNAVAILABLE, with the reason) current; requests update it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from taskorch.domain.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    TaskorchError,
    Unavailable,
)
from taskorch.inference.config import ModelConfig, RemoteConfig
from taskorch.inference.metrics import REMOTE_REQUESTS, REMOTE_SECONDS
from taskorch.inference.pipelines.base import param_bool, text_inputs
from taskorch.inference.pipelines.text_generation import generation_settings, parse_messages
from taskorch.inference.task_types import ModelFamily, TaskType, task_types_of
from taskorch.inference.types import ModelInfo, ModelState

log = logging.getLogger(__name__)

OnText = Callable[[str], Awaitable[None]]
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_UNBOUNDED_WINDOW = 1 << 20
MAX_BACKOFF_SECONDS = 5.0


class RemoteModel:
    """One remote model: its client connection pool, its state and its requests.

    Args:
        name: the folder's name (what taskorch's callers ask for).
        path: the folder.
        config: its parsed ``model.yaml`` (``config.remote`` is set).
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        name: str,
        path: Path,
        config: ModelConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        assert config.remote is not None
        self.name = name
        self.path = path
        self.config = config
        self.remote: RemoteConfig = config.remote
        self.remote_model = self.remote.model or name
        key = os.environ.get(self.remote.api_key_env, "") if self.remote.api_key_env else ""
        headers = {"authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(
            self.remote.timeout_seconds, connect=self.remote.connect_timeout_seconds
        )
        limits = httpx.Limits(
            max_connections=self.remote.max_concurrency,
            max_keepalive_connections=self.remote.max_concurrency,
        )
        self._client = httpx.AsyncClient(
            base_url=self.remote.base_url + "/",
            headers=headers,
            timeout=timeout,
            limits=limits,
            transport=transport,
        )
        self._slots = asyncio.Semaphore(self.remote.max_concurrency)
        self.state = ModelState.LOADING
        self.error: str | None = None
        if self.remote.api_key_env and not key:
            self.error = f"environment variable {self.remote.api_key_env} is not set"
        self.checked_at: float | None = None

    @property
    def endpoint(self) -> str:
        return self.remote.base_url

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            task=self.config.task,
            family=self.config.family,
            state=self.state,
            path=self.path,
            providers_active=(f"{self.remote.provider}:{self.remote.base_url}",),
            max_input_length=self.config.max_input_length,
            default_for=self.config.default_for,
            task_types=tuple(task_types_of(self.config.family)),
            error=self.error if self.state is not ModelState.READY else None,
            instances=self.remote.max_concurrency,
            provider=self.remote.provider,
            remote_url=self.remote.base_url,
            remote_model=self.remote_model,
        )

    async def close(self) -> None:
        await self._client.aclose()

    # --- state ------------------------------------------------------------------------------

    def _reachable(self) -> None:
        if self.state is not ModelState.READY:
            log.info("remote model %s at %s is reachable", self.name, self.endpoint)
        self.state, self.error, self.checked_at = ModelState.READY, None, time.monotonic()

    def _unreachable(self, message: str) -> None:
        if self.state is not ModelState.UNAVAILABLE or self.error != message:
            log.warning("remote model %s: %s", self.name, message)
        self.state, self.error = ModelState.UNAVAILABLE, message
        self.checked_at = time.monotonic()

    async def probe(self) -> None:
        """Check that the remote answers and serves the model (``GET /models``)."""
        try:
            response = await self._send("GET", "models", None, idempotent=True, retries=0)
            await response.aread()
            names = {m.get("id") for m in response.json().get("data", []) if isinstance(m, dict)}
        except TaskorchError as exc:
            self._unreachable(exc.message)
            return
        except (ValueError, AttributeError):
            names = set()  # answered, but not with a model list: leave it to the requests
        if names and self.remote_model not in names:
            self._unreachable(
                f"{self.endpoint} does not serve model {self.remote_model!r} "
                f"(it serves {', '.join(sorted(str(n) for n in names)[:20])})"
            )
            return
        self._reachable()

    def check_serving(self) -> None:
        """Refuse at once while the remote is known to be down (the probe brings it back)."""
        if self.state is ModelState.UNAVAILABLE:
            raise Unavailable(
                f"remote model {self.name!r} is unavailable: {self.error}",
                reason="REMOTE_UNAVAILABLE",
                retry_after_seconds=2.0,
            )

    # --- HTTP ------------------------------------------------------------------------------

    def _unreachable_error(self, exc: Exception) -> Unavailable:
        return Unavailable(
            f"remote model {self.name!r} is unreachable at {self.endpoint}: {_describe(exc)}",
            reason="REMOTE_UNAVAILABLE",
            retry_after_seconds=2.0,
        )

    async def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        idempotent: bool,
        retries: int | None = None,
    ) -> httpx.Response:
        """Send with retries where safe; the answer is 2xx and unread (stream it or read it).

        Raises:
            Unavailable, DeadlineExceeded, InvalidArgument, ResourceExhausted: as the module
            docstring says.
        """
        attempts = 1 + (self.remote.max_retries if retries is None else retries)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            request = self._client.build_request(method, path, json=body)
            try:
                response = await self._client.send(request, stream=True)
            except _NEVER_SENT as exc:
                error = self._unreachable_error(exc)
                self._unreachable(f"unreachable at {self.endpoint}: {_describe(exc)}")
                if last:
                    raise error from None
                await asyncio.sleep(min(0.25 * 2**attempt, MAX_BACKOFF_SECONDS))
                continue
            except httpx.TimeoutException as exc:
                if idempotent and not last:
                    continue
                raise DeadlineExceeded(
                    f"remote model {self.name!r} did not answer within "
                    f"{self.remote.timeout_seconds:g} s ({type(exc).__name__})"
                ) from None
            except httpx.HTTPError as exc:
                if idempotent and not last:
                    continue
                raise self._unreachable_error(exc) from None
            if response.status_code < 300:
                return response
            text = (await response.aread()).decode(errors="replace")
            await response.aclose()
            if response.status_code in _RETRY_STATUSES and not last:
                delay = _retry_after(response) or min(0.25 * 2**attempt, MAX_BACKOFF_SECONDS)
                await asyncio.sleep(min(delay, MAX_BACKOFF_SECONDS))
                continue
            raise self._refusal(response, text)
        raise AssertionError("unreachable")  # pragma: no cover

    def _refusal(self, response: httpx.Response, text: str) -> TaskorchError:
        """The remote's error answer as ours."""
        message = text[:500]
        param = None
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            error = json.loads(text).get("error")
            if isinstance(error, dict):
                message, param = str(error.get("message") or message), error.get("param")
            elif isinstance(error, str):
                message = error
        status = response.status_code
        where = f"remote model {self.name!r} ({self.endpoint})"
        if status in (400, 413, 422):
            return InvalidArgument(
                f"{where} refused the request: {message}",
                field=f"parameters.{param}" if isinstance(param, str) and param else None,
            )
        if status in (401, 403):
            key = self.remote.api_key_env or "no api_key_env"
            return Unavailable(
                f"{where} refused our credentials ({key}): {message}",
                reason="REMOTE_UNAUTHORIZED",
                retry_after_seconds=None,
            )
        if status == 404:
            return Unavailable(
                f"{where} does not serve {self.remote_model!r}: {message}",
                reason="REMOTE_MODEL_NOT_FOUND",
                retry_after_seconds=None,
            )
        if status == 429:
            return ResourceExhausted(
                f"{where} is rate limiting us: {message}",
                reason="REMOTE_RATE_LIMITED",
                retry_after_seconds=_retry_after(response) or 1.0,
            )
        return Unavailable(
            f"{where} answered HTTP {status}: {message}", reason="REMOTE_UNAVAILABLE"
        )

    # --- requests --------------------------------------------------------------------------

    def validate(
        self, task: TaskType, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        """Check a request as the local pipelines would (shapes and parameters)."""
        if self.config.family is ModelFamily.TEXT_ENCODER:
            if task is not TaskType.FEATURE_EXTRACTION:
                raise InvalidArgument(
                    f"remote model {self.name!r} serves feature_extraction only, not {task.value}",
                    field="task_type",
                )
            text_inputs(input_data)
            param_bool(parameters, "normalize", True)
            return
        self._generation_body(input_data, parameters)

    def _generation_body(
        self, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The endpoint and OpenAI body of a text generation request."""
        settings, max_length = generation_settings(
            parameters,
            default_new_tokens=self.config.max_new_tokens,
            context_window=_UNBOUNDED_WINDOW,
        )
        if max_length is not None:
            raise InvalidArgument(
                "max_length is not supported by remote models; give max_new_tokens",
                field="parameters.max_length",
            )
        body: dict[str, Any] = {
            "model": self.remote_model,
            "max_tokens": settings.max_new_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        sampling = settings.sampling
        if sampling.do_sample:
            body["temperature"] = sampling.temperature
            if sampling.top_p < 1.0:
                body["top_p"] = sampling.top_p
            if sampling.top_k:
                body["top_k"] = sampling.top_k  # vLLM, TGI, llama.cpp and Ollama take it
        else:
            body["temperature"] = 0  # taskorch's default is greedy; OpenAI's samples at 1
        if sampling.repetition_penalty != 1.0:
            body["repetition_penalty"] = sampling.repetition_penalty
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if settings.stop:
            body["stop"] = list(settings.stop)
        template = parameters.get("use_chat_template")
        if template is not None and not isinstance(template, bool):
            raise InvalidArgument(
                "use_chat_template must be true or false", field="parameters.use_chat_template"
            )
        if "messages" in input_data:
            body["messages"] = parse_messages(input_data["messages"])
            return "chat/completions", body
        for key in ("prompt", "inputs", "text"):
            if key in input_data:
                value = input_data[key]
                if not isinstance(value, str) or not value.strip():
                    raise InvalidArgument(
                        f"{key} must be a non-empty string", field=f"input_data.{key}"
                    )
                break
        else:
            raise InvalidArgument(
                "input_data needs prompt, inputs or messages", field="input_data.prompt"
            )
        if template is False or (template is None and self.remote.prompts == "completions"):
            body["prompt"] = value  # the raw text, continued
            return "completions", body
        # As a local model with a chat template does: the prompt is the user's message.
        body["messages"] = [{"role": "user", "content": value}]
        return "chat/completions", body

    async def run(
        self,
        task: TaskType,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None = None,
        cancel: asyncio.Event | None = None,
    ) -> dict[str, Any]:
        """Run one request remotely; the result has the local pipelines' shape."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with self._slots:
                if self.config.family is ModelFamily.TEXT_ENCODER:
                    return await self._embed(input_data)
                pieces: list[str] = []
                work = self._generate(input_data, parameters, on_output, pieces)
                if cancel is None:
                    return await work
                return await _until_cancelled(work, cancel, pieces)
        except TaskorchError as exc:
            outcome = exc.reason
            raise
        except BaseException:
            outcome = "CANCELLED"
            raise
        finally:
            REMOTE_REQUESTS.labels(self.name, outcome).inc()
            REMOTE_SECONDS.labels(self.name).observe(time.perf_counter() - started)

    async def _embed(self, input_data: Mapping[str, Any]) -> dict[str, Any]:
        texts, many = text_inputs(input_data)
        body = {"model": self.remote_model, "input": texts, "encoding_format": "float"}
        response = await self._send("POST", "embeddings", body, idempotent=True)
        try:
            await response.aread()
            answer = response.json()
            data = sorted(answer["data"], key=lambda d: d["index"])
            vectors = [[float(x) for x in d["embedding"]] for d in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise Unavailable(
                f"remote model {self.name!r} answered embeddings we cannot read: {exc}",
                reason="REMOTE_BAD_ANSWER",
            ) from None
        self._reachable()
        if len(vectors) != len(texts):
            raise Unavailable(
                f"remote model {self.name!r} answered {len(vectors)} embeddings for "
                f"{len(texts)} inputs",
                reason="REMOTE_BAD_ANSWER",
            )
        tokens = int((answer.get("usage") or {}).get("prompt_tokens") or 0)
        result: dict[str, Any] = {"dimensions": len(vectors[0]), "prompt_tokens": tokens}
        if many:
            result["embeddings"] = vectors
        else:
            result["embedding"] = vectors[0]
        return result

    async def _generate(
        self,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        on_output: OnText | None,
        pieces: list[str],
    ) -> dict[str, Any]:
        endpoint, body = self._generation_body(input_data, parameters)
        started = time.perf_counter()
        first: float | None = None
        finish = "length"
        usage: Mapping[str, Any] = {}
        response = await self._send("POST", endpoint, body, idempotent=False)
        self._reachable()
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                event = json.loads(payload)
                if "error" in event:
                    error = event["error"]
                    message = error.get("message") if isinstance(error, dict) else error
                    raise Unavailable(
                        f"remote model {self.name!r} failed while generating: {message}",
                        reason="REMOTE_FAILED",
                    )
                usage = event.get("usage") or usage
                for choice in event.get("choices") or ():
                    delta = choice.get("delta", {}).get("content") or choice.get("text") or ""
                    if delta:
                        if first is None:
                            first = time.perf_counter() - started
                        pieces.append(delta)
                        if on_output is not None:
                            await on_output(delta)
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
        except httpx.TimeoutException:
            raise DeadlineExceeded(
                f"remote model {self.name!r} sent nothing for {self.remote.timeout_seconds:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"remote model {self.name!r} broke off the stream: {exc}",
                reason="REMOTE_UNAVAILABLE",
            ) from None
        except ValueError as exc:
            raise Unavailable(
                f"remote model {self.name!r} streamed something we cannot read: {exc}",
                reason="REMOTE_BAD_ANSWER",
            ) from None
        finally:
            await response.aclose()
        return {
            "generated_text": "".join(pieces),
            "tokens_generated": int(usage.get("completion_tokens") or len(pieces)),
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "finish_reason": finish,
            "time_to_first_token": round(first, 6) if first is not None else None,
            "messages_dropped": 0,
        }


async def _until_cancelled(
    work: Awaitable[dict[str, Any]], cancel: asyncio.Event, pieces: list[str]
) -> dict[str, Any]:
    """``work``'s result, or, once ``cancel`` is set, what was generated so far (closing the
    stream tells the remote to stop)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return {
            "generated_text": "".join(pieces),
            "tokens_generated": len(pieces),
            "prompt_tokens": 0,
            "finish_reason": "cancelled",
            "time_to_first_token": None,
            "messages_dropped": 0,
        }
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
