"""text_to_speech with a Hugging Face SpeechT5 model and its HiFi-GAN vocoder: `models import`
exports a tiny random SpeechT5ForTextToSpeech (vocoder in its ``vocoder/`` folder) with optimum
(text-to-audio) and validates it, a real server speaks over gRPC and REST (Envoy) with our own
decoding loop, and the WAV agrees with ``generate_speech``'s waveform.

Determinism: the decoder prenet's dropout runs at inference; the tiny model's config sets it to
0 (optimum's graph then keeps every unit) and the PyTorch reference gets the identity for its
``_consistent_dropout`` (whose Bernoulli mask at p = 0 would zero the prenet instead). The
random stop head is biased to never reach the threshold, so every utterance runs to its length
bound (``maxlenratio`` or ``max_speech_seconds``): lengths are known in advance."""

from __future__ import annotations

import io
import json
import shutil
import string
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from taskorch.client import InvalidArgumentError
from taskorch.inference.defaults import cache_dir
from taskorch.inference.export import import_model, offline_environment, quiet_export
from taskorch.inference.locking import file_lock
from tests import databases
from tests.gateway._http import wait_for_status
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("speecht5-server")

VERSION = 1
NAME = "tiny-speecht5"
RATE = 16000
MEL_BINS = 8
UPSAMPLE = (4, 4)  # the vocoder's: 16 samples a mel frame
REDUCTION = 2  # mel frames a decoder step
TEXT = "Hello, World! It's a tiny voice test."
MAXLENRATIO = 1.0


def _build(torch_dir: Path) -> None:
    import sentencepiece as spm
    import torch
    from transformers import (
        SpeechT5Config,
        SpeechT5ForTextToSpeech,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        SpeechT5Tokenizer,
    )

    torch_dir.mkdir(parents=True)
    corpus = torch_dir.parent / "corpus.txt"
    lines = [string.ascii_lowercase, string.ascii_uppercase, "0123456789 .,!?'-", TEXT]
    corpus.write_text("\n".join(lines * 4), encoding="utf-8")
    spm.SentencePieceTrainer.train(  # a character model, as microsoft/speecht5_tts's spm_char
        input=str(corpus),
        model_prefix=str(torch_dir / "spm_char"),
        model_type="char",
        vocab_size=72,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        character_coverage=1.0,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    (torch_dir / "spm_char.vocab").unlink()
    tokenizer = SpeechT5Tokenizer(str(torch_dir / "spm_char.model"))
    tokenizer.save_pretrained(torch_dir)
    torch.manual_seed(0)
    config = SpeechT5Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=16,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=16,
        num_mel_bins=MEL_BINS,
        speech_decoder_prenet_units=16,
        speech_decoder_postnet_units=16,
        speech_decoder_postnet_layers=2,
        speech_decoder_postnet_kernel=5,
        speaker_embedding_dim=512,
        reduction_factor=REDUCTION,
        speech_decoder_prenet_dropout=0.0,
        max_speech_positions=600,
        max_text_positions=120,
        initializer_range=0.2,
    )
    model = SpeechT5ForTextToSpeech(config).eval()
    with torch.no_grad():  # never stops by itself: the length bounds end every utterance
        model.speech_decoder_postnet.prob_out.bias.fill_(-6.0)
    model.save_pretrained(torch_dir)
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=MEL_BINS,
            upsample_initial_channel=16,
            upsample_rates=list(UPSAMPLE),
            upsample_kernel_sizes=[8, 8],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            sampling_rate=RATE,
            initializer_range=0.05,
        )
    ).eval()
    vocoder.save_pretrained(torch_dir / "vocoder")


@pytest.fixture(scope="module")
def tiny_speecht5() -> tuple[Path, Path]:
    """(the PyTorch folder, a repository holding its ONNX import), built once and cached."""
    offline_environment()
    base = cache_dir() / f"tiny-speecht5-v{VERSION}"
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


def _pytorch(
    torch_dir: Path,
    text: str,
    speaker: np.ndarray,
    maxlenratio: float,
    *,
    threshold: float = 0.5,
    minlenratio: float = 0.0,
) -> tuple[list[int], np.ndarray]:
    import torch

    with quiet_export():
        from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5Tokenizer

    tokenizer = SpeechT5Tokenizer.from_pretrained(torch_dir)
    model = SpeechT5ForTextToSpeech.from_pretrained(torch_dir).eval()
    model.speecht5.decoder.prenet._consistent_dropout = lambda x, p: x  # dropout off (see top)
    vocoder = SpeechT5HifiGan.from_pretrained(torch_dir / "vocoder").eval()
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        waveform = model.generate_speech(
            ids,
            torch.from_numpy(speaker.astype(np.float32))[None],
            threshold=threshold,
            minlenratio=minlenratio,
            maxlenratio=maxlenratio,
            vocoder=vocoder,
        ).numpy()
    return ids[0].tolist(), waveform


def _samples(wav_bytes: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        return wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


def _steps_of_16_bit(samples: np.ndarray, reference: np.ndarray) -> int:
    expected = (np.clip(reference, -1.0, 1.0) * 32767.0).astype(np.int64)
    assert np.abs(expected).max() > 100  # a waveform, not silence
    return int(np.abs(samples.astype(np.int64) - expected).max())


def test_import_writes_three_graphs_the_vocoder_config_and_a_default_speaker(
    tiny_speecht5: tuple[Path, Path],
) -> None:
    folder = tiny_speecht5[1] / NAME
    config = yaml.safe_load((folder / "model.yaml").read_text(encoding="utf-8"))
    assert config["family"] == "speecht5-tts"
    assert config["task"] == "text_to_speech"
    assert config["onnx"]["file"] == "encoder_model.onnx"
    assert config["files"]["decoder"] == "decoder_model_merged.onnx"
    assert config["files"]["postnet_vocoder"] == "decoder_postnet_and_vocoder.onnx"
    assert config["validation"]["max_abs_diff"] <= config["validation"]["tolerance"]
    for file in config["files"].values():
        assert (folder / file).exists(), file
    assert not (folder / "decoder_model.onnx").exists()  # merged, not kept twice
    speaker = np.load(folder / "speaker_embedding.npy")
    assert speaker.shape == (512,) and not speaker.any()  # no speaker in the source: zeros


@pytest.fixture(scope="module")
def speecht5_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_speecht5: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("speecht5")
    url = databases.new_database(workdir)
    server = ServerProcess(
        workdir=workdir, database_url=url, gateway=True, models_dir=tiny_speecht5[1]
    )
    server.start()
    yield server
    server.stop()
    databases.discard(url)


def test_speech_over_grpc_and_rest_agrees_with_pytorch(
    speecht5_server: ServerProcess, tiny_speecht5: tuple[Path, Path]
) -> None:
    speaker = np.random.default_rng(7).standard_normal(512).astype(np.float32)
    ids, reference = _pytorch(tiny_speecht5[0], TEXT, speaker, MAXLENRATIO)
    _, default_reference = _pytorch(tiny_speecht5[0], TEXT, np.zeros(512, np.float32), MAXLENRATIO)
    parameters: dict[str, Any] = {
        "speaker_embedding": [float(v) for v in speaker],
        "maxlenratio": MAXLENRATIO,
    }
    with speecht5_server.client() as client:
        task = client.create_task(
            task_type="text_to_speech",
            model_name=NAME,
            input_data={"text": TEXT},
            parameters=parameters,
        )
        done = client.wait_for_task(task.task_id, timeout=120)
        assert done.status == "COMPLETED", done.error
        assert done.result is not None
        sdk_wav = client.get_task_artifact(task.task_id, "speech.wav").data
    with httpx.Client(base_url=speecht5_server.http_url, timeout=60) as rest:
        body = rest.get(f"/v1/tasks/{task.task_id}/artifacts/speech.wav")
        assert body.status_code == 200
        assert body.headers["content-type"] == "audio/wav"
        created = rest.post(  # the default speaker, over REST
            "/tasks",
            json={
                "task_type": "tts",
                "model_name": NAME,
                "input_data": {"text": TEXT},
                "parameters": {"maxlenratio": MAXLENRATIO},
            },
        )
        assert created.status_code == 201, created.text
        rest_id = created.json()["task_id"]
        over_rest = wait_for_status(rest, rest_id, {"COMPLETED"}, timeout=120)
        rest_wav = rest.get(f"/v1/tasks/{rest_id}/artifacts/speech.wav").content
    assert body.content == sdk_wav  # byte-identical over REST and the SDK
    result = done.result
    steps = int(len(ids) * MAXLENRATIO / REDUCTION)  # transformers' maxlen: never stops earlier
    assert result["input_ids"] == len(ids)
    assert result["decoder_steps"] == steps
    assert result["stopped_by"] == "length"
    assert result["speaker_embedding"] == "request"
    assert result["sample_rate"] == RATE
    assert result["artifacts"][0]["name"] == "speech.wav"
    rate, samples = _samples(sdk_wav)
    assert rate == RATE
    assert samples.size == reference.size == steps * REDUCTION * int(np.prod(UPSAMPLE))
    assert result["duration_seconds"] == round(reference.size / RATE, 3)
    worst = _steps_of_16_bit(samples, reference)
    rest_rate, rest_samples = _samples(rest_wav)
    assert over_rest["result"]["speaker_embedding"] == "default"
    assert rest_rate == RATE and rest_samples.size == default_reference.size
    worst_default = _steps_of_16_bit(rest_samples, default_reference)
    print(
        f"text_to_speech (SpeechT5): {samples.size} samples as PyTorch's, largest difference "
        f"{worst} (16-bit steps; {worst_default} with the default speaker)"
    )
    assert worst <= 2 and worst_default <= 2
    assert not np.array_equal(samples, rest_samples)  # the speaker changes the voice


def test_max_speech_seconds_bounds_the_utterance(speecht5_server: ServerProcess) -> None:
    samples_per_step = REDUCTION * int(np.prod(UPSAMPLE))
    with speecht5_server.client() as client:
        task = client.create_task(
            task_type="text_to_speech",
            model_name=NAME,
            input_data={"text": TEXT},
            parameters={"max_speech_seconds": 0.02},  # maxlenratio 20 would allow 190 steps
        )
        done = client.wait_for_task(task.task_id, timeout=120)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    steps = int(0.02 * RATE / samples_per_step)
    assert done.result["decoder_steps"] == steps
    assert done.result["duration_seconds"] == round(steps * samples_per_step / RATE, 3)


def test_the_stop_threshold_ends_the_utterance_after_minlen_as_in_pytorch(
    speecht5_server: ServerProcess, tiny_speecht5: tuple[Path, Path]
) -> None:
    """threshold 0: every step's probabilities reach it, so speech stops at the first step
    past minlen (transformers' rule), not at a length bound."""
    speaker = np.zeros(512, np.float32)
    for minlenratio in (0.0, 1.0):
        ids, reference = _pytorch(
            tiny_speecht5[0], TEXT, speaker, 20.0, threshold=0.0, minlenratio=minlenratio
        )
        with speecht5_server.client() as client:
            task = client.create_task(
                task_type="text_to_speech",
                model_name=NAME,
                input_data={"text": TEXT},
                parameters={"threshold": 0.0, "minlenratio": minlenratio},
            )
            done = client.wait_for_task(task.task_id, timeout=120)
            assert done.status == "COMPLETED", done.error
            assert done.result is not None
            wav = client.get_task_artifact(task.task_id, "speech.wav").data
        assert done.result["stopped_by"] == "threshold"
        assert done.result["decoder_steps"] == max(1, int(len(ids) * minlenratio / REDUCTION))
        _, samples = _samples(wav)
        assert samples.size == reference.size
        assert _steps_of_16_bit(samples, reference) <= 2


def test_a_model_with_prenet_dropout_is_checked_on_a_copy_without_it(
    tmp_path: Path, tiny_speecht5: tuple[Path, Path]
) -> None:
    """microsoft/speecht5_tts keeps dropout 0.5 in its prenet at inference: the import checks a
    dropout-free export of the same weights and installs the graph with the dropout."""
    source = tmp_path / "dropout"
    shutil.copytree(tiny_speecht5[0], source)
    config_file = source / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["speech_decoder_prenet_dropout"] = 0.5
    config_file.write_text(json.dumps(config), encoding="utf-8")
    speaker = np.random.default_rng(3).standard_normal(512).astype(np.float32)
    np.save(source / "speaker_embedding.npy", speaker)
    lines: list[str] = []
    report = import_model(
        source, "text_to_speech", models_dir=tmp_path / "models", log=lines.append
    )
    assert report.max_abs_diff <= report.tolerance
    assert any("prenet dropout at 0" in line for line in lines)
    installed = tmp_path / "models" / "dropout"
    served = json.loads((installed / "config.json").read_text(encoding="utf-8"))
    assert served["speech_decoder_prenet_dropout"] == 0.5
    assert not (installed / "_speecht5_check").exists()
    assert np.array_equal(np.load(installed / "speaker_embedding.npy"), speaker)


def test_bad_speaker_embedding_is_refused_naming_the_field(
    speecht5_server: ServerProcess,
) -> None:
    field = "parameters.speaker_embedding"
    with speecht5_server.client() as client:
        for bad in ([0.1] * 511, ["a"] * 512, "0.1, 0.2", [True] * 512, [0.1] * 513):
            with pytest.raises(InvalidArgumentError) as caught:
                client.create_task(
                    task_type="text_to_speech",
                    model_name=NAME,
                    input_data={"text": TEXT},
                    parameters={"speaker_embedding": bad},
                )
            assert caught.value.field_violations[0].field == field, bad
        with pytest.raises(InvalidArgumentError) as too_long:
            client.create_task(
                task_type="text_to_speech", model_name=NAME, input_data={"text": "a" * 200}
            )
        assert too_long.value.field_violations[0].field == "input_data.text"
    with httpx.Client(base_url=speecht5_server.http_url, timeout=60) as rest:
        for bad in ([0.5] * 3, [None] * 512):
            refused = rest.post(
                "/tasks",
                json={
                    "task_type": "text_to_speech",
                    "model_name": NAME,
                    "input_data": {"text": TEXT},
                    "parameters": {"speaker_embedding": bad},
                },
            )
            assert refused.status_code == 400, refused.text
            assert field in refused.text


def test_speecht5_serves_text_to_speech_beside_piper(tmp_path: Path) -> None:
    from taskorch.inference.task_types import (
        ModelFamily,
        TaskType,
        families_of,
        family_of_source,
        task_types_of,
    )

    tts = TaskType.TEXT_TO_SPEECH
    assert families_of(tts)[0] is ModelFamily.PIPER_TTS  # Piper stays the default family
    assert ModelFamily.SPEECHT5_TTS in families_of(tts)
    assert task_types_of(ModelFamily.SPEECHT5_TTS) == [tts]
    (tmp_path / "config.json").write_text('{"model_type": "speecht5"}', encoding="utf-8")
    assert family_of_source(tts, tmp_path) is ModelFamily.SPEECHT5_TTS


def test_a_folder_without_its_vocoder_or_of_another_speecht5_head_is_refused(
    tmp_path: Path, tiny_speecht5: tuple[Path, Path]
) -> None:
    from taskorch.domain.errors import InvalidArgument

    source = tmp_path / "no-vocoder"
    shutil.copytree(tiny_speecht5[0], source, ignore=shutil.ignore_patterns("vocoder"))
    with pytest.raises(InvalidArgument, match="vocoder/"):
        import_model(source, "tts", models_dir=tmp_path / "models", log=lambda _: None)
    assert not (tmp_path / "models" / "no-vocoder").exists()
    asr = tmp_path / "asr"  # speecht5_asr and speecht5_vc have model_type speecht5 too
    shutil.copytree(tiny_speecht5[0], asr)
    config = json.loads((asr / "config.json").read_text(encoding="utf-8"))
    config["architectures"] = ["SpeechT5ForSpeechToText"]
    (asr / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(InvalidArgument, match="SpeechT5ForTextToSpeech"):
        import_model(asr, "tts", models_dir=tmp_path / "models", log=lambda _: None)


async def test_piper_stays_the_default_beside_a_speecht5_export(
    tmp_path: Path, tiny_speecht5: tuple[Path, Path], media_models_dir: Path
) -> None:
    """With both in the repository and neither named default_for, a request naming no model
    gets the Piper voice (phonemes); naming the export gets SpeechT5's loop."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("the espeak-ng program is not installed (make install installs it)")
    from taskorch.inference import InferenceEngine

    shutil.copytree(media_models_dir / "piper-joe-medium", tmp_path / "piper-joe-medium")
    piper_yaml = tmp_path / "piper-joe-medium" / "model.yaml"
    piper = yaml.safe_load(piper_yaml.read_text(encoding="utf-8"))
    piper.pop("default_for", None)  # neither is named the default: the family decides
    piper_yaml.write_text(yaml.safe_dump(piper), encoding="utf-8")
    export = f"a-{NAME}"  # sorts before piper-joe-medium: the family, not the name, decides
    shutil.copytree(tiny_speecht5[1] / NAME, tmp_path / export)
    engine = InferenceEngine(tmp_path, poll_seconds=0)
    await engine.start()
    try:
        text = {"text": "Hi."}
        default = (await engine.run(engine.check("text_to_speech", "", text, {}))).result
        assert "phonemes" in default and "decoder_steps" not in default
        named = (
            await engine.run(engine.check("tts", export, text, {"max_speech_seconds": 0.01}))
        ).result
        assert "decoder_steps" in named and "phonemes" not in named
    finally:
        await engine.close()
