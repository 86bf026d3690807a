"""What every task pipeline provides, and the input/parameter checks they share.

A pipeline turns a request's ``input_data`` and ``parameters`` (Hugging Face Inference API
shapes) into model inputs and the model's outputs into a JSON-serialisable result. ``validate``
is cheap and synchronous (the engine calls it before a task is queued); ``run`` does the work.

Results for a single input are one mapping; for a list of inputs they are
``{"results": [one mapping per input]}`` unless the task documents otherwise.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.runtime import LoadedModel

OnText = Callable[[str], Awaitable[None]]
# (steps done, steps in all): a pipeline that works in steps reports each one done.
OnProgress = Callable[[int, int], Awaitable[None]]

# Set by the engine for the run of one request: where a stepped pipeline (image_generation's
# denoising loop) reports its steps. A context variable rather than one more argument of every
# pipeline's ``run``: only stepped pipelines read it, and each request's task has its own.
step_progress: contextvars.ContextVar[OnProgress | None] = contextvars.ContextVar(
    "step_progress", default=None
)


async def report_step(done: int, total: int) -> None:
    """Report that ``done`` of ``total`` steps of the current request are done."""
    on_progress = step_progress.get()
    if on_progress is not None:
        await on_progress(done, total)


MAX_INPUTS = 256
TEXT_KEYS = ("inputs", "text", "prompt")


class Pipeline(Protocol):
    """One task type's request handling."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        """Raise ``InvalidArgument`` (naming the field) for input the task cannot take."""

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        """Run the task and return its JSON-serialisable result."""
        ...


def text_inputs(
    input_data: Mapping[str, Any], keys: tuple[str, ...] = TEXT_KEYS
) -> tuple[list[str], bool]:
    """The text(s) of a request: a string or a non-empty list of strings under one of ``keys``.

    Returns:
        The texts and whether the request sent a list.

    Raises:
        InvalidArgument: no key is present, or the value is not text.
    """
    for key in keys:
        if key in input_data:
            value = input_data[key]
            field = f"input_data.{key}"
            if isinstance(value, str):
                if not value.strip():
                    raise InvalidArgument(f"{key} must not be empty", field=field)
                return [value], False
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                if len(value) > MAX_INPUTS:
                    raise InvalidArgument(
                        f"{key} holds {len(value)} texts; at most {MAX_INPUTS} per request",
                        field=field,
                    )
                return list(value), True
            raise InvalidArgument(f"{key} must be a string or a list of strings", field=field)
    raise InvalidArgument(
        f"input_data needs one of: {', '.join(keys)}", field=f"input_data.{keys[0]}"
    )


def string_field(input_data: Mapping[str, Any], key: str) -> str:
    """A required non-empty string field of ``input_data``."""
    value = input_data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{key} must be a non-empty string", field=f"input_data.{key}")
    return value


def string_list(input_data: Mapping[str, Any], key: str) -> list[str]:
    """A required non-empty list of non-empty strings (a single string is accepted too)."""
    value = input_data.get(key)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")] if "," in value else [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise InvalidArgument(
            f"{key} must be a non-empty list of non-empty strings", field=f"input_data.{key}"
        )
    if len(value) > MAX_INPUTS:
        raise InvalidArgument(f"{key}: at most {MAX_INPUTS} entries", field=f"input_data.{key}")
    return list(value)


def param_int(parameters: Mapping[str, Any], key: str, default: int, *, low: int, high: int) -> int:
    """An integer parameter within [low, high]."""
    value = parameters.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(
            f"{key} must be an integer between {low} and {high}, got {value!r}",
            field=f"parameters.{key}",
        )
    return value


def param_float(
    parameters: Mapping[str, Any], key: str, default: float, *, low: float, high: float
) -> float:
    """A number parameter within [low, high]."""
    value = parameters.get(key, default)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise InvalidArgument(
            f"{key} must be a number between {low} and {high}, got {value!r}",
            field=f"parameters.{key}",
        )
    return float(value)


def param_bool(parameters: Mapping[str, Any], key: str, default: bool) -> bool:
    """A boolean parameter."""
    value = parameters.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidArgument(f"{key} must be true or false", field=f"parameters.{key}")
    return value


def softmax(x: npt.NDArray[Any], axis: int = -1) -> npt.NDArray[np.float64]:
    """Numerically stable softmax in float64."""
    z = x.astype(np.float64) - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=axis, keepdims=True), dtype=np.float64)


def one_or_many(results: list[dict[str, Any]], many: bool) -> dict[str, Any]:
    """The result for one input, or ``{"results": [...]}`` for a list of inputs."""
    return {"results": results} if many else results[0]
