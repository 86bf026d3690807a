"""The built-in model templates on a real server with the default models."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from taskorch.client import Client, NotFoundError
from taskorch.v1 import model_service_pb2 as model_pb
from taskorch.v1 import model_service_pb2_grpc as model_pb_grpc
from taskorch.v1 import template_service_pb2 as pb
from taskorch.v1 import template_service_pb2_grpc as pb_grpc
from tests.servers import ServerProcess, sqlite_url

SMOLLM = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"

pytestmark = pytest.mark.xdist_group("inference-server")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, default_models_dir: Path
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("templates-models")
    process = ServerProcess(
        workdir=workdir,
        database_url=sqlite_url(workdir / "db.sqlite"),
        models_dir=default_models_dir,
    )
    process.start()
    _wait_for_models(process, (SMOLLM, MINILM))
    yield process
    process.kill()


def _wait_for_models(server: ServerProcess, names: tuple[str, ...], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.grpc_addr) as channel:
        models = model_pb_grpc.ModelServiceStub(channel)
        for name in names:
            while (
                models.GetModel(model_pb.GetModelRequest(name=name)).state == model_pb.Model.LOADING
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"model {name} still loading")
                time.sleep(0.1)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client(timeout=120) as api:
        yield api


@pytest.fixture
def templates(server: ServerProcess) -> Iterator[pb_grpc.TemplateServiceStub]:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        yield pb_grpc.TemplateServiceStub(channel)


def test_ollama_inference_generates_on_the_default_model(client: Client) -> None:
    created = client.create_task(
        template="ollama-inference",
        parameters={"prompt": "What is the capital of France? One word.", "max_tokens": 8},
    )
    assert created.task_type == "text_generation" and created.model_name == SMOLLM
    done = client.wait_for_task(created.task_id, timeout=120)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    assert "Paris" in done.result["generated_text"]
    assert 1 <= done.result["tokens_generated"] <= 8
    assert done.resource_usage is not None and done.resource_usage.model_name == SMOLLM


def test_ollama_inference_with_a_system_prompt(client: Client) -> None:
    created = client.create_task(
        template="ollama-inference",
        parameters={
            "model": SMOLLM,
            "system_prompt": "You answer with a single word.",
            "prompt": "Name a colour.",
            "max_tokens": 4,
        },
    )
    done = client.wait_for_task(created.task_id, timeout=120)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None and done.result["generated_text"].strip()


def test_an_unknown_model_lists_the_models_and_queues_nothing(client: Client) -> None:
    before = client.list_tasks(template="ollama-inference").total
    with pytest.raises(NotFoundError) as caught:
        client.create_task(
            template="ollama-inference",
            parameters={"model": "llama3.1:8b", "prompt": "Explain quantum computing"},
        )
    assert caught.value.reason == "MODEL_NOT_FOUND"
    assert f"available models: {MINILM}, {MINILM}-int8, pii-rampart, {SMOLLM}" in str(caught.value)
    assert client.list_tasks(template="ollama-inference").total == before


def test_model_inference_runs_any_task_type(client: Client) -> None:
    created = client.create_task(
        template="model-inference",
        parameters={"task_type": "feature-extraction", "model": MINILM, "inputs": "hello"},
    )
    assert created.task_type == "feature_extraction" and created.model_name == MINILM
    done = client.wait_for_task(created.task_id, timeout=120)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None and done.result["dimensions"] == 384
    # No model: the task type's default model.
    generated = client.create_task(
        template="model-inference",
        parameters={
            "task_type": "text_generation",
            "inputs": "Once upon a time",
            "parameters": {"max_new_tokens": 3},
        },
    )
    assert generated.model_name == SMOLLM
    done = client.wait_for_task(generated.task_id, timeout=120)
    assert done.status == "COMPLETED", done.error


def test_summarize_then_analyze_feeds_the_summary_to_the_analysis(client: Client) -> None:
    text = (
        "The lighthouse keeper climbed the stairs every night to light the lamp. Ships "
        "passing the rocky coast relied on the light to find the harbour safely."
    )
    created = client.create_task(
        template="summarize-then-analyze", parameters={"text": text, "max_tokens": 24}
    )
    assert created.task_type == "template" and created.model_name == SMOLLM
    done = client.wait_for_task(created.task_id, timeout=180)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    summary = done.result["steps"]["summarize"]["generated_text"]
    assert summary.strip()
    # The analysis ran on the first step's output, not on the template's placeholder.
    assert done.result["text"] == summary
    assert done.result["word_count"] == done.result["steps"]["analyze"]["word_count"] > 0


def test_validate_checks_the_model_serves_the_template(
    templates: pb_grpc.TemplateServiceStub,
) -> None:
    request = pb.ValidateTemplateParametersRequest(template_name="ollama-inference")
    request.parameters.update({"prompt": "hi"})
    assert templates.ValidateTemplateParameters(request, timeout=30).valid
    request.parameters.update({"model": MINILM})
    answer = templates.ValidateTemplateParameters(request, timeout=30)
    assert not answer.valid
    [invalid] = answer.invalid_parameters
    assert invalid.name == "model"
    assert "text-encoder model" in invalid.reason
