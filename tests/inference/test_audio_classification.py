"""audio_classification with an optimum-exported tiny random Wav2Vec2ForSequenceClassification:
`models import` exports and validates it, a real server runs tasks over gRPC and REST (Envoy),
and the scores agree with PyTorch's softmax on the same waveform (1e-4 absolute)."""

from __future__ import annotations

import base64
import io
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from taskorch.inference.config import load_model_config
from taskorch.inference.defaults import cache_dir
from taskorch.inference.export import import_model, offline_environment
from taskorch.inference.locking import file_lock
from taskorch.inference.task_types import ModelFamily
from tests import databases
from tests.gateway._http import wait_for_status
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("audio-classification-server")

VERSION = 1
NAME = "tiny-wav2vec2-cls"
LABELS = {0: "dog", 1: "rain", 2: "speech", 3: "siren"}
RATE = 16_000
TOLERANCE = 1e-4


def _build(torch_dir: Path) -> None:
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
    )

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=8,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    model = Wav2Vec2ForSequenceClassification(config).eval()
    with torch.no_grad():  # spread the random head's scores so the ranking means something
        model.classifier.weight.mul_(20.0)
    model.save_pretrained(torch_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True
    ).save_pretrained(torch_dir)


@pytest.fixture(scope="module")
def tiny_wav2vec2() -> tuple[Path, Path]:
    """(the PyTorch folder, a repository holding its ONNX import), built once and cached."""
    offline_environment()
    base = cache_dir() / f"tiny-wav2vec2-cls-v{VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        if not (base / "models" / NAME / "model.yaml").exists():
            shutil.rmtree(base / "torch", ignore_errors=True)
            _build(base / "torch" / NAME)
            import_model(
                base / "torch" / NAME,
                "audio_classification",
                models_dir=base / "models",
                log=lambda _: None,
            )
    return base / "torch" / NAME, base / "models"


@pytest.fixture(scope="module")
def audio_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_wav2vec2: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("audio-classification")
    url = databases.new_database(workdir)
    server = ServerProcess(
        workdir=workdir, database_url=url, gateway=True, models_dir=tiny_wav2vec2[1]
    )
    server.start()
    yield server
    server.stop()
    databases.discard(url)


def _wav() -> tuple[bytes, np.ndarray]:
    """A stereo 16-bit WAV (two different channels) and the mono waveform it decodes to."""
    rng = np.random.default_rng(3)
    t = np.arange(RATE) / RATE
    left = 0.4 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 0.05, t.size)
    right = 0.3 * np.sin(2 * np.pi * 97 * t)
    pcm = (np.stack([left, right], axis=1) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm.tobytes())
    mono = (pcm.astype(np.float32) / 32768.0).mean(axis=1)
    return out.getvalue(), mono


def _pytorch_scores(torch_dir: Path, mono: np.ndarray) -> dict[str, float]:
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    extractor = Wav2Vec2FeatureExtractor.from_pretrained(torch_dir)
    model = Wav2Vec2ForSequenceClassification.from_pretrained(torch_dir).eval()
    inputs = extractor(mono, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(inputs["input_values"]).logits[0].double(), dim=-1)
    return {LABELS[i]: float(p) for i, p in enumerate(probs)}


def test_import_records_the_family_and_labels(tiny_wav2vec2: tuple[Path, Path]) -> None:
    config = load_model_config(tiny_wav2vec2[1] / NAME)
    assert config.family is ModelFamily.AUDIO_CLASSIFICATION
    assert config.labels == tuple(LABELS.values())
    assert config.extra["validation"]["max_abs_diff"] <= config.extra["validation"]["tolerance"]


def test_audio_classification_over_grpc_and_rest_agrees_with_pytorch(
    audio_server: ServerProcess, tiny_wav2vec2: tuple[Path, Path]
) -> None:
    data, mono = _wav()
    expected = _pytorch_scores(tiny_wav2vec2[0], mono)
    with audio_server.client() as client:
        task = client.create_task(
            task_type="audio_classification",
            model_name=NAME,
            input_data={"audio": base64.b64encode(data).decode()},
        )
        done = client.wait_for_task(task.task_id, timeout=120)
        assert done.status == "COMPLETED", done.error
        assert done.result is not None
        result = done.result
    with httpx.Client(base_url=audio_server.http_url, timeout=60) as rest:
        created = rest.post(
            "/tasks",
            json={
                "task_type": "audio-classification",
                "input_data": {"audio": "data:audio/wav;base64," + base64.b64encode(data).decode()},
                "parameters": {"top_k": 2},
            },
        )
        assert created.status_code == 201, created.text
        over_rest = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
    assert len(result["labels"]) == len(LABELS)  # top_k 5 > 4 labels: all of them
    scores = [item["score"] for item in result["labels"]]
    assert scores == sorted(scores, reverse=True)
    assert (result["label"], result["score"]) == (
        result["labels"][0]["label"],
        result["labels"][0]["score"],
    )
    worst = max(abs(item["score"] - expected[item["label"]]) for item in result["labels"])
    print(f"audio_classification: largest score difference vs PyTorch softmax {worst:.2g}")
    assert worst < TOLERANCE
    assert result["label"] == max(expected, key=lambda k: expected[k])
    assert over_rest["result"]["labels"] == result["labels"][:2]
    assert over_rest["result"]["label"] == result["label"]


def test_bad_audio_is_refused_naming_the_field(audio_server: ServerProcess) -> None:
    with httpx.Client(base_url=audio_server.http_url, timeout=60) as rest:
        refused = rest.post(
            "/tasks",
            json={"task_type": "audio_classification", "input_data": {"audio": "not base64!"}},
        )
        assert refused.status_code == 400
        assert "input_data.audio" in refused.text
        data, _ = _wav()
        refused = rest.post(
            "/tasks",
            json={
                "task_type": "audio_classification",
                "input_data": {"audio": base64.b64encode(data).decode()},
                "parameters": {"top_k": 0},
            },
        )
        assert refused.status_code == 400
        assert "parameters.top_k" in refused.text


async def test_silero_stays_the_default_beside_an_export(
    tmp_path: Path, tiny_wav2vec2: tuple[Path, Path], media_models_dir: Path
) -> None:
    """With both in the repository, a request naming no model gets silero-vad's voice
    activity; naming the export gets its labels."""
    from taskorch.inference import InferenceEngine

    shutil.copytree(media_models_dir / "silero-vad", tmp_path / "silero-vad")
    silero_yaml = tmp_path / "silero-vad" / "model.yaml"
    silero = yaml.safe_load(silero_yaml.read_text(encoding="utf-8"))
    silero.pop("default_for", None)  # neither is named the default: the family decides
    silero_yaml.write_text(yaml.safe_dump(silero), encoding="utf-8")
    export = f"a-{NAME}"  # sorts before silero-vad: the family, not the name, decides
    shutil.copytree(tiny_wav2vec2[1] / NAME, tmp_path / export)
    engine = InferenceEngine(tmp_path, poll_seconds=0)
    await engine.start()
    try:
        data, _ = _wav()
        audio = {"audio": base64.b64encode(data).decode()}
        default = (await engine.run(engine.check("audio_classification", "", audio, {}))).result
        assert "speech_ratio" in default and default["label"] in {"speech", "non_speech"}
        named = (await engine.run(engine.check("vad", export, audio, {"top_k": 1}))).result
        assert "speech_ratio" not in named and named["label"] in LABELS.values()
        assert len(named["labels"]) == 1
    finally:
        await engine.close()


@pytest.mark.parametrize("architecture", ["Hubert", "WavLM"])
async def test_hubert_and_wavlm_import_and_agree_with_pytorch(
    tmp_path: Path, architecture: str
) -> None:
    """The other wav2vec2-family classifiers take the same raw waveform (tiny, random, built
    here: a few seconds)."""
    import torch
    import transformers

    from taskorch.inference import InferenceEngine

    offline_environment()
    config_class = getattr(transformers, f"{architecture}Config")
    model_class = getattr(transformers, f"{architecture}ForSequenceClassification")
    torch.manual_seed(0)
    config = config_class(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=8,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    source = tmp_path / "src" / architecture.lower()
    model_class(config).eval().save_pretrained(source)
    extractor = transformers.Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=True)
    extractor.save_pretrained(source)
    report = import_model(
        source, "audio_classification", models_dir=tmp_path / "models", log=lambda _: None
    )
    assert report.export_task == "audio-classification"
    data, mono = _wav()
    model = model_class.from_pretrained(source).eval()
    with torch.no_grad():
        values = extractor(mono, sampling_rate=RATE, return_tensors="pt")["input_values"]
        probs = torch.softmax(model(values).logits[0].double(), dim=-1)
    engine = InferenceEngine(tmp_path / "models", poll_seconds=0)
    await engine.start()
    try:
        audio = {"audio": base64.b64encode(data).decode()}
        result = (await engine.run(engine.check("audio_classification", "", audio, {}))).result
    finally:
        await engine.close()
    label_ids = {v: k for k, v in LABELS.items()}
    worst = max(abs(i["score"] - float(probs[label_ids[i["label"]]])) for i in result["labels"])
    assert worst < TOLERANCE
