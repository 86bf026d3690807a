"""Binary inputs and outputs of the media task types: images and audio in, WAV and PNG out.

``input_data.image`` / ``input_data.audio`` take base64 or a data URL
(``data:image/png;base64,...``); errors name the field. Binary outputs are returned as task
artifacts (see ``taskorch.domain.artifacts``): the task's result lists them and
``GET /v1/tasks/{task_id}/artifacts/{name}`` serves the bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import wave
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.artifacts import Artifact
from taskorch.domain.errors import InvalidArgument

# Decoded bytes of one image or audio input; its base64 (4/3 larger) still fits the 4 MiB
# a task's input may hold.
MAX_MEDIA_BYTES = 3 * 1024 * 1024
_DATA_URL = re.compile(r"^data:([a-zA-Z0-9.+-]+/[a-zA-Z0-9.+-]+)?((?:;[^;,]*)*?)(;base64)?,")


def media_bytes(
    input_data: Mapping[str, Any], key: str, *, fallback: str | None = "inputs"
) -> tuple[bytes, str]:
    """The decoded bytes of ``input_data[key]`` (base64 or a base64 data URL).

    Args:
        input_data: the request's input.
        key: ``image`` or ``audio``.
        fallback: another key accepted in its place (Hugging Face's ``inputs``).

    Returns:
        The bytes and the field they came from (``input_data.image``).

    Raises:
        InvalidArgument: missing, not text, not base64, empty or too large (the field is named).
    """
    name = key if key in input_data or fallback is None or fallback not in input_data else fallback
    field = f"input_data.{name}"
    value = input_data.get(name)
    if value is None:
        raise InvalidArgument(
            f"{key} is required: base64 or a data URL (data:...;base64,...)", field=field
        )
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(
            f"{key} must be a string: base64 or a data URL (data:...;base64,...)", field=field
        )
    value = value.strip()
    if value.startswith("data:"):
        match = _DATA_URL.match(value)
        if match is None:
            raise InvalidArgument(f"{key} is not a valid data URL", field=field)
        if not match.group(3):
            raise InvalidArgument(f"{key}: a data URL must be base64 (;base64,)", field=field)
        value = value[match.end() :]
    if len(value) > MAX_MEDIA_BYTES * 4 // 3 + 4:
        raise InvalidArgument(f"{key} is larger than {MAX_MEDIA_BYTES} bytes", field=field)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{key} is not valid base64", field=field) from None
    if not data:
        raise InvalidArgument(f"{key} is empty", field=field)
    if len(data) > MAX_MEDIA_BYTES:
        raise InvalidArgument(f"{key} is larger than {MAX_MEDIA_BYTES} bytes", field=field)
    return data, field


def decode_image(data: bytes, field: str) -> Any:
    """A PIL image in RGB from PNG, JPEG, ... bytes."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise InvalidArgument("image could not be decoded (PNG, JPEG, ...)", field=field) from None


def decode_wav(data: bytes, field: str) -> tuple[npt.NDArray[np.float32], int]:
    """Mono float32 samples in [-1, 1] and the sample rate of a PCM WAV file.

    Raises:
        InvalidArgument: not a WAV file, or not 8/16/32-bit PCM.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError):
        raise InvalidArgument("audio must be a PCM WAV file", field=field) from None
    if width == 1:
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        samples = np.frombuffer(frames, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise InvalidArgument("audio must be 8, 16 or 32-bit PCM WAV", field=field)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return np.ascontiguousarray(samples, dtype=np.float32), rate


def resample(samples: npt.NDArray[np.float32], rate: int, target: int) -> npt.NDArray[np.float32]:
    """Linear-interpolation resampling (enough for voice activity, not for hi-fi)."""
    if rate == target or samples.size == 0:
        return samples
    n = round(samples.size * target / rate)
    x = np.linspace(0.0, samples.size - 1, num=n)
    return np.interp(x, np.arange(samples.size), samples).astype(np.float32)


def wav_artifact(name: str, samples: npt.NDArray[Any], rate: int) -> Artifact:
    """A 16-bit mono PCM WAV artifact of float samples in [-1, 1]."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return Artifact(name, "audio/wav", out.getvalue())
