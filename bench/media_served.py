"""Served media inference against the same work on ONNX Runtime in process (not a test).

In one run, on the default media models (``taskorch models defaults``):

1. OCR (``pp-ocrv4``) of a rendered two-line PNG: images/s of the pipeline's own detection +
   recognition called in process on the loaded sessions (raw ONNX Runtime with the same pre-
   and post-processing; the limit), then served as tasks over gRPC (create, wait; the image
   in ``input_data``), one at a time; the ratio served / raw.
2. Text to speech (``piper-joe-medium``) of one sentence: real-time factor (seconds of
   compute per second of audio, lower is better) of espeak-ng + the voice in process, then
   served as tasks over gRPC including the download of the WAV artifact; the ratio.

The client, the server and ONNX Runtime share this machine's cores. Usage:
``python bench/media_served.py [--models-dir var/models] [--count 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _harness import ServerProcess, sqlite_url
from inference_raw import machine

from taskorch.inference.config import load_model_config
from taskorch.inference.pipelines.ocr import read_image
from taskorch.inference.pipelines.text_to_speech import phonemize, synthesize, voice_of
from taskorch.inference.runtime import LoadedModel

MODELS = ("pp-ocrv4", "piper-joe-medium")
LINES = ("Invoice 2024-117: total $384.50", "Shipped to Berlin on March 3rd.")
SENTENCE = "The quick brown fox jumps over the lazy dog, then naps in the afternoon sun."


def _png() -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=34)
    image = Image.new("RGB", (880, 60 + 64 * len(LINES)), "white")
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(LINES):
        draw.text((24, 30 + 64 * row), line, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _load(models_dir: Path, name: str) -> LoadedModel:
    path = models_dir / name
    return LoadedModel.load(name, path, load_model_config(path), prefer_gpu=False)


def raw_ocr(models_dir: Path, png: bytes, count: int) -> float:
    from PIL import Image

    model = _load(models_dir, "pp-ocrv4")
    rgb = Image.open(io.BytesIO(png)).convert("RGB")
    read_image(model, rgb, 0.5, 0.5)  # warm up
    started = time.perf_counter()
    for _ in range(count):
        read_image(model, rgb, 0.5, 0.5)
    return count / (time.perf_counter() - started)


def raw_tts(models_dir: Path, count: int) -> float:
    model = _load(models_dir, "piper-joe-medium")
    voice = voice_of(model)
    scales = voice.noise_scale, voice.length_scale, voice.noise_w
    import numpy as np

    factors = []
    for i in range(count + 1):
        started = time.perf_counter()
        audio = synthesize(
            model, voice, phonemize(SENTENCE, voice.espeak_voice), np.array(scales, np.float32)
        )
        if i:  # the first is a warm-up
            factors.append((time.perf_counter() - started) / (audio.size / voice.sample_rate))
    return statistics.median(factors)


async def served(server: ServerProcess, png: bytes, count: int) -> tuple[float, float]:
    image = base64.b64encode(png).decode()
    async with server.async_client() as client:

        async def ocr_once() -> None:
            task = await client.create_task(
                task_type="image_to_text", model_name="pp-ocrv4", input_data={"image": image}
            )
            done = await client.wait_for_task(task.task_id, timeout=120)
            assert done.status == "COMPLETED" and done.result, done.error

        async def tts_once() -> float:
            started = time.perf_counter()
            task = await client.create_task(
                task_type="text_to_speech",
                model_name="piper-joe-medium",
                input_data={"text": SENTENCE},
            )
            done = await client.wait_for_task(task.task_id, timeout=120)
            assert done.status == "COMPLETED" and done.result, done.error
            await client.get_task_artifact(task.task_id, "speech.wav")
            return (time.perf_counter() - started) / float(done.result["duration_seconds"])

        await ocr_once()
        started = time.perf_counter()
        for _ in range(count):
            await ocr_once()
        ocr_rate = count / (time.perf_counter() - started)
        await tts_once()
        rtf = statistics.median([await tts_once() for _ in range(count)])
    return ocr_rate, rtf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=Path("var/models"))
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args()
    png = _png()
    print(machine())
    ocr_raw = raw_ocr(args.models_dir, png, args.count)
    tts_raw = raw_tts(args.models_dir, args.count)
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-") as workdir:
        path = Path(workdir)
        (path / "models").mkdir()
        for name in MODELS:
            shutil.copytree(args.models_dir / name, path / "models" / name)
        server = ServerProcess(
            workdir=path,
            database_url=sqlite_url(path / "bench.db"),
            args=("--log-level", "warning"),
            models_dir=path / "models",
        )
        server.start()
        try:
            ocr_served, tts_served = asyncio.run(served(server, png, args.count))
        finally:
            server.stop()
    print(f"OCR (2 lines, 880x188 PNG), {args.count} images one at a time:")
    print(f"  raw in process {ocr_raw:.2f} images/s, served tasks {ocr_served:.2f} images/s")
    print(f"  served / raw = {ocr_served / ocr_raw:.2f}")
    print(f"TTS ({len(SENTENCE)} characters), median real-time factor over {args.count}:")
    print(f"  raw in process {tts_raw:.3f}, served tasks (with the WAV download) {tts_served:.3f}")
    print(f"  raw / served speed = {tts_raw / tts_served:.2f}")


if __name__ == "__main__":
    main()
