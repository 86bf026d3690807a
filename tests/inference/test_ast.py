"""audio_classification with an Audio Spectrogram Transformer (``ASTForAudioClassification``):
our numpy features equal ``ASTFeatureExtractor``'s numpy path, `taskorch models import`
exports and validates a tiny random AST, and a real server runs it over gRPC and REST (Envoy)
with scores that agree with PyTorch's softmax on the same WAV (1e-4 absolute)."""

from __future__ import annotations

import base64
import io
import shutil
import warnings
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from taskorch.cli.models import app as models_app
from taskorch.domain.errors import InvalidArgument
from taskorch.inference.config import load_model_config
from taskorch.inference.defaults import cache_dir
from taskorch.inference.export import import_model, offline_environment
from taskorch.inference.locking import file_lock
from taskorch.inference.pipelines.ast_features import ASTFeatures
from taskorch.inference.pipelines.audio_classification import audio_features
from taskorch.inference.task_types import ModelFamily, TaskType, family_of_source
from tests import databases
from tests.gateway._http import wait_for_status
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("ast-server")

VERSION = 1
NAME = "tiny-ast-cls"
LABELS = {0: "dog", 1: "rain", 2: "speech", 3: "siren", 4: "engine"}
RATE = 16_000
MEL_BINS = 32  # small, and the extractor's match the model's
FRAMES = 128  # 1.28 s: the 1 s test WAV is padded, longer audio cut
TOLERANCE = 1e-4


def _numpy_extractor(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Any:
    """An ``ASTFeatureExtractor`` on its numpy path (as without torchaudio)."""
    from transformers import ASTFeatureExtractor
    from transformers.models.audio_spectrogram_transformer import (
        feature_extraction_audio_spectrogram_transformer as module,
    )

    monkeypatch.setattr(module, "is_speech_available", lambda: False)
    with warnings.catch_warnings():  # 128 Kaldi mel filters: one is empty (a UserWarning)
        warnings.simplefilter("ignore", UserWarning)
        return ASTFeatureExtractor(**settings)


def _tone(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.4 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 0.05, t.size)).astype(np.float32)


@pytest.mark.parametrize(
    ("settings", "seconds"),
    [
        ({}, 3.0),  # AudioSet's extractor (128 bins, 1024 frames): padded
        ({}, 11.0),  # longer than 1024 frames: cut
        ({"num_mel_bins": MEL_BINS, "max_length": FRAMES, "mean": 0.5, "std": 3.0}, 1.0),
        ({"num_mel_bins": 64, "max_length": 200, "do_normalize": False}, 0.02),  # < one frame
    ],
)
def test_numpy_features_equal_the_extractors(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], seconds: float
) -> None:
    extractor = _numpy_extractor(monkeypatch, **settings)
    waveform = _tone(seconds)
    expected = extractor(waveform, sampling_rate=RATE, return_tensors="np")["input_values"][0]
    got = ASTFeatures.from_settings(extractor.to_dict()).input_values(waveform)
    shape = (settings.get("max_length", 1024), settings.get("num_mel_bins", 128))
    assert got.shape == expected.shape == shape
    assert got.dtype == np.float32
    assert float(np.abs(got - expected).max()) < 1e-4


def _build(torch_dir: Path) -> None:
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(0)
    config = ASTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=16,
        frequency_stride=10,
        time_stride=10,
        num_mel_bins=MEL_BINS,
        max_length=FRAMES,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    model = ASTForAudioClassification(config).eval()
    with torch.no_grad():  # spread the random head's scores so the ranking means something
        model.classifier.dense.weight.mul_(20.0)
    model.save_pretrained(torch_dir)
    ASTFeatureExtractor(
        sampling_rate=RATE, num_mel_bins=MEL_BINS, max_length=FRAMES, mean=-2.0, std=3.0
    ).save_pretrained(torch_dir)


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(models_app, list(args), env={"COLUMNS": "250"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def tiny_ast() -> tuple[Path, Path]:
    """(the PyTorch folder, a repository holding its ONNX import), built once and cached; the
    import goes through `taskorch models import`."""
    offline_environment()
    base = cache_dir() / f"tiny-ast-cls-v{VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        if not (base / "models" / NAME / "model.yaml").exists():
            shutil.rmtree(base / "torch", ignore_errors=True)
            _build(base / "torch" / NAME)
            code, out, err = _cli(
                "import",
                str(base / "torch" / NAME),
                "--task",
                "audio_classification",
                "--models-dir",
                str(base / "models"),
            )
            assert code == 0, err
            assert "audio features max abs diff" in out and "same top label" in out
    return base / "torch" / NAME, base / "models"


@pytest.fixture(scope="module")
def ast_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_ast: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("ast")
    url = databases.new_database(workdir)
    server = ServerProcess(workdir=workdir, database_url=url, gateway=True, models_dir=tiny_ast[1])
    server.start()
    yield server
    server.stop()
    databases.discard(url)


def _wav(seconds: float = 1.0) -> tuple[bytes, np.ndarray]:
    """A stereo 16-bit WAV (two different channels) and the mono waveform it decodes to."""
    rng = np.random.default_rng(3)
    t = np.arange(int(RATE * seconds)) / RATE
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
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    extractor = ASTFeatureExtractor.from_pretrained(torch_dir)
    model = ASTForAudioClassification.from_pretrained(torch_dir).eval()
    inputs = extractor(mono, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(inputs["input_values"]).logits[0].double(), dim=-1)
    return {LABELS[i]: float(p) for i, p in enumerate(probs)}


def test_family_of_source_detects_an_ast_folder(tiny_ast: tuple[Path, Path]) -> None:
    source = tiny_ast[0]
    assert family_of_source(TaskType.AUDIO_CLASSIFICATION, source) is (
        ModelFamily.AUDIO_CLASSIFICATION
    )
    assert isinstance(audio_features(source), ASTFeatures)
    assert isinstance(audio_features(tiny_ast[1] / NAME), ASTFeatures)  # the import keeps it


def test_import_records_the_family_labels_and_validation(tiny_ast: tuple[Path, Path]) -> None:
    config = load_model_config(tiny_ast[1] / NAME)
    assert config.family is ModelFamily.AUDIO_CLASSIFICATION
    assert config.labels == tuple(LABELS.values())
    validation = config.extra["validation"]
    assert validation["max_abs_diff"] <= validation["tolerance"]
    assert validation["features_max_abs_diff"] < TOLERANCE
    assert validation["probabilities_max_abs_diff"] < TOLERANCE


def test_ast_over_grpc_and_rest_agrees_with_pytorch(
    ast_server: ServerProcess, tiny_ast: tuple[Path, Path]
) -> None:
    data, mono = _wav()
    expected = _pytorch_scores(tiny_ast[0], mono)
    with ast_server.client() as client:
        task = client.create_task(
            task_type="audio_classification",
            model_name=NAME,
            input_data={"audio": base64.b64encode(data).decode()},
        )
        done = client.wait_for_task(task.task_id, timeout=120)
        assert done.status == "COMPLETED", done.error
        assert done.result is not None
        result = done.result
    with httpx.Client(base_url=ast_server.http_url, timeout=60) as rest:
        created = rest.post(
            "/tasks",
            json={
                "task_type": "audio-classification",
                "model_name": NAME,
                "input_data": {"audio": "data:audio/wav;base64," + base64.b64encode(data).decode()},
                "parameters": {"top_k": 3},
            },
        )
        assert created.status_code == 201, created.text
        over_rest = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
    assert len(result["labels"]) == 5  # top_k 5, five labels
    scores = [item["score"] for item in result["labels"]]
    assert scores == sorted(scores, reverse=True)
    assert (result["label"], result["score"]) == (
        result["labels"][0]["label"],
        result["labels"][0]["score"],
    )
    worst = max(abs(item["score"] - expected[item["label"]]) for item in result["labels"])
    print(f"AST audio_classification: largest score difference vs PyTorch softmax {worst:.2g}")
    assert worst < TOLERANCE
    assert result["label"] == max(expected, key=lambda k: expected[k])
    assert over_rest["result"]["labels"] == result["labels"][:3]
    assert over_rest["result"]["label"] == result["label"]


async def test_longer_audio_is_cut_as_the_extractor_cuts_it(tiny_ast: tuple[Path, Path]) -> None:
    """3 s is more than the tiny model's 128 frames: the scores are PyTorch's on the
    extractor's truncated features."""
    from taskorch.inference import InferenceEngine

    data, mono = _wav(3.0)
    expected = _pytorch_scores(tiny_ast[0], mono)
    engine = InferenceEngine(tiny_ast[1], poll_seconds=0)
    await engine.start()
    try:
        audio = {"audio": base64.b64encode(data).decode()}
        result = (await engine.run(engine.check("audio_classification", NAME, audio, {}))).result
    finally:
        await engine.close()
    assert max(abs(i["score"] - expected[i["label"]]) for i in result["labels"]) < TOLERANCE


async def test_silero_stays_the_default_beside_an_ast_export(
    tmp_path: Path, tiny_ast: tuple[Path, Path], media_models_dir: Path
) -> None:
    """Neither named default_for: a request naming no model gets silero-vad's voice activity,
    one naming the AST export its labels."""
    from taskorch.inference import InferenceEngine

    shutil.copytree(media_models_dir / "silero-vad", tmp_path / "silero-vad")
    silero_yaml = tmp_path / "silero-vad" / "model.yaml"
    silero = yaml.safe_load(silero_yaml.read_text(encoding="utf-8"))
    silero.pop("default_for", None)
    silero_yaml.write_text(yaml.safe_dump(silero), encoding="utf-8")
    export = f"a-{NAME}"  # sorts before silero-vad: the family, not the name, decides
    shutil.copytree(tiny_ast[1] / NAME, tmp_path / export)
    engine = InferenceEngine(tmp_path, poll_seconds=0)
    await engine.start()
    try:
        data, _ = _wav()
        audio = {"audio": base64.b64encode(data).decode()}
        default = (await engine.run(engine.check("audio_classification", "", audio, {}))).result
        assert "speech_ratio" in default and default["label"] in {"speech", "non_speech"}
        named = (await engine.run(engine.check("vad", export, audio, {"top_k": 2}))).result
        assert "speech_ratio" not in named and named["label"] in LABELS.values()
        assert len(named["labels"]) == 2
    finally:
        await engine.close()


def test_an_extractor_that_does_not_fit_the_model_is_refused(
    tmp_path: Path, tiny_ast: tuple[Path, Path]
) -> None:
    """Before any export: an AST extractor whose max_length is not the model's, and a feature
    extractor serving cannot reproduce, are refused naming the source."""
    import json

    source = tmp_path / "src"
    shutil.copytree(tiny_ast[0], source)
    settings_file = source / "preprocessor_config.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8"))
    settings_file.write_text(json.dumps({**settings, "max_length": 256}), encoding="utf-8")
    with pytest.raises(InvalidArgument, match=r"max_length is 256, config\.json's 128"):
        import_model(source, "audio_classification", models_dir=tmp_path / "models")
    whisper = {**settings, "feature_extractor_type": "WhisperFeatureExtractor"}
    settings_file.write_text(json.dumps(whisper), encoding="utf-8")
    with pytest.raises(InvalidArgument, match="WhisperFeatureExtractor is not supported"):
        import_model(source, "audio_classification", models_dir=tmp_path / "models")
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []
