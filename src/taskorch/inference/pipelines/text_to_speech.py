"""text_to_speech: text in, a WAV artifact out, from a Piper (VITS) voice, a Hugging Face
VITS model (MMS-TTS; ``taskorch.inference.pipelines.vits``) or a Hugging Face SpeechT5 model
with its HiFi-GAN vocoder (``taskorch.inference.pipelines.speecht5``), as the model's family
says.

Input ``{"text": "..."}`` (or ``inputs``); parameters ``length_scale`` (speaking slowness,
default the voice's), ``noise_scale`` and ``noise_w`` (variation). Result: ``{"artifacts":
[{"name": "speech.wav", "content_type": "audio/wav", "size"}], "sample_rate",
"duration_seconds", "phonemes"}``; the WAV (16-bit mono) is at
``GET /v1/tasks/{task_id}/artifacts/speech.wav``. A Hugging Face VITS model takes no
parameters (its scales are in its graph), answers no ``phonemes`` but ``input_ids`` (how many
ids it spoke), and its waveform is written as the graph gives it (clipped to [-1, 1], not
normalised). A SpeechT5 model takes ``speaker_embedding`` (an x-vector of
``speaker_embedding_dim``, 512, numbers; default the model's ``speaker_embedding.npy``),
``threshold`` (0.5), ``minlenratio`` (0), ``maxlenratio`` (20) as transformers'
``generate_speech`` does, and ``max_speech_seconds`` (a cap of ours); it answers
``input_ids``, ``decoder_steps``, ``stopped_by`` (``threshold`` or ``length``) and
``speaker_embedding`` (``default`` or ``request``).

Phonemes come from the ``espeak-ng`` program (GPL-3.0), called as a separate process
(``espeak-ng -q --ipa -v <voice>``) and never linked; each IPA character is mapped through the
voice's ``phoneme_id_map`` the way Piper does (``^``, then every phoneme followed by the pad
``_``, then ``$``). One graph call per line espeak-ng returns (a clause or sentence).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import unicodedata
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import FailedPrecondition, InternalError, InvalidArgument
from taskorch.inference.pipelines.base import OnText, param_float, string_field
from taskorch.inference.pipelines.media import wav_artifact
from taskorch.inference.pipelines.speecht5 import (
    DECODER,
    POSTNET_VOCODER,
    SpeechRequest,
    SpeechT5Voice,
    decoding_of,
    generate_speech,
    speaker_embedding_of,
)
from taskorch.inference.pipelines.vits import sample_rate_of, synthesize_vits, tokens_of
from taskorch.inference.runtime import LoadedModel
from taskorch.inference.task_types import ModelFamily

MAX_TEXT_CHARS = 5000
ESPEAK = "espeak-ng"  # or the program $TASKORCH_ESPEAK_NG names
ESPEAK_TIMEOUT_SECONDS = 60.0
ARTIFACT_NAME = "speech.wav"


def espeak_path() -> str:
    """Where the espeak-ng program is.

    Raises:
        FailedPrecondition: it is not installed (the message says how to install it).
    """
    program = os.environ.get("TASKORCH_ESPEAK_NG") or ESPEAK
    found = shutil.which(program)
    if found is None:
        raise FailedPrecondition(
            f"text_to_speech needs the espeak-ng program for phonemes, and {program!r} is not "
            "found on this server: install it (Debian/Ubuntu: apt-get install espeak-ng) or "
            "point TASKORCH_ESPEAK_NG at it",
            reason="ESPEAK_NG_MISSING",
        )
    return found


def phonemize(text: str, voice: str) -> list[str]:
    """IPA phonemes of ``text``, one string per clause, from espeak-ng in its own process."""
    try:
        done = subprocess.run(
            [espeak_path(), "-q", "--ipa", "-v", voice],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=ESPEAK_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InternalError(f"espeak-ng took more than {ESPEAK_TIMEOUT_SECONDS:.0f}s") from None
    if done.returncode != 0:
        raise InternalError(
            f"espeak-ng failed ({done.returncode}): {done.stderr.decode(errors='replace')[:500]}"
        )
    lines = done.stdout.decode("utf-8", errors="replace").splitlines()
    return [line.strip() for line in lines if line.strip()]


class Voice:
    """A Piper voice's config: sample rate, espeak voice, phoneme ids, default scales."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.sample_rate = int(config["audio"]["sample_rate"])
        self.espeak_voice = str(config.get("espeak", {}).get("voice", "en-us"))
        self.ids: dict[str, list[int]] = {
            str(k): [int(i) for i in v] for k, v in config["phoneme_id_map"].items()
        }
        inference = config.get("inference", {})
        self.noise_scale = float(inference.get("noise_scale", 0.667))
        self.length_scale = float(inference.get("length_scale", 1.0))
        self.noise_w = float(inference.get("noise_w", 0.8))
        self.speakers = int(config.get("num_speakers", 1))

    def phoneme_ids(self, phonemes: str) -> list[int]:
        """Piper's id sequence: BOS, each phoneme then PAD, EOS; unknown characters dropped."""
        pad = self.ids["_"]
        ids = [*self.ids["^"], *pad]
        for char in unicodedata.normalize("NFD", phonemes):
            mapped = self.ids.get(char)
            if mapped is not None:
                ids.extend(mapped)
                ids.extend(pad)
        ids.extend(self.ids["$"])
        return ids


def voice_of(model: LoadedModel) -> Voice:
    """The voice config of ``model`` (read once, kept on the model)."""
    voice = model.media.get("voice")
    if voice is None:
        file = model.config.file("voice")
        if file is None:
            raise InternalError(f"model {model.name!r} has no voice config (files.voice)")
        voice = Voice(json.loads((model.path / file).read_text(encoding="utf-8")))
        model.media["voice"] = voice
    assert isinstance(voice, Voice)
    return voice


def _text(input_data: Mapping[str, Any]) -> str:
    key = "text" if "text" in input_data or "inputs" not in input_data else "inputs"
    text = string_field(input_data, key)
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidArgument(
            f"{key} is {len(text)} characters; at most {MAX_TEXT_CHARS}",
            field=f"input_data.{key}",
        )
    return text


def _scales(voice: Voice, parameters: Mapping[str, Any]) -> npt.NDArray[np.float32]:
    return np.array(
        [
            param_float(parameters, "noise_scale", voice.noise_scale, low=0.0, high=2.0),
            param_float(parameters, "length_scale", voice.length_scale, low=0.1, high=5.0),
            param_float(parameters, "noise_w", voice.noise_w, low=0.0, high=2.0),
        ],
        dtype=np.float32,
    )


def synthesize(
    model: LoadedModel, voice: Voice, clauses: list[str], scales: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """The waveform of the clauses, one graph call each, peak-normalised like Piper's."""
    pieces: list[npt.NDArray[np.float32]] = []
    for phonemes in clauses:
        ids = voice.phoneme_ids(phonemes)
        feed: dict[str, npt.NDArray[Any]] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": scales,
        }
        if voice.speakers > 1:
            feed["sid"] = np.array([0], dtype=np.int64)
        out = model.session.run(feed)
        audio = np.asarray(next(iter(out.values())), dtype=np.float32).reshape(-1)
        pieces.append(audio)
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return (audio / max(0.01, peak)).astype(np.float32)


class TextToSpeech:
    """Speak a text with the model's voice: Piper, Hugging Face VITS or SpeechT5."""

    def validate(
        self, model: LoadedModel, input_data: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> None:
        text = _text(input_data)
        if model.config.family is ModelFamily.VITS_TTS:
            _vits_ids(model, text)
            return
        if model.config.family is ModelFamily.SPEECHT5_TTS:
            _speecht5_request(model, text, parameters)
            return
        _scales(voice_of(model), parameters)
        espeak_path()

    async def run(
        self,
        model: LoadedModel,
        input_data: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        on_output: OnText | None,
        cancel: asyncio.Event | None,
    ) -> dict[str, Any]:
        text = _text(input_data)
        if model.config.family is ModelFamily.VITS_TTS:
            return await _run_vits(model, text)
        if model.config.family is ModelFamily.SPEECHT5_TTS:
            return await _run_speecht5(model, text, parameters, cancel)
        voice = voice_of(model)
        scales = _scales(voice, parameters)
        clauses = await asyncio.to_thread(phonemize, text, voice.espeak_voice)
        if not clauses:
            raise InvalidArgument("text has nothing to speak", field="input_data.text")
        audio = await asyncio.to_thread(synthesize, model, voice, clauses, scales)
        artifact = wav_artifact(ARTIFACT_NAME, audio, voice.sample_rate)
        return {
            "artifacts": [artifact.to_transport()],
            "sample_rate": voice.sample_rate,
            "duration_seconds": round(audio.size / voice.sample_rate, 3),
            "phonemes": " ".join(clauses),
        }


def _vits_ids(model: LoadedModel, text: str) -> list[int]:
    ids = tokens_of(model).ids(text)
    if len(ids) <= 1:
        raise InvalidArgument(
            "text has nothing this model can speak (no character of its vocabulary)",
            field="input_data.text",
        )
    return ids


async def _run_vits(model: LoadedModel, text: str) -> dict[str, Any]:
    ids = _vits_ids(model, text)
    audio = await asyncio.to_thread(synthesize_vits, model, ids)
    rate = sample_rate_of(model)
    artifact = wav_artifact(ARTIFACT_NAME, audio, rate)
    return {
        "artifacts": [artifact.to_transport()],
        "sample_rate": rate,
        "duration_seconds": round(audio.size / rate, 3),
        "input_ids": len(ids),
    }


def speecht5_voice_of(model: LoadedModel) -> SpeechT5Voice:
    """What a SpeechT5 model's folder says about its voice (read once, kept on the model)."""
    voice = model.media.get("speecht5")
    if voice is None:
        voice = SpeechT5Voice.read(
            model.path, model.hf_config, model.config.extra.get("files") or {}
        )
        model.media["speecht5"] = voice
    assert isinstance(voice, SpeechT5Voice)
    return voice


def _speecht5_request(
    model: LoadedModel, text: str, parameters: Mapping[str, Any]
) -> SpeechRequest:
    voice = speecht5_voice_of(model)
    if model.tokenizer is None:
        raise InternalError(f"model {model.name!r} has no tokenizer")
    ids = [int(i) for i in model.tokenizer(text)["input_ids"]]
    limit = model.config.max_input_length
    if voice.max_text_positions is not None:
        limit = min(limit, voice.max_text_positions)
    if len(ids) > limit:
        raise InvalidArgument(
            f"text is {len(ids)} tokens long; model {model.name!r} reads at most {limit} "
            "(its max_text_positions, or max_input_length in model.yaml): send a shorter text",
            field="input_data.text",
        )
    speaker, given = speaker_embedding_of(parameters, voice.default_speaker, voice.speaker_size)
    decoding = decoding_of(
        parameters,
        reduction_factor=voice.reduction_factor,
        samples_per_step=voice.samples_per_step,
        rate=voice.sample_rate,
    )
    return SpeechRequest(ids, speaker, given, decoding)


async def _run_speecht5(
    model: LoadedModel, text: str, parameters: Mapping[str, Any], cancel: asyncio.Event | None
) -> dict[str, Any]:
    request = _speecht5_request(model, text, parameters)
    voice = speecht5_voice_of(model)
    speech = await asyncio.to_thread(
        generate_speech,
        model.session,
        model.extra_sessions[DECODER],
        model.extra_sessions[POSTNET_VOCODER],
        request.ids,
        request.speaker_embedding,
        reduction_factor=voice.reduction_factor,
        decoding=request.decoding,
        max_positions=voice.max_positions,
        cancelled=cancel.is_set if cancel is not None else None,
    )
    if speech.cancelled:
        raise asyncio.CancelledError("cancelled by request")
    rate = voice.sample_rate
    artifact = wav_artifact(ARTIFACT_NAME, speech.waveform, rate)
    return {
        "artifacts": [artifact.to_transport()],
        "sample_rate": rate,
        "duration_seconds": round(speech.waveform.size / rate, 3),
        "input_ids": len(request.ids),
        "decoder_steps": speech.steps,
        "stopped_by": "threshold" if speech.stopped else "length",
        "speaker_embedding": "request" if request.speaker_given else "default",
    }
