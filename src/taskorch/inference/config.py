"""``model.yaml``: the small config every model folder of the repository carries.

Example (every key but ``task`` is optional)::

    task: feature_extraction          # primary task type (any accepted spelling)
    family: text-encoder              # derived from task when left out
    default_for: [feature_extraction, sentence_similarity]
    onnx: {subfolder: "", file: model.onnx}
    max_batch_size: 32
    max_queue_delay_ms: 2
    max_queue_size: 1024
    instances: auto                   # batching threads, each with its own session: auto is
                                      # one per core on CPU (at most 4), 1 on GPU
    max_input_length: 256             # tokens; longer inputs are truncated or refused:
    truncation: truncate              # truncate | refuse
    providers: [CUDAExecutionProvider, CPUExecutionProvider]
    quantization: none                # none | int8 | int4 (informative)
    quantization_check:               # written by `models import --quantize int8`: the int8
      probes: 24                      # model against the float one over probe inputs
      cosine_mean: 0.991
      cosine_min: 0.963
      ...
    pooling: mean                     # embeddings: mean | cls | max
    normalize: true                   # embeddings: L2-normalise
    labels: [NEGATIVE, POSITIVE]      # overrides config.json id2label
    context_window: 2048              # generation: prompt + new tokens
    max_new_tokens: 256               # generation: default when the request gives none
    files: {voice: voice.onnx.json}   # media families: their other files by role (a Piper
                                      # voice's config; PP-OCR's rec and cls graphs)

A remote model (``provider: openai``) has no files: it is served by calling an
OpenAI-compatible server (vLLM, TGI, TEI, Ollama, llama.cpp, a hosted API, another taskorch)::

    provider: openai
    task: text_generation             # text_generation (chat too) or feature_extraction
    base_url: http://gpu-box:8000/v1  # the server's OpenAI base URL
    model: meta-llama/Llama-3.1-8B-Instruct   # the remote model's name (default: the folder's)
    api_key_env: GPU_BOX_KEY          # environment variable holding its API key (optional)
    timeout_seconds: 120              # per request (and between streamed tokens)
    connect_timeout_seconds: 5
    max_concurrency: 16               # requests in flight to it at once
    max_retries: 2                    # on failures that are safe to retry
    prompts: chat                     # a bare prompt is sent as: chat (a user message, as a
                                      # local model with a chat template does) | completions
    max_new_tokens: 256
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from taskorch.domain.errors import UnsupportedTaskType
from taskorch.inference.task_types import (
    SEQ2SEQ_FAMILIES,
    ModelFamily,
    TaskType,
    canonical_task_type,
    family_of,
    serves,
)
from taskorch.inference.types import QuantizationCheck

CONFIG_FILE = "model.yaml"

E = TypeVar("E", bound=enum.StrEnum)
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


class Truncation(enum.StrEnum):
    """What to do with an input longer than ``max_input_length``."""

    TRUNCATE = "truncate"
    REFUSE = "refuse"


class Pooling(enum.StrEnum):
    """How token embeddings become one sentence embedding."""

    MEAN = "mean"
    CLS = "cls"
    MAX = "max"


class ModelConfigError(ValueError):
    """A ``model.yaml`` that cannot be used; the message names the key."""


PROVIDER_OPENAI = "openai"


@dataclass(frozen=True)
class RemoteConfig:
    """Where a remote model (``provider: openai``) is served and how to call it."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_seconds: float = 120.0
    connect_timeout_seconds: float = 5.0
    max_concurrency: int = 16
    max_retries: int = 2
    prompts: str = "chat"  # chat | completions: where a bare prompt (no messages) goes
    provider: str = PROVIDER_OPENAI

    def to_yaml_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "base_url": self.base_url,
            "model": self.model,
            **({"api_key_env": self.api_key_env} if self.api_key_env else {}),
            "timeout_seconds": self.timeout_seconds,
            "connect_timeout_seconds": self.connect_timeout_seconds,
            "max_concurrency": self.max_concurrency,
            "max_retries": self.max_retries,
            "prompts": self.prompts,
        }


@dataclass(frozen=True)
class ModelConfig:
    """The validated content of one ``model.yaml``."""

    task: TaskType
    family: ModelFamily
    default_for: tuple[TaskType, ...] = ()
    onnx_subfolder: str = ""
    onnx_file: str = "model.onnx"
    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 1024
    instances: int | None = None  # None: chosen at load (see runtime.batching_instances)
    max_input_length: int = 512
    truncation: Truncation = Truncation.TRUNCATE
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    quantization: str = "none"
    quantization_check: QuantizationCheck | None = None
    pooling: Pooling = Pooling.MEAN
    normalize: bool = True
    labels: tuple[str, ...] | None = None
    context_window: int | None = None
    max_new_tokens: int = 128
    extra: Mapping[str, Any] = field(default_factory=dict)
    remote: RemoteConfig | None = None  # served by another server, not by ONNX Runtime

    def file(self, role: str) -> str | None:
        """A media model's file of ``role`` (relative to its folder), from ``files``."""
        files = self.extra.get("files") or {}
        value = files.get(role)
        return str(value) if value else None

    def to_yaml_dict(self) -> dict[str, Any]:
        """The mapping written back to ``model.yaml`` (plain types only)."""
        if self.remote is not None:
            return {
                "task": self.task.value,
                **self.remote.to_yaml_dict(),
                "max_new_tokens": self.max_new_tokens,
                **(
                    {"default_for": [t.value for t in self.default_for]} if self.default_for else {}
                ),
            }
        out: dict[str, Any] = {
            "task": self.task.value,
            "family": self.family.value,
            "default_for": [t.value for t in self.default_for],
            "onnx": {"subfolder": self.onnx_subfolder, "file": self.onnx_file},
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_ms": self.max_queue_delay_ms,
            "max_queue_size": self.max_queue_size,
            **({"instances": self.instances} if self.instances is not None else {}),
            "max_input_length": self.max_input_length,
            "truncation": self.truncation.value,
            "providers": list(self.providers),
            "quantization": self.quantization,
        }
        if self.quantization_check is not None:
            out["quantization_check"] = self.quantization_check.to_yaml_dict()
        if self.family is ModelFamily.TEXT_ENCODER:
            out["pooling"] = self.pooling.value
            out["normalize"] = self.normalize
        if self.labels is not None:
            out["labels"] = list(self.labels)
        if self.family in (ModelFamily.CAUSAL_LM, *SEQ2SEQ_FAMILIES):
            out["max_new_tokens"] = self.max_new_tokens
            if self.context_window is not None:
                out["context_window"] = self.context_window
        out.update(self.extra)
        return out


_KNOWN_KEYS = {
    "name",
    "task",
    "family",
    "default_for",
    "onnx",
    "max_batch_size",
    "max_queue_delay_ms",
    "max_queue_size",
    "instances",
    "max_input_length",
    "truncation",
    "providers",
    "quantization",
    "quantization_check",
    "pooling",
    "normalize",
    "labels",
    "context_window",
    "max_new_tokens",
    "source",
    "validation",
    "provider",
    "files",
}


def _int(raw: Mapping[str, Any], key: str, default: int, *, minimum: int = 1) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _enum(raw: Mapping[str, Any], key: str, kind: type[E], default: E) -> E:
    value = raw.get(key, default.value)
    try:
        return kind(str(value).lower())
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise ModelConfigError(f"{key} must be one of {choices}, got {value!r}") from None


_REMOTE_KEYS = {
    "name",
    "task",
    "family",
    "default_for",
    "provider",
    "base_url",
    "model",
    "api_key_env",
    "timeout_seconds",
    "connect_timeout_seconds",
    "max_concurrency",
    "max_retries",
    "prompts",
    "max_new_tokens",
    "max_input_length",
}


def _seconds(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ModelConfigError(f"{key} must be a number of seconds > 0, got {value!r}")
    return float(value)


def _parse_remote(raw: Mapping[str, Any], task: TaskType, family: ModelFamily) -> ModelConfig:
    provider = str(raw["provider"]).lower()
    if provider != PROVIDER_OPENAI:
        raise ModelConfigError(
            f"provider must be {PROVIDER_OPENAI} (or left out), got {provider!r}"
        )
    unknown = sorted(set(raw) - _REMOTE_KEYS)
    if unknown:
        raise ModelConfigError(f"unknown keys for a remote model: {', '.join(unknown)}")
    if family not in (ModelFamily.CAUSAL_LM, ModelFamily.TEXT_ENCODER):
        raise ModelConfigError(
            "a remote model serves text_generation (and chat) or feature_extraction, "
            f"not {task.value}"
        )
    base_url = raw.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ModelConfigError(f"base_url must be an http(s) URL, got {base_url!r}")
    model = raw.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ModelConfigError(f"model must be the remote model's name, got {model!r}")
    key_env = raw.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not key_env.strip()):
        raise ModelConfigError(f"api_key_env must be an environment variable name, got {key_env!r}")
    prompts = str(raw.get("prompts", "chat")).lower()
    if prompts not in ("chat", "completions"):
        raise ModelConfigError(f"prompts must be chat or completions, got {prompts!r}")
    remote = RemoteConfig(
        prompts=prompts,
        base_url=base_url.rstrip("/"),
        model=(model or str(raw.get("name") or "")).strip(),
        api_key_env=key_env,
        timeout_seconds=_seconds(raw, "timeout_seconds", 120.0),
        connect_timeout_seconds=_seconds(raw, "connect_timeout_seconds", 5.0),
        max_concurrency=_int(raw, "max_concurrency", 16),
        max_retries=_int(raw, "max_retries", 2, minimum=0),
    )
    return ModelConfig(
        task=task,
        family=family,
        default_for=tuple(canonical_task_type(str(t)) for t in raw.get("default_for") or ()),
        providers=(),
        max_input_length=_int(raw, "max_input_length", 1 << 20, minimum=2),
        max_new_tokens=_int(raw, "max_new_tokens", 128),
        remote=remote,
    )


def parse_model_config(raw: object) -> ModelConfig:
    """Validate a parsed ``model.yaml`` mapping.

    Args:
        raw: the YAML document, as loaded.

    Returns:
        The config with defaults filled in.

    Raises:
        ModelConfigError: a key is missing, unknown or has a bad value.
    """
    if not isinstance(raw, Mapping):
        raise ModelConfigError("model.yaml must be a mapping of keys to values")
    remote = raw.get("provider") not in (None, "", "onnx", "local")
    unknown = sorted(set(raw) - (_REMOTE_KEYS if remote else _KNOWN_KEYS))
    if unknown:
        raise ModelConfigError(f"unknown keys in model.yaml: {', '.join(unknown)}")
    if "task" not in raw:
        raise ModelConfigError("task is required (e.g. task: feature_extraction)")
    try:
        task = canonical_task_type(str(raw["task"]))
        default_for = tuple(canonical_task_type(str(t)) for t in raw.get("default_for") or ())
    except UnsupportedTaskType as exc:
        raise ModelConfigError(str(exc)) from None
    family = family_of(task)
    if "family" in raw:
        family = _enum(raw, "family", ModelFamily, family)
    if remote:
        return _parse_remote(raw, task, family)
    for served in default_for:
        if not serves(family, served):
            raise ModelConfigError(
                f"default_for: a {family.value} model cannot serve {served.value}"
            )
    onnx = raw.get("onnx") or {}
    if not isinstance(onnx, Mapping):
        raise ModelConfigError("onnx must be a mapping with subfolder and file")
    providers = raw.get("providers", list(DEFAULT_PROVIDERS))
    if not isinstance(providers, list) or not all(isinstance(p, str) for p in providers):
        raise ModelConfigError("providers must be a list of execution provider names")
    labels = raw.get("labels")
    if labels is not None and (
        not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
    ):
        raise ModelConfigError("labels must be a list of strings")
    delay = raw.get("max_queue_delay_ms", 2.0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise ModelConfigError(f"max_queue_delay_ms must be a number >= 0, got {delay!r}")
    normalize = raw.get("normalize", True)
    if not isinstance(normalize, bool):
        raise ModelConfigError(f"normalize must be true or false, got {normalize!r}")
    context_window = raw.get("context_window")
    if context_window is not None:
        context_window = _int(raw, "context_window", 0, minimum=8)
    instances = raw.get("instances")
    if instances == "auto":
        instances = None
    elif instances is not None:
        instances = _int(raw, "instances", 1)
    files = raw.get("files")
    if files is not None and (
        not isinstance(files, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise ModelConfigError("files must map roles to file names, e.g. {voice: voice.json}")
    extra = {k: raw[k] for k in ("source", "validation", "files") if k in raw}
    check = QuantizationCheck.from_mapping(raw.get("quantization_check"))
    if "quantization_check" in raw and check is None:
        raise ModelConfigError(
            "quantization_check must map probes, cosine_mean and cosine_min to numbers"
        )
    return ModelConfig(
        task=task,
        family=family,
        default_for=default_for,
        onnx_subfolder=str(onnx.get("subfolder", "") or ""),
        onnx_file=str(onnx.get("file", "model.onnx")),
        max_batch_size=_int(raw, "max_batch_size", 8),
        max_queue_delay_ms=float(delay),
        max_queue_size=_int(raw, "max_queue_size", 1024),
        instances=instances,
        max_input_length=_int(raw, "max_input_length", 512, minimum=2),
        truncation=_enum(raw, "truncation", Truncation, Truncation.TRUNCATE),
        providers=tuple(providers),
        quantization=str(raw.get("quantization", "none")),
        quantization_check=check,
        pooling=_enum(raw, "pooling", Pooling, Pooling.MEAN),
        normalize=normalize,
        labels=tuple(labels) if labels is not None else None,
        context_window=context_window,
        max_new_tokens=_int(raw, "max_new_tokens", 128),
        extra=extra,
    )


def load_model_config(model_dir: Path) -> ModelConfig:
    """Read and validate ``model_dir/model.yaml``.

    Raises:
        ModelConfigError: the file is missing, is not YAML, or fails validation.
    """
    path = model_dir / CONFIG_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelConfigError(f"{path} is missing") from None
    except yaml.YAMLError as exc:
        raise ModelConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_model_config(raw)


def write_model_config(model_dir: Path, config: ModelConfig) -> None:
    """Write ``config`` to ``model_dir/model.yaml``."""
    text = yaml.safe_dump(config.to_yaml_dict(), sort_keys=False)
    (model_dir / CONFIG_FILE).write_text(text, encoding="utf-8")
