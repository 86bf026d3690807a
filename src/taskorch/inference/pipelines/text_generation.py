"""text_generation: a prompt or a chat conversation in, streamed tokens and the final text out.

Input (one of)::

    {"prompt": "..."}                      seed 001
    {"inputs": "..."}                      Hugging Face Inference API
    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}

Parameters (Hugging Face names): ``max_new_tokens`` or ``max_length`` (prompt + new tokens),
``temperature``, ``top_p``, ``top_k``, ``do_sample`` (default: true when temperature/top_p/top_k
is given, else greedy), ``repetition_penalty``, ``stop`` / ``stop_sequences``, ``seed``,
``use_chat_template`` (default: true when the tokenizer has one), ``return_full_text``.

A conversation longer than the context window (minus the tokens to generate) loses its oldest
messages first; leading system messages and the last message are kept. Anything still too long
is cut from the left or refused, as the model's ``truncation`` policy says.

Result::

    {"generated_text": "...", "tokens_generated": 18, "prompt_tokens": 25,
     "finish_reason": "eos"|"stop"|"length"|"cancelled", "time_to_first_token": 0.05,
     "messages_dropped": 0}
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.config import Truncation
from taskorch.inference.generation import GenerationSettings
from taskorch.inference.pipelines.base import (
    OnText,
    param_bool,
    param_float,
    param_int,
)
from taskorch.inference.runtime import LoadedModel
from taskorch.inference.sampling import SamplingSettings

ROLES = frozenset({"system", "user", "assistant"})
MAX_MESSAGES = 1000
MAX_STOPS = 8


@dataclass(frozen=True)
class Prompt:
    """A tokenised prompt ready for generation."""

    token_ids: tuple[int, ...]
    text: str
    messages_dropped: int = 0


def generation_settings(
    parameters: Mapping[str, Any], *, default_new_tokens: int, context_window: int
) -> tuple[GenerationSettings, int | None]:
    """Parse generation parameters.

    Returns:
        The settings and ``max_length`` when the request capped the total length instead.

    Raises:
        InvalidArgument: a parameter is out of range (``field`` = ``parameters.<name>``).
    """
    max_length: int | None = None
    if parameters.get("max_new_tokens") is None and parameters.get("max_length") is not None:
        max_length = param_int(parameters, "max_length", 0, low=1, high=context_window)
    new_tokens = param_int(
        parameters, "max_new_tokens", default_new_tokens, low=1, high=context_window - 1
    )
    temperature = param_float(parameters, "temperature", 1.0, low=0.0, high=100.0)
    top_p = param_float(parameters, "top_p", 1.0, low=1e-6, high=1.0)
    top_k = param_int(parameters, "top_k", 0, low=0, high=1_000_000)
    sampling_asked = any(parameters.get(k) is not None for k in ("temperature", "top_p", "top_k"))
    do_sample = param_bool(parameters, "do_sample", sampling_asked and temperature > 0)
    penalty = param_float(parameters, "repetition_penalty", 1.0, low=0.01, high=100.0)
    seed = parameters.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise InvalidArgument("seed must be a non-negative integer", field="parameters.seed")
    stop_key = "stop" if "stop" in parameters else "stop_sequences"
    stop_raw = parameters.get(stop_key) or []
    stops = [stop_raw] if isinstance(stop_raw, str) else stop_raw
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOPS
        or not all(isinstance(s, str) and 0 < len(s) <= 200 for s in stops)
    ):
        raise InvalidArgument(
            f"{stop_key} must be a string or a list of at most {MAX_STOPS} non-empty strings",
            field=f"parameters.{stop_key}",
        )
    settings = GenerationSettings(
        max_new_tokens=new_tokens,
        sampling=SamplingSettings(
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=penalty,
            seed=seed,
        ),
        stop=tuple(stops),
    )
    return settings, max_length


def parse_messages(value: object, field: str = "input_data.messages") -> list[dict[str, str]]:
    """Validate a chat conversation (a list of ``{"role", "content"}``)."""
    if not isinstance(value, list) or not value:
        raise InvalidArgument("messages must be a non-empty list", field=field)
    if len(value) > MAX_MESSAGES:
        raise InvalidArgument(f"at most {MAX_MESSAGES} messages", field=field)
    messages: list[dict[str, str]] = []
    for index, message in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(message, Mapping):
            raise InvalidArgument("each message must be an object", field=where)
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or role.lower() not in ROLES:
            raise InvalidArgument(
                f"role must be one of {', '.join(sorted(ROLES))}", field=f"{where}.role"
            )
        if not isinstance(content, str):
            raise InvalidArgument("content must be a string", field=f"{where}.content")
        messages.append({"role": role.lower(), "content": content})
    if messages[-1]["role"] == "assistant":
        raise InvalidArgument("the last message must not be the assistant's", field=field)
    return messages


def _render(model: LoadedModel, messages: Sequence[Mapping[str, str]], templated: bool) -> str:
    tokenizer = model.tokenizer
    if templated:
        text: str = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
        return text
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def _encode(model: LoadedModel, text: str, templated: bool) -> list[int]:
    # A chat template writes its own BOS; don't let the tokenizer add another one.
    ids: list[int] = model.tokenizer(text, add_special_tokens=not templated)["input_ids"]
    return ids


def build_prompt(
    model: LoadedModel,
    input_data: Mapping[str, Any],
    *,
    budget: int,
    use_chat_template: bool | None = None,
) -> Prompt:
    """Tokenise a prompt or a conversation to at most ``budget`` tokens.

    Raises:
        InvalidArgument: the input is malformed, or too long and the policy is ``refuse``.
    """
    has_template = bool(getattr(model.tokenizer, "chat_template", None))
    templated = has_template if use_chat_template is None else use_chat_template and has_template
    if "messages" in input_data:
        messages = parse_messages(input_data["messages"])
        field = "input_data.messages"
        fixed = 0
        while fixed < len(messages) and messages[fixed]["role"] == "system":
            fixed += 1
        system, rest = messages[:fixed], messages[fixed:]
        dropped = 0
        ids = _encode(model, _render(model, system + rest, templated or has_template), True)
        while len(ids) > budget and len(rest) > 1:
            rest = rest[1:]
            dropped += 1
            ids = _encode(model, _render(model, system + rest, templated or has_template), True)
        text = _render(model, system + rest, templated or has_template)
    else:
        field = ""
        for key in ("prompt", "inputs", "text"):
            if key in input_data:
                field = f"input_data.{key}"
                value = input_data[key]
                if not isinstance(value, str) or not value.strip():
                    raise InvalidArgument(f"{key} must be a non-empty string", field=field)
                break
        else:
            raise InvalidArgument(
                "input_data needs prompt, inputs or messages", field="input_data.prompt"
            )
        dropped = 0
        user = [{"role": "user", "content": value}]
        text = _render(model, user, True) if templated else value
        ids = _encode(model, text, templated)
    if len(ids) > budget:
        if model.config.truncation is Truncation.REFUSE:
            raise InvalidArgument(
                f"prompt is {len(ids)} tokens; model {model.name!r} has room for {budget} "
                "(context window minus tokens to generate)",
                field=field,
            )
        ids = ids[-budget:]
    if not ids:
        raise InvalidArgument("the prompt is empty after tokenisation", field=field)
    return Prompt(tuple(ids), text, dropped)


class TextGeneration:
    """Decoder-only generation with streaming."""

    def _prepare(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> tuple[Prompt, GenerationSettings]:
        window = model.context_window
        settings, max_length = generation_settings(
            parameters,
            default_new_tokens=min(model.config.max_new_tokens, window - 1),
            context_window=window,
        )
        use_template = parameters.get("use_chat_template")
        if use_template is not None and not isinstance(use_template, bool):
            raise InvalidArgument(
                "use_chat_template must be true or false", field="parameters.use_chat_template"
            )
        budget = min(window - settings.max_new_tokens, model.config.max_input_length)
        prompt = build_prompt(model, input_data, budget=budget, use_chat_template=use_template)
        if max_length is not None:
            new_tokens = max_length - len(prompt.token_ids)
            if new_tokens < 1:
                raise InvalidArgument(
                    f"max_length {max_length} leaves no room after a prompt of "
                    f"{len(prompt.token_ids)} tokens",
                    field="parameters.max_length",
                )
            settings = GenerationSettings(new_tokens, settings.sampling, settings.stop)
        return prompt, settings

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        self._prepare(model, input_data, parameters)

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        prompt, settings = self._prepare(model, input_data, parameters)
        assert model.decoder is not None
        outcome = await model.decoder.generate(
            prompt.token_ids, settings, on_output=on_output, cancel=cancel
        )
        text = outcome.text
        if parameters.get("return_full_text") is True and "messages" not in input_data:
            text = prompt.text + text
        return {
            "generated_text": text,
            "tokens_generated": outcome.tokens_generated,
            "prompt_tokens": outcome.prompt_tokens,
            "finish_reason": outcome.finish_reason,
            "time_to_first_token": outcome.time_to_first_token,
            "messages_dropped": prompt.messages_dropped,
        }
