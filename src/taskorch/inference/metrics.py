"""Prometheus metrics of the inference engine: how full batches are and how long they take."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
REMOTE_REQUESTS = Counter(
    "taskorch_remote_requests_total",
    "Requests to remote models (provider: openai), by model and outcome (ok, or the error reason)",
    ["model", "outcome"],
)
REMOTE_SECONDS = Histogram(
    "taskorch_remote_request_seconds",
    "Time of a request to a remote model, retries included, by model",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0),
)
