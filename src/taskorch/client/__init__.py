"""The taskorch Python SDK.

from taskorch.client import Client

with Client("127.0.0.1:50051") as client:
    task = client.create_task(text="Multimodal is building AI-powered tools.")
    done = client.wait_for_task(task.task_id)
    print(done.result["top_words"])

    session = client.chat.create_session("smollm2-135m-instruct", system_prompt="Be brief.")
    for event in client.chat.stream(session.session_id, "What is ONNX?"):
        print(event.delta, end="", flush=True)

    vector = client.models.infer("all-minilm-l6-v2", "A sentence to embed.").embedding

    client.schedules.create("hourly", cron="0 * * * *", task={"text": "Every hour."})
    client.collections.create("notes", "all-minilm-l6-v2")
    client.collections.add("notes", [{"id": "cats", "text": "Cats purr."}])
    best = client.collections.search("notes", "which pet purrs?", top_k=3)[0]
"""

from taskorch.client._async_client import (
    AsyncChat,
    AsyncClient,
    AsyncCollections,
    AsyncModels,
    AsyncSchedules,
    AsyncTaskWatch,
)
from taskorch.client._chat import (
    ChatEvent,
    ChatExchange,
    ChatMessage,
    ChatMessagePage,
    ChatSession,
    ChatSessionPage,
    ChatSource,
)
from taskorch.client._collections import (
    AddedDocuments,
    Collection,
    Document,
    NewDocument,
    SearchResult,
)
from taskorch.client._errors import (
    ConflictError,
    DeadlineExceededError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    TaskorchClientError,
    UnauthenticatedError,
    UnavailableError,
)
from taskorch.client._inference import (
    GenerationEvent,
    InferenceResult,
    ModelInfo,
    QuantizationCheck,
)
from taskorch.client._models import ResourceUsage, Task, TaskArtifact, TaskEvent, TaskPage
from taskorch.client._schedules import Schedule
from taskorch.client._sync_client import Chat, Client, Collections, Models, Schedules, TaskWatch

__all__ = [
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
]
