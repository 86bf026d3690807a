"""Value objects the engine hands to its callers: model descriptions, requests and results."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskorch.core.model import ResourceUsage as ResourceUsage
from taskorch.inference.tasks import ModelFamily, TaskType


class ModelState(enum.StrEnum):
    """Where a model of the repository is in its life."""

    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNAVAILABLE = "UNAVAILABLE"  # a remote model whose server does not answer (for now)


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of an ONNX graph; symbolic dimensions are strings."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What the engine knows about one model folder, loaded or not."""

    name: str
    task: TaskType | None
    family: ModelFamily | None
    state: ModelState
    path: Path
    providers_requested: tuple[str, ...] = ()
    providers_active: tuple[str, ...] = ()
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    max_batch_size: int = 0
    max_queue_delay_ms: float = 0.0
    max_input_length: int = 0
    quantization: str = "none"
    labels: tuple[str, ...] = ()
    default_for: tuple[TaskType, ...] = ()
    task_types: tuple[TaskType, ...] = ()
    error: str | None = None
    size_bytes: int = 0
    load_seconds: float | None = None
    instances: int = 0  # batching instances running (0 until loaded)
    provider: str = ""  # "" for a local ONNX model; "openai" for a remote one
    remote_url: str = ""  # a remote model's server (its OpenAI base URL)
    remote_model: str = ""  # the model's name there

    @property
    def execution_provider(self) -> str:
        """The provider that really runs the model ("" until it is loaded)."""
        return self.providers_active[0] if self.providers_active else ""


@dataclass(frozen=True)
class InferenceRequest:
    """A checked request: canonical task type, resolved model, validated input.

    Built by ``InferenceEngine.check``; plain data, so it can be rebuilt from a stored task by
    calling ``check`` again with the same arguments.
    """

    task_type: TaskType
    model_name: str
    input_data: Mapping[str, Any]
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferenceResult:
    """The answer to one request: a JSON-serialisable ``result`` and what it cost."""

    result: dict[str, Any]
    resource_usage: ResourceUsage
