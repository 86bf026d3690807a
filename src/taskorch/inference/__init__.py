"""taskorch.inference: ONNX Runtime engine with a model repository, dynamic batching, task
pipelines, streamed generation and optimum export.

Import ``export`` / ``defaults`` only where the ``export`` extra (torch, optimum) is installed;
everything re-exported here needs the serving dependencies only.
"""

from __future__ import annotations

from taskorch.inference.engine import InferenceEngine
from taskorch.inference.task_types import ModelFamily, TaskType, canonical_task_type
from taskorch.inference.types import (
    InferenceRequest,
    InferenceResult,
    ModelInfo,
    ModelState,
    ResourceUsage,
    TensorInfo,
)

__all__ = [
    "InferenceEngine",
    "InferenceRequest",
    "InferenceResult",
    "ModelFamily",
    "ModelInfo",
    "ModelState",
    "ResourceUsage",
    "TaskType",
    "TensorInfo",
    "canonical_task_type",
]
