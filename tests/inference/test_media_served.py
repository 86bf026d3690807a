"""The media task types with their real default models through a real server, over gRPC (the
SDK) and REST (Envoy): text_to_speech (Piper voice + espeak-ng), image_to_text (PP-OCRv4),
audio_classification (silero-vad); artifacts byte-identical over REST and the SDK."""

from __future__ import annotations

import base64
import io
import os
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from taskorch.client import Client, InvalidArgumentError
from tests import databases
from tests.gateway._http import wait_for_status
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("media-server")

MEDIA_MODELS = ("piper-joe-medium", "pp-ocrv4", "silero-vad")
SENTENCE = "The quick brown fox jumps over the lazy dog."
ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None,
    reason="the espeak-ng program is not installed (make install installs it as root: "
    "apt-get install espeak-ng)",
)


def _link_tree(src: Path, dst: Path) -> None:
    def link(s: str, d: str) -> object:
        os.link(s, d)
        return d

    shutil.copytree(src, dst, copy_function=link)


@pytest.fixture(scope="module")
def media_server(
    tmp_path_factory: pytest.TempPathFactory, media_models_dir: Path
) -> Iterator[ServerProcess]:
    """A server with Envoy serving only the three media default models."""
    workdir = tmp_path_factory.mktemp("media")
    models = workdir / "models"
    models.mkdir()
    for name in MEDIA_MODELS:
        _link_tree(media_models_dir / name, models / name)
    url = databases.new_database(workdir)
    server = ServerProcess(workdir=workdir, database_url=url, gateway=True, models_dir=models)
    server.start()
    yield server
    server.stop()
    databases.discard(url)


@pytest.fixture
def rest(media_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=media_server.http_url, timeout=60) as client:
        yield client


def _rest_task(rest: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """POST /tasks (seed 001's shape), then the finished task."""
    created = rest.post("/tasks", json=body)
    assert created.status_code == 201, created.text
    done = wait_for_status(rest, created.json()["task_id"], {"COMPLETED", "FAILED"}, timeout=120)
    assert done["status"] == "COMPLETED", done.get("error")
    return done


def _wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return frames.astype(np.float32) / 32768.0, wav.getframerate()


def _speak(client: Client, text: str = SENTENCE) -> tuple[str, dict[str, Any], bytes]:
    task = client.create_task(
        task_type="text_to_speech", model_name="piper-joe-medium", input_data={"text": text}
    )
    done = client.wait_for_task(task.task_id, timeout=120)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    return done.task_id, done.result, client.get_task_artifact(done.task_id, "speech.wav").data


# -- text_to_speech ------------------------------------------------------------------------


@needs_espeak
def test_text_to_speech_makes_a_wav_artifact_identical_over_rest_and_the_sdk(
    media_server: ServerProcess, rest: httpx.Client
) -> None:
    with media_server.client() as client:
        task_id, result, data = _speak(client)
    assert result["artifacts"] == [
        {"name": "speech.wav", "content_type": "audio/wav", "size": len(data)}
    ]
    assert result["sample_rate"] == 22050 and "kw\u02c8\u026ak" in result["phonemes"]  # quick
    samples, rate = _wav(data)
    assert rate == 22050
    assert 1.5 < samples.size / rate < 6.0  # a sentence, in seconds
    assert result["duration_seconds"] == pytest.approx(samples.size / rate, abs=0.01)
    assert float(np.sqrt(np.mean(samples**2))) > 0.02  # not silence
    over_rest = rest.get(f"/v1/tasks/{task_id}/artifacts/speech.wav")
    assert over_rest.status_code == 200
    assert over_rest.headers["content-type"] == "audio/wav"
    assert over_rest.content == data


@needs_espeak
def test_seed_001_shape_runs_text_to_speech_over_rest(rest: httpx.Client) -> None:
    done = _rest_task(
        rest,
        {
            "task_type": "text_to_speech",
            "model_name": "piper-joe-medium",
            "input_data": {"text": "Hello from the task manager."},
            "parameters": {"length_scale": 1.2},
        },
    )
    artifact = done["result"]["artifacts"][0]
    body = rest.get(f"/v1/tasks/{done['task_id']}/artifacts/{artifact['name']}")
    assert body.status_code == 200 and len(body.content) == artifact["size"]
    # The default model serves the type when no model_name is given.
    done = _rest_task(rest, {"task_type": "tts", "input_data": {"text": "Default voice."}})
    assert done["model_name"] in ("", "piper-joe-medium")


def test_text_to_speech_refuses_bad_input_naming_the_field(
    media_server: ServerProcess, rest: httpx.Client
) -> None:
    with media_server.client() as client:
        for input_data, parameters, field in (
            ({}, {}, "input_data.text"),
            ({"text": "   "}, {}, "input_data.text"),
            ({"text": "x" * 5001}, {}, "input_data.text"),
            ({"text": "hi"}, {"length_scale": 0}, "parameters.length_scale"),
        ):
            with pytest.raises(InvalidArgumentError) as caught:
                client.create_task(
                    task_type="text_to_speech", input_data=input_data, parameters=parameters
                )
            assert caught.value.field_violations[0].field == field
    response = rest.post("/tasks", json={"task_type": "text_to_speech", "input_data": {}})
    assert response.status_code == 400 and "input_data.text" in response.text


def test_without_espeak_ng_text_to_speech_is_refused_saying_how_to_install_it(
    tmp_path: Path, media_models_dir: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    _link_tree(media_models_dir / "piper-joe-medium", models / "piper-joe-medium")
    url = databases.new_database(tmp_path)
    server = ServerProcess(
        workdir=tmp_path,
        database_url=url,
        models_dir=models,
        env={"TASKORCH_ESPEAK_NG": str(tmp_path / "no-espeak-ng-here")},
    )
    server.start()
    try:
        with server.client() as client, pytest.raises(Exception) as caught:
            client.create_task(task_type="text_to_speech", input_data={"text": "Hello."})
        error: Any = caught.value
        assert error.reason == "ESPEAK_NG_MISSING"
        assert "apt-get install espeak-ng" in error.message
    finally:
        server.stop()
        databases.discard(url)


# -- image_to_text (OCR) -------------------------------------------------------------------

OCR_LINES = ("Invoice 2024-117: total $384.50", "Shipped to Berlin on March 3rd.")


def _rendered_png(lines: tuple[str, ...]) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=34)
    image = Image.new("RGB", (880, 60 + 64 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((24, 30 + 64 * row), line, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _cer(reference: str, hypothesis: str) -> float:
    """Character error rate: Levenshtein distance over the reference's length."""
    previous = list(range(len(hypothesis) + 1))
    for i, a in enumerate(reference, 1):
        current = [i]
        for j, b in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1] / max(1, len(reference))


def test_ocr_reads_a_rendered_sentence_over_grpc_and_rest(
    media_server: ServerProcess, rest: httpx.Client
) -> None:
    png = _rendered_png(OCR_LINES)
    reference = "\n".join(OCR_LINES)
    with media_server.client() as client:
        task = client.create_task(
            task_type="image_to_text",
            model_name="pp-ocrv4",
            input_data={"image": base64.b64encode(png).decode()},
        )
        done = client.wait_for_task(task.task_id, timeout=120)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    over_rest = _rest_task(
        rest,
        {
            "task_type": "image_to_text",
            "model_name": "pp-ocrv4",
            "input_data": {"image": "data:image/png;base64," + base64.b64encode(png).decode()},
        },
    )["result"]
    for via, result in (("gRPC", done.result), ("REST", over_rest)):
        cer = _cer(reference, result["text"])
        print(f"OCR over {via}: {result['text']!r}, character error rate {cer:.2%}")
        assert cer <= 0.05, result["text"]
        assert len(result["lines"]) == 2 and 0.8 < result["confidence"] <= 1.0
        first = result["lines"][0]["box"]
        assert first[0][0] < first[1][0] and first[0][1] < first[2][1]  # clockwise from top left
        assert first[2][1] <= result["lines"][1]["box"][0][1] + 5  # top line first
    assert over_rest["text"] == done.result["text"]


@pytest.mark.parametrize(
    ("image", "words"),
    [
        ("not base64!", "not valid base64"),
        (base64.b64encode(b"not an image").decode(), "could not be decoded"),
        ("data:image/png,raw", "must be base64"),
    ],
)
def test_ocr_refuses_bad_images_with_400_naming_the_field(
    media_server: ServerProcess, rest: httpx.Client, image: str, words: str
) -> None:
    response = rest.post(
        "/tasks", json={"task_type": "image_to_text", "input_data": {"image": image}}
    )
    assert response.status_code == 400, response.text
    assert "input_data.image" in response.text and words in response.text
    with media_server.client() as client, pytest.raises(InvalidArgumentError) as caught:
        client.create_task(task_type="ocr", input_data={"image": image})
    assert caught.value.field_violations[0].field == "input_data.image"


# -- audio_classification (voice activity) -------------------------------------------------


def _silence_wav(seconds: float = 2.0, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def _classify(client: Client, wav: bytes) -> dict[str, Any]:
    task = client.create_task(
        task_type="audio_classification",
        model_name="silero-vad",
        input_data={"audio": "data:audio/wav;base64," + base64.b64encode(wav).decode()},
    )
    done = client.wait_for_task(task.task_id, timeout=120)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    return done.result


@needs_espeak
def test_pipers_speech_is_speech_and_silence_is_not(
    media_server: ServerProcess, rest: httpx.Client
) -> None:
    with media_server.client() as client:
        _, _, speech_wav = _speak(client, "Voice activity detection hears this sentence.")
        speech = _classify(client, speech_wav)
        silence = _classify(client, _silence_wav())
    assert speech["label"] == "speech" and speech["speech_ratio"] > 0.6, speech
    assert speech["segments"] and speech["segments"][0]["start"] < 0.5
    assert speech["labels"][0] == {"label": "speech", "score": speech["score"]}
    assert silence["label"] == "non_speech" and silence["segments"] == [], silence
    assert silence["score"] == 1.0 and silence["duration_seconds"] == 2.0
    # REST, seed 001's shape.
    over_rest = _rest_task(
        rest,
        {
            "task_type": "audio_classification",
            "model_name": "silero-vad",
            "input_data": {"audio": base64.b64encode(speech_wav).decode()},
        },
    )["result"]
    assert over_rest["label"] == "speech" and over_rest["segments"] == speech["segments"]


def test_audio_that_is_not_wav_is_refused_with_400_naming_the_field(rest: httpx.Client) -> None:
    for audio, words in (
        (base64.b64encode(b"ID3 an mp3").decode(), "PCM WAV"),
        ("%%%", "not valid base64"),
    ):
        response = rest.post("/tasks", json={"task_type": "vad", "input_data": {"audio": audio}})
        assert response.status_code == 400, response.text
        assert "input_data.audio" in response.text and words in response.text
    response = rest.post("/tasks", json={"task_type": "audio_classification", "input_data": {}})
    assert response.status_code == 400 and "input_data.audio" in response.text
