"""The SDK's public surface is exactly what it documents."""

from __future__ import annotations

import taskorch.client

PUBLIC = {
    "AddedDocuments",
    "AsyncChat",
    "AsyncClient",
    "AsyncCollections",
    "AsyncModels",
    "AsyncSchedules",
    "AsyncTaskWatch",
    "Chat",
    "ChatEvent",
    "ChatExchange",
    "ChatMessage",
    "ChatMessagePage",
    "ChatSession",
    "ChatSessionPage",
    "ChatSource",
    "Client",
    "Collection",
    "Collections",
    "ConflictError",
    "DeadlineExceededError",
    "Document",
    "FieldViolation",
    "GenerationEvent",
    "InferenceResult",
    "InternalError",
    "InvalidArgumentError",
    "ModelInfo",
    "Models",
    "NewDocument",
    "NotFoundError",
    "PermissionDeniedError",
    "QuantizationCheck",
    "ResourceExhaustedError",
    "ResourceUsage",
    "Schedule",
    "Schedules",
    "SearchResult",
    "Task",
    "TaskArtifact",
    "TaskEvent",
    "TaskPage",
    "TaskWatch",
    "TaskorchClientError",
    "UnauthenticatedError",
    "UnavailableError",
}


def test_all_is_exactly_the_public_names() -> None:
    assert set(taskorch.client.__all__) == PUBLIC
    assert {n for n in dir(taskorch.client) if not n.startswith("_")} >= PUBLIC


def test_every_error_is_a_taskorch_client_error() -> None:
    for name in PUBLIC:
        value = getattr(taskorch.client, name)
        if name.endswith("Error") and name != "TaskorchClientError":
            assert issubclass(value, taskorch.client.TaskorchClientError), name
