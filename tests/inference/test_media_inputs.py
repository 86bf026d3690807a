"""``input_data.image`` / ``input_data.audio``: base64 or a data URL, with limits and errors that
name the field; WAV in and out."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.pipelines.media import (
    MAX_MEDIA_BYTES,
    decode_wav,
    media_bytes,
    resample,
    wav_artifact,
)

DATA = bytes(range(256)) * 3


@pytest.mark.parametrize(
    "value",
    [
        base64.b64encode(DATA).decode(),
        "data:image/png;base64," + base64.b64encode(DATA).decode(),
        "data:audio/wav;rate=16000;base64," + base64.b64encode(DATA).decode(),
        "  " + base64.b64encode(DATA).decode() + "\n",
    ],
)
def test_base64_and_data_urls_decode_to_the_same_bytes(value: str) -> None:
    assert media_bytes({"image": value}, "image") == (DATA, "input_data.image")


def test_huggingface_inputs_key_is_accepted_and_named() -> None:
    encoded = base64.b64encode(DATA).decode()
    assert media_bytes({"inputs": encoded}, "audio") == (DATA, "input_data.inputs")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (None, "audio is required"),
        (12, "must be a string"),
        ("", "must be a string"),
        ("not base64!", "not valid base64"),
        ("data:audio/wav,plain-text", "must be base64"),
        ("data:nonsense", "not a valid data URL"),
        ("data:audio/wav;base64,", "empty"),
        ("A" * (MAX_MEDIA_BYTES * 4 // 3 + 8), f"larger than {MAX_MEDIA_BYTES} bytes"),
    ],
)
def test_bad_media_is_refused_naming_the_field(value: object, words: str) -> None:
    data = {} if value is None else {"audio": value}
    with pytest.raises(InvalidArgument) as caught:
        media_bytes(data, "audio")
    assert caught.value.violations[0].field == "input_data.audio"
    assert words in str(caught.value)


def test_wav_round_trips_and_resamples() -> None:
    rate = 22_050
    tone = (0.5 * np.sin(np.arange(rate) * 2 * np.pi * 440 / rate)).astype(np.float32)
    artifact = wav_artifact("a.wav", tone, rate)
    assert artifact.content_type == "audio/wav" and artifact.data[:4] == b"RIFF"
    with wave.open(io.BytesIO(artifact.data)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (rate, 1, 2)
    samples, got_rate = decode_wav(artifact.data, "input_data.audio")
    assert got_rate == rate and np.max(np.abs(samples - tone)) < 1e-3
    assert resample(samples, rate, 16_000).size == 16_000


def test_a_file_that_is_not_wav_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_wav(b"ID3 an mp3, say", "input_data.audio")
    assert caught.value.violations[0].field == "input_data.audio"
    assert "PCM WAV" in str(caught.value)
