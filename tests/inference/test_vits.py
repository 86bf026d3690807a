"""text_to_speech with a Hugging Face VITS model (MMS-TTS's VitsModel): `models import` exports a
tiny random VitsModel with optimum (text-to-audio) and validates it, a real server speaks over
gRPC and REST (Envoy), our ids are VitsTokenizer's, and the WAV agrees with PyTorch.

Determinism: the exported graph draws its noise inside and takes no noise or seed input; the
tiny model's config sets ``noise_scale`` and ``noise_scale_duration`` to 0, so graph and
PyTorch are deterministic and the WAV is compared sample by sample (within one 16-bit step)."""

from __future__ import annotations

import io
import json
import shutil
import string
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from taskorch.inference.defaults import cache_dir
from taskorch.inference.export import import_model, offline_environment, quiet_export
from taskorch.inference.locking import file_lock
from taskorch.inference.pipelines.vits import VitsTokens
from tests import databases
from tests.gateway._http import wait_for_status
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("vits-server")

VERSION = 1
NAME = "tiny-vits"
RATE = 16000
VOCAB = ["_", "<unk>", " ", "'", "-", *string.ascii_lowercase]
TEXT = "Hello, World! It's a tiny-voice TEST."


def _build(torch_dir: Path) -> None:
    import torch

    with quiet_export():  # modeling_vits's torch.jit.script warns of its deprecation
        from transformers import VitsConfig, VitsModel, VitsTokenizer

    torch.manual_seed(0)
    config = VitsConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        window_size=2,
        ffn_dim=16,
        flow_size=8,
        spectrogram_bins=9,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        duration_predictor_filter_channels=16,
        duration_predictor_num_flows=1,
        depth_separable_num_layers=1,
        noise_scale=0.0,
        noise_scale_duration=0.0,
        sampling_rate=RATE,
    )
    model = VitsModel(config).eval()
    model.save_pretrained(torch_dir)
    vocab = torch_dir / "vocab.json"
    vocab.write_text(json.dumps({c: i for i, c in enumerate(VOCAB)}), encoding="utf-8")
    VitsTokenizer(
        str(vocab), pad_token="_", add_blank=True, normalize=True, phonemize=False
    ).save_pretrained(torch_dir)


@pytest.fixture(scope="module")
def tiny_vits() -> tuple[Path, Path]:
    """(the PyTorch folder, a repository holding its ONNX import), built once and cached."""
    offline_environment()
    base = cache_dir() / f"tiny-vits-v{VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        if not (base / "models" / NAME / "model.yaml").exists():
            shutil.rmtree(base / "torch", ignore_errors=True)
            _build(base / "torch" / NAME)
            import_model(
                base / "torch" / NAME,
                "text_to_speech",
                models_dir=base / "models",
                log=lambda _: None,
            )
    return base / "torch" / NAME, base / "models"


def _pytorch(torch_dir: Path, text: str) -> tuple[list[int], np.ndarray]:
    import torch

    with quiet_export():
        from transformers import VitsModel, VitsTokenizer

    tokenizer = VitsTokenizer.from_pretrained(torch_dir)
    model = VitsModel.from_pretrained(torch_dir).eval()
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        waveform = model(**enc).waveform[0].numpy()
    return enc["input_ids"][0].tolist(), waveform


def _samples(wav_bytes: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        return wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


def test_ids_are_vits_tokenizers(tiny_vits: tuple[Path, Path]) -> None:
    with quiet_export():
        from transformers import VitsTokenizer

    torch_dir = tiny_vits[0]
    reference = VitsTokenizer.from_pretrained(torch_dir)
    ours = VitsTokens(
        json.loads((tiny_vits[1] / NAME / "vocab.json").read_text(encoding="utf-8")),
        json.loads((tiny_vits[1] / NAME / "tokenizer_config.json").read_text(encoding="utf-8")),
    )
    for text in (TEXT, "  UPPER lower  ", "émoji 🙂 and digits 42", "-", "x"):
        assert ours.ids(text) == reference(text)["input_ids"], text


@pytest.fixture(scope="module")
def vits_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_vits: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("vits")
    url = databases.new_database(workdir)
    server = ServerProcess(workdir=workdir, database_url=url, gateway=True, models_dir=tiny_vits[1])
    server.start()
    yield server
    server.stop()
    databases.discard(url)


def test_speech_over_grpc_and_rest_agrees_with_pytorch(
    vits_server: ServerProcess, tiny_vits: tuple[Path, Path]
) -> None:
    ids, reference = _pytorch(tiny_vits[0], TEXT)
    assert reference.size > 0
    with vits_server.client() as client:
        task = client.create_task(
            task_type="text_to_speech", model_name=NAME, input_data={"text": TEXT}
        )
        done = client.wait_for_task(task.task_id, timeout=120)
        assert done.status == "COMPLETED", done.error
        assert done.result is not None
        sdk_wav = client.get_task_artifact(task.task_id, "speech.wav").data
    with httpx.Client(base_url=vits_server.http_url, timeout=60) as rest:
        created = rest.post(
            "/tasks",
            json={"task_type": "tts", "model_name": NAME, "input_data": {"text": TEXT}},
        )
        assert created.status_code == 201, created.text
        over_rest = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
        body = rest.get(f"/v1/tasks/{task.task_id}/artifacts/speech.wav")
        assert body.status_code == 200
        assert body.headers["content-type"] == "audio/wav"
        refused = rest.post(
            "/tasks",
            json={"task_type": "text_to_speech", "model_name": NAME, "input_data": {"text": "!?"}},
        )
    assert body.content == sdk_wav  # byte-identical over REST and the SDK
    result = done.result
    assert over_rest["result"]["duration_seconds"] == result["duration_seconds"]
    assert result["sample_rate"] == RATE
    assert result["input_ids"] == len(ids)
    assert result["artifacts"][0]["name"] == "speech.wav"
    rate, samples = _samples(sdk_wav)
    assert rate == RATE
    assert samples.size == reference.size
    assert result["duration_seconds"] == round(reference.size / RATE, 3)
    expected = (np.clip(reference, -1.0, 1.0) * 32767.0).astype(np.int64)
    worst = int(np.abs(samples.astype(np.int64) - expected).max())
    print(
        f"text_to_speech (VITS): {samples.size} samples as PyTorch's, largest difference "
        f"{worst} (16-bit steps), peak {int(np.abs(expected).max())}"
    )
    assert worst <= 1
    assert np.abs(expected).max() > 0
    # Refused at create when nothing in the text is in the vocabulary, naming the field.
    assert refused.status_code == 400
    assert "input_data.text" in refused.text


def test_vits_serves_text_to_speech_beside_piper(tmp_path: Path) -> None:
    from taskorch.inference.task_types import (
        ModelFamily,
        TaskType,
        families_of,
        family_of_source,
        task_types_of,
    )

    tts = TaskType.TEXT_TO_SPEECH
    assert families_of(tts)[:2] == (ModelFamily.PIPER_TTS, ModelFamily.VITS_TTS)  # Piper first
    assert task_types_of(ModelFamily.VITS_TTS) == [tts]
    assert family_of_source(tts, tmp_path) is ModelFamily.PIPER_TTS  # a Piper voice folder
    (tmp_path / "config.json").write_text('{"model_type": "vits"}', encoding="utf-8")
    assert family_of_source(tts, tmp_path) is ModelFamily.VITS_TTS
