"""Inference through a real server: tasks, ModelService, streaming, errors, the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from taskorch.client import Client, InvalidArgumentError, NotFoundError
from taskorch.inference.runtime import batching_instances
from taskorch.inference.sessions import default_threads
from taskorch.v1 import model_service_pb2 as pb
from taskorch.v1 import model_service_pb2_grpc as pb_grpc
from tests.servers import ServerProcess, sqlite_url

from .tiny_models import TinyModels

SMOLLM = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"
PII = "pii-rampart"

pytestmark = pytest.mark.xdist_group("inference-server")


@pytest.fixture(scope="module")
def models_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny: TinyModels, default_models_dir: Path
) -> Path:
    """A repository with the three default models and the tiny model of every family."""
    root = tmp_path_factory.mktemp("repository")
    for source in (*default_models_dir.iterdir(), *tiny.models_dir.iterdir()):
        if (source / "model.yaml").exists():
            (root / source.name).symlink_to(source, target_is_directory=True)
    broken = root / "broken-model"
    broken.mkdir()
    (broken / "model.yaml").write_text("task: feature_extraction\nfamily: text-encoder\n")
    (broken / "model.onnx").write_bytes(b"this is not an onnx graph")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("inference-server")
    process = ServerProcess(
        workdir=workdir,
        database_url=sqlite_url(workdir / "db.sqlite"),
        models_dir=models_dir,
        args=("--workers", "8"),
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client(timeout=120) as api:
        yield api


@pytest.fixture
def models(server: ServerProcess) -> Iterator[pb_grpc.ModelServiceStub]:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        yield pb_grpc.ModelServiceStub(channel)


def _wait_ready(models: pb_grpc.ModelServiceStub, name: str, timeout: float = 60) -> pb.Model:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = models.GetModel(pb.GetModelRequest(name=name), timeout=10)
        if model.state != pb.Model.LOADING:
            return model
        time.sleep(0.2)
    raise TimeoutError(name)


def test_models_list_shows_states_and_the_provider_really_used(
    models: pb_grpc.ModelServiceStub,
) -> None:
    for name in (SMOLLM, MINILM, PII, "tiny-gpt2"):
        _wait_ready(models, name)
    listed = {m.name: m for m in models.ListModels(pb.ListModelsRequest(), timeout=10).models}
    assert listed[SMOLLM].state == pb.Model.READY
    assert listed[SMOLLM].execution_provider == "CPUExecutionProvider"
    assert "text_generation" in listed[SMOLLM].task_types
    # Batched models run one instance per core here (two cores, no GPU); generation runs one.
    cores = default_threads()
    assert listed[MINILM].instances == batching_instances(None, cores=cores, on_cuda=False)
    assert listed[SMOLLM].instances == 1
    assert listed[MINILM].inputs and listed[MINILM].inputs[0].name == "input_ids"
    broken = _wait_ready(models, "broken-model")
    assert broken.state == pb.Model.LOAD_FAILED and broken.error
    only = models.ListModels(pb.ListModelsRequest(task_type="text-generation"), timeout=10)
    assert {m.name for m in only.models} >= {SMOLLM, "tiny-gpt2"}
    assert MINILM not in {m.name for m in only.models}


def test_generation_task_streams_tokens_that_add_up_to_the_answer(client: Client) -> None:
    task = client.create_task(
        task_type="text_generation",
        model_name=SMOLLM,
        input_data={"prompt": "What is the capital of France? Answer in one sentence."},
        parameters={"max_new_tokens": 24},
    )
    streamed = ""
    final = None
    for event in client.watch_task(task.task_id, after_sequence=task.sequence):
        streamed += event.output_delta
        if event.is_terminal:
            final = event.task
    assert final is not None and final.status == "COMPLETED", final
    assert final.result is not None
    assert "Paris" in final.result["generated_text"]
    assert streamed == final.result["generated_text"]
    assert final.result["tokens_generated"] >= 1
    assert final.result["inference_time"] > 0
    assert final.resource_usage is not None
    assert final.resource_usage.model_name == SMOLLM
    assert final.resource_usage.execution_provider == "CPUExecutionProvider"
    assert final.resource_usage.inference_time_seconds > 0
    assert final.resource_usage.memory_used_gb > 0


def test_seed_001_spelling_and_default_model(client: Client) -> None:
    task = client.create_task(
        task_type="text-generation",
        input_data={"inputs": "Say hello."},
        parameters={"max_new_tokens": 5},
    )
    assert task.model_name == SMOLLM  # the default model of its task type
    done = client.wait_for_task(task.task_id, timeout=120)
    assert done.status == "COMPLETED" and done.result is not None


def test_pii_tagger_finds_a_name_and_a_phone_number(client: Client) -> None:
    task = client.create_task(
        task_type="token_classification",
        model_name=PII,
        input_data={"inputs": "My name is John Smith, call me at +1 (415) 555-0199."},
    )
    done = client.wait_for_task(task.task_id, timeout=60)
    assert done.result is not None
    groups = {e["entity_group"] for e in done.result["entities"]}
    assert {"GIVEN_NAME", "PHONE"} <= groups


def test_infer_embeddings_rank_paraphrases_above_unrelated(
    models: pb_grpc.ModelServiceStub,
) -> None:
    request = pb.InferRequest(model_name=MINILM, task_type="sentence_similarity")
    request.input_data.update(
        {
            "source_sentence": "A cat is sitting on the mat.",
            "sentences": ["A kitten sits on a rug.", "The stock market fell sharply today."],
        }
    )
    answer = models.Infer(request, timeout=30)
    paraphrase, unrelated = answer.result["scores"]
    assert paraphrase > 0.5 > unrelated
    assert answer.resource_usage.execution_provider == "CPUExecutionProvider"


def test_infer_accepts_the_hugging_face_top_level_inputs(
    models: pb_grpc.ModelServiceStub,
) -> None:
    request = pb.InferRequest(model_name=MINILM)
    request.inputs.string_value = "Hello world"
    answer = models.Infer(request, timeout=30)
    assert answer.task_type == "feature_extraction"
    assert len(answer.embedding) == 384
    assert answer.result["dimensions"] == 384
    many = pb.InferRequest(model_name=MINILM)
    many.input_data.update({"inputs": ["one", "two", "three"]})
    assert [len(e.values) for e in models.Infer(many, timeout=30).embeddings] == [384] * 3


def test_batches_are_measured_for_prometheus(
    server: ServerProcess, models: pb_grpc.ModelServiceStub
) -> None:
    def count(body: str, metric: str) -> float:
        prefix = f'{metric}_count{{model="{MINILM}"}} '
        lines = [line for line in body.splitlines() if line.startswith(prefix)]
        return float(lines[0].removeprefix(prefix)) if lines else 0.0

    before = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    many = pb.InferRequest(model_name=MINILM)
    many.input_data.update({"inputs": ["one", "two", "three"]})
    models.Infer(many, timeout=30)
    after = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    for metric in (
        "taskorch_inference_batch_size",
        "taskorch_inference_batch_seconds",
        "taskorch_inference_queue_seconds",
    ):
        assert count(after, metric) > count(before, metric), metric
    assert f'taskorch_inference_batch_size_bucket{{le="128.0",model="{MINILM}"}}' in after


def test_generate_streams_deltas_then_the_whole_result(models: pb_grpc.ModelServiceStub) -> None:
    request = pb.InferRequest(model_name=SMOLLM)
    request.input_data.update({"prompt": "Count from one to five."})
    request.parameters.update({"max_new_tokens": 20})
    events = list(models.Generate(request, timeout=120))
    assert events[-1].done and not any(e.done for e in events[:-1])
    text = "".join(e.delta for e in events[:-1])
    assert text == events[-1].result["generated_text"]
    assert len(events) > 2


@pytest.mark.parametrize(
    ("task_type", "model", "model_id", "inputs"),
    [
        ("fill_mask", "tiny-bert-mlm", "", {"inputs": "the [MASK] sat"}),
        ("text_classification", "tiny-bert-sentiment", "", {"inputs": "great"}),
        (
            "zero_shot_classification",
            "tiny-bert-nli",
            "",
            {"inputs": "a game", "candidate_labels": ["sport", "food"]},
        ),
        ("question_answering", "tiny-bert-qa", "", {"question": "who", "context": "bob went home"}),
        ("summarization", "tiny-t5", "", {"inputs": "a long text to shorten"}),
        ("feature_extraction", "tiny-bert-embed", "", {"inputs": "hello"}),
    ],
)
def test_every_family_runs_as_a_task_with_an_imported_model(
    client: Client, task_type: str, model: str, model_id: str, inputs: dict[str, object]
) -> None:
    task = client.create_task(task_type=task_type, model_name=model, input_data=inputs)
    done = client.wait_for_task(task.task_id, timeout=60)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None and "inference_time" in done.result


def test_unknown_model_is_refused_before_queueing(client: Client) -> None:
    before = client.list_tasks(task_type="text_generation", limit=1000).total
    with pytest.raises(NotFoundError) as caught:
        client.create_task(
            task_type="text_generation",
            model_name="microsoft/DialoGPT-medium",
            input_data={"prompt": "Hello"},
        )
    assert caught.value.reason == "MODEL_NOT_FOUND"
    assert SMOLLM in caught.value.message  # it lists what is available
    assert client.list_tasks(task_type="text_generation", limit=1000).total == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (
            {
                "task_type": "sentence_similarity",
                "model_name": MINILM,
                "input_data": {"source_sentence": "x"},
            },
            "input_data.sentences",
        ),
        (
            {
                "task_type": "zero_shot_classification",
                "model_name": "tiny-bert-nli",
                "input_data": {"inputs": "x"},
            },
            "input_data.candidate_labels",
        ),
        (
            {
                "task_type": "text_generation",
                "model_name": SMOLLM,
                "input_data": {"prompt": "x"},
                "parameters": {"temperature": -1},
            },
            "parameters.temperature",
        ),
        (
            {"task_type": "text_generation", "model_name": MINILM, "input_data": {"prompt": "x"}},
            "model_name",
        ),
    ],
)
def test_wrong_input_names_the_field(client: Client, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_task(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field_violations[0].field == field


def test_types_the_engine_cannot_run_are_refused_listing_what_it_can(client: Client) -> None:
    for unsupported in ("visual_question_answering", "image_to_video"):
        with pytest.raises(InvalidArgumentError) as caught:
            client.create_task(task_type=unsupported, model_name="sd", input_data={"prompt": "x"})
        assert caught.value.reason == "UNSUPPORTED_TASK_TYPE"
        assert "text_generation" in caught.value.message


def test_cancelling_a_generation_stops_it(client: Client) -> None:
    task = client.create_task(
        task_type="text_generation",
        model_name=SMOLLM,
        input_data={"prompt": "Write a very long story about the sea."},
        parameters={"max_new_tokens": 400, "do_sample": False},
    )
    for event in client.watch_task(task.task_id, after_sequence=task.sequence):
        if event.type == "OUTPUT":
            break
    started = time.monotonic()
    client.cancel_task(task.task_id)
    final = client.wait_for_task(task.task_id, timeout=30)
    assert final.status == "CANCELLED"
    assert time.monotonic() - started < 5
    # The model serves the next request at once.
    quick = client.create_task(
        task_type="text_generation",
        model_name=SMOLLM,
        input_data={"prompt": "Hi"},
        parameters={"max_new_tokens": 3},
    )
    assert client.wait_for_task(quick.task_id, timeout=60).status == "COMPLETED"


def test_a_model_added_to_the_repository_is_served_without_restart(
    models_dir: Path, tiny: TinyModels, models: pb_grpc.ModelServiceStub, client: Client
) -> None:
    shutil.copytree(tiny.models_dir / "tiny-bert-embed", models_dir / "hot-added")
    model = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            model = models.GetModel(pb.GetModelRequest(name="hot-added"), timeout=5)
            if model.state == pb.Model.READY:
                break
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    assert model is not None and model.state == pb.Model.READY
    task = client.create_task(
        task_type="feature_extraction", model_name="hot-added", input_data={"inputs": "hi"}
    )
    assert client.wait_for_task(task.task_id, timeout=60).status == "COMPLETED"
    shutil.rmtree(models_dir / "hot-added")


# -- the SDK's models namespace ----------------------------------------------------------------


def test_sdk_lists_models_with_the_provider_really_used(client: Client) -> None:
    models = {m.name: m for m in client.models.list()}
    assert models[MINILM].state == "READY"
    assert models[MINILM].execution_provider == models[MINILM].providers_active[0]
    assert "feature_extraction" in models[MINILM].task_types
    assert models["broken-model"].state == "LOAD_FAILED" and models["broken-model"].error
    generators = client.models.list(task_type="text-generation")
    assert SMOLLM in {m.name for m in generators}
    assert MINILM not in {m.name for m in generators}
    assert client.models.get(PII).task == "token_classification"
    with pytest.raises(NotFoundError) as missing:
        client.models.get("no-such-model")
    assert missing.value.reason == "MODEL_NOT_FOUND"


def test_sdk_infer_returns_embeddings_and_task_results(client: Client) -> None:
    one = client.models.infer(MINILM, "A cat sits on the mat.")
    assert one.embedding is not None and len(one.embedding) == 384
    assert one.resource_usage is not None and one.resource_usage.model_name == MINILM
    many = client.models.infer(MINILM, ["first sentence", "second sentence"])
    assert many.embeddings is not None and [len(v) for v in many.embeddings] == [384, 384]
    similar = client.models.infer(
        MINILM,
        input_data={
            "source_sentence": "The weather is lovely today.",
            "sentences": ["It is a beautiful sunny day.", "The stock market crashed."],
        },
        task_type="sentence_similarity",
    )
    paraphrase, unrelated = similar.result["scores"]
    assert paraphrase > unrelated
    with pytest.raises(InvalidArgumentError) as bad:
        client.models.infer(MINILM, input_data={"wrong": 1})
    assert bad.value.field_violations


async def test_async_sdk_generate_streams_deltas_that_add_up(server: ServerProcess) -> None:
    async with server.async_client(timeout=120) as api:
        events = [
            e
            async for e in api.models.generate(
                SMOLLM, "What is the capital of France?", parameters={"max_new_tokens": 12}
            )
        ]
        assert events[-1].done and events[-1].result is not None
        text = "".join(e.delta for e in events)
        assert text == events[-1].result["generated_text"]
        assert "Paris" in text
        listed = await api.models.list()
        assert SMOLLM in {m.name for m in listed}


def test_cli_models_list_shows_what_the_server_runs(
    server: ServerProcess, models_dir: Path
) -> None:
    def taskorch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "taskorch", "models", "list", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TASKORCH_SERVER": server.grpc_addr, "COLUMNS": "200"},
            check=False,
        )

    served = taskorch("--json")
    assert served.returncode == 0, served.stderr
    rows = {row["name"]: row for row in json.loads(served.stdout)}
    assert rows[MINILM]["state"] == "READY"
    assert rows[MINILM]["execution_provider"] == "CPUExecutionProvider"  # no GPU here
    assert rows["broken-model"]["state"] == "LOAD_FAILED"
    table = taskorch()
    assert table.returncode == 0 and MINILM in table.stdout and "CPU" in table.stdout
    down = taskorch("--server", "127.0.0.1:1")
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
