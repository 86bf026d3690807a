"""Value objects the engine hands to its callers: model descriptions, requests and results."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskorch.domain.values import ResourceUsage as ResourceUsage
from taskorch.inference.task_types import ModelFamily, TaskType


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


# Mean cosine int8 vs float32 over the probes. MiniLM-L6 per-channel QInt8 measures 0.991 mean
# here, its lowest probe ("yes", one word) 0.963; per-tensor QInt8 (~0.96 mean) is refused.
COSINE_THRESHOLD = 0.99
COSINE_FLOOR = 0.95


@dataclass(frozen=True)
class QuantizationCheck:
    """The figures of one int8-vs-float32 comparison over the probe inputs."""

    probes: int
    cosine_mean: float
    cosine_min: float
    cosine_threshold: float = COSINE_THRESHOLD
    cosine_floor: float = COSINE_FLOOR
    # Share of probes (tokens, for token classification; answer spans, for question answering)
    # whose top label is unchanged; None for models that do not answer with a label.
    top_label_agreement: float | None = None
    float_size_bytes: int = 0
    int8_size_bytes: int = 0

    @property
    def passed(self) -> bool:
        """Whether the int8 model may be kept."""
        labels_ok = self.top_label_agreement is None or self.top_label_agreement >= 1.0
        return (
            self.cosine_mean >= self.cosine_threshold
            and self.cosine_min >= self.cosine_floor
            and labels_ok
        )

    def summary(self) -> str:
        """One line: "cosine mean 0.9910 (>= 0.99), min 0.9633 (>= 0.95), 24 probes, ..."."""
        parts = [
            f"cosine mean {self.cosine_mean:.4f} (>= {self.cosine_threshold})",
            f"min {self.cosine_min:.4f} (>= {self.cosine_floor})",
            f"{self.probes} probes",
        ]
        if self.top_label_agreement is not None:
            parts.append(f"same top label {self.top_label_agreement:.1%} (must be 100%)")
        if self.float_size_bytes and self.int8_size_bytes:
            parts.append(
                f"{self.float_size_bytes / 1e6:.1f} MB -> {self.int8_size_bytes / 1e6:.1f} MB"
            )
        return ", ".join(parts)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The mapping stored under ``quantization_check`` in ``model.yaml``."""
        out: dict[str, Any] = {
            "method": "onnxruntime dynamic, QInt8 weights per channel",
            "probes": self.probes,
            "cosine_mean": round(self.cosine_mean, 6),
            "cosine_min": round(self.cosine_min, 6),
            "cosine_threshold": self.cosine_threshold,
            "cosine_floor": self.cosine_floor,
            "float_size_bytes": self.float_size_bytes,
            "int8_size_bytes": self.int8_size_bytes,
        }
        if self.top_label_agreement is not None:
            out["top_label_agreement"] = round(self.top_label_agreement, 6)
        return out

    @classmethod
    def from_mapping(cls, raw: object) -> QuantizationCheck | None:
        """Read the ``quantization_check`` of a ``model.yaml`` (None when absent or unusable)."""
        if not isinstance(raw, Mapping):
            return None
        try:
            agreement = raw.get("top_label_agreement")
            return cls(
                probes=int(raw["probes"]),
                cosine_mean=float(raw["cosine_mean"]),
                cosine_min=float(raw["cosine_min"]),
                cosine_threshold=float(raw.get("cosine_threshold", COSINE_THRESHOLD)),
                cosine_floor=float(raw.get("cosine_floor", COSINE_FLOOR)),
                top_label_agreement=None if agreement is None else float(agreement),
                float_size_bytes=int(raw.get("float_size_bytes", 0)),
                int8_size_bytes=int(raw.get("int8_size_bytes", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return None


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
    quantization_check: QuantizationCheck | None = None  # int8 vs float32, when imported so

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
