"""Prometheus metrics of the inference engine: how full batches are and how long they take."""

from __future__ import annotations

from prometheus_client import Histogram

BATCH_SIZE = Histogram(
    "taskorch_inference_batch_size",
    "Inputs per ONNX Runtime run, by model",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
BATCH_SECONDS = Histogram(
    "taskorch_inference_batch_seconds",
    "Time of one batched ONNX Runtime run, by model",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
QUEUE_SECONDS = Histogram(
    "taskorch_inference_queue_seconds",
    "Time an input waited for its batch to start, by model",
    ["model"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
