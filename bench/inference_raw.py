"""Raw in-process ONNX Runtime figures on this machine (not a test).

1. MiniLM-L6 embeddings (tokenise + ORT + mean pooling + L2): sentences/s and p50 latency at
   batch 1, 8, 16, 32, 64, straight on an ``InferenceSession`` (the physical limit), then
   through ``InferenceEngine`` (dynamic batcher) at concurrency 1, 8, 32 as a ratio to it.
2. SmolLM2-135M: tokens/s and time to first token of a plain single-sequence ORT loop, and of
   the continuous-batching generator at concurrency 1 and 4.

Usage: ``python bench/inference_raw.py [--models-dir DIR]`` (default: ``$TASKORCH_MODELS_DIR``
or ./var/models; run ``taskorch models defaults`` first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from taskorch.inference import InferenceEngine
from taskorch.inference.runtime import batching_instances
from taskorch.inference.sessions import ModelSession, default_threads

SENTENCES = [
    f"Sentence {i}: the quick brown fox jumps over the lazy dog near the river bank."
    for i in range(512)
]
PROMPTS = [
    "Write a short poem about the sea.",
    "Explain what a CPU does in two sentences.",
    "List three fruits and their colours.",
    "Describe a cat to someone who has never seen one.",
]
NEW_TOKENS = 64


def machine() -> str:
    """One line describing where the figures come from."""
    return (
        f"{platform.processor() or platform.machine()}, {default_threads()} usable cores, "
        f"{os.cpu_count()} logical; onnxruntime {ort.__version__} "
        f"(device {ort.get_device()}, available {', '.join(ort.get_available_providers())})"
    )


class RawEmbedder:
    """MiniLM straight on ``InferenceSession``s: tokenise, run, mean-pool, L2-normalise (the
    physical limit the served figures are compared with), on one session using every core, or
    on ``lanes`` one-thread sessions side by side, one Python thread each (what the server's
    batching instances do; ``lanes`` is the server's default for this machine)."""

    def __init__(self, model_dir: Path, file: str = "model.onnx") -> None:
        self.tokenizer = fast_tokenizer(model_dir)
        self.session = ModelSession(model_dir / file, providers=["CUDAExecutionProvider"])
        self.provider = self.session.providers_active[0]
        cores = default_threads()
        self.lanes = batching_instances(None, cores=cores, on_cuda=self.session.on_cuda)
        # Each lane has its own tokenizer: a fast tokenizer's padding state is not thread-safe.
        self._lanes = [
            (
                fast_tokenizer(model_dir),
                ModelSession(
                    model_dir / file,
                    providers=self.session.providers_active,
                    threads=max(1, cores // self.lanes),
                ),
            )
            for _ in range(self.lanes if self.lanes > 1 else 0)
        ]
        self._index = 0

    def measure(self, batch: int, seconds: float) -> tuple[float, float]:
        """(sentences/s, p50 ms per batch) of batches of ``batch`` sentences for ``seconds`` on
        the session using every core."""
        latencies = self._loop(self.tokenizer, self.session, batch, seconds)
        return batch * len(latencies) / sum(latencies), statistics.median(latencies) * 1000

    def measure_side_by_side(self, batch: int, seconds: float) -> float:
        """Sentences/s of the one-thread sessions running batches of ``batch`` side by side
        (the single session's figure when this machine has one core)."""
        if not self._lanes:
            return self.measure(batch, seconds)[0]
        counts: list[int] = []
        started = time.perf_counter()
        threads = [
            threading.Thread(
                target=lambda tok=tok, session=session: counts.append(
                    len(self._loop(tok, session, batch, seconds))
                )
            )
            for tok, session in self._lanes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return batch * sum(counts) / (time.perf_counter() - started)

    def _loop(
        self, tokenizer: Any, session: ModelSession, batch: int, seconds: float
    ) -> list[float]:
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(latencies) < 5:
            start = self._index
            self._index += batch
            texts = [SENTENCES[(start + j) % len(SENTENCES)] for j in range(batch)]
            started = time.perf_counter()
            encodings = (
                [tokenizer.encode(texts[0])] if batch == 1 else tokenizer.encode_batch(texts)
            )
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            attention = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            types = np.array([e.type_ids for e in encodings], dtype=np.int64)
            out = session.run(
                {"input_ids": ids, "attention_mask": attention, "token_type_ids": types}
            )
            hidden = out["last_hidden_state"]
            mask = attention[..., None]
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
            latencies.append(time.perf_counter() - started)
        return latencies


def fast_tokenizer(model_dir: Path) -> Any:
    """The model's Rust tokenizer, called directly (as the server does: the transformers
    wrapper cost 0.5-0.8 ms more per call here), padding a batch to its longest text, truncating at
    256 tokens."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tokenizer = Tokenizer.from_str(
        AutoTokenizer.from_pretrained(model_dir).backend_tokenizer.to_str()
    )
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    return tokenizer


def raw_embeddings(
    model_dir: Path,
) -> tuple[dict[int, tuple[float, float]], dict[int, float], RawEmbedder]:
    """{batch size: (sentences/s, p50 ms per batch)} straight on one ONNX Runtime session, and
    {batch size: sentences/s} of one-thread sessions side by side."""
    embedder = RawEmbedder(model_dir)
    batches = (1, 8, 16, 32, 64)
    figures = {batch: embedder.measure(batch, 3.0) for batch in batches}
    side = {batch: embedder.measure_side_by_side(batch, 3.0) for batch in batches}
    return figures, side, embedder


async def served_embeddings(engine: InferenceEngine) -> dict[int, tuple[float, float]]:
    """{concurrency: (sentences/s, p50 ms per request)} through the engine's batcher."""
    figures: dict[int, tuple[float, float]] = {}
    for concurrency in (1, 8, 32):
        latencies: list[float] = []
        deadline = time.perf_counter() + 3.0
        counter = 0

        async def client(deadline: float = deadline, latencies: list[float] = latencies) -> None:
            nonlocal counter
            while time.perf_counter() < deadline:
                text = SENTENCES[counter % len(SENTENCES)]
                counter += 1
                started = time.perf_counter()
                request = engine.check("feature_extraction", "", {"inputs": text}, {})
                await engine.run(request)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        figures[concurrency] = (len(latencies) / elapsed, statistics.median(latencies) * 1000)
    return figures


def plain_generation(model_dir: Path) -> tuple[float, float]:
    """(tokens/s, time to first token s) of a plain single-sequence greedy ORT loop."""
    from transformers import AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    session = ModelSession(model_dir / "model.onnx", providers=["CUDAExecutionProvider"])
    past_names = [n for n in session.input_names if n.startswith("past_key_values")]
    info = session.input(past_names[0])
    tokens = 0
    ttfts: list[float] = []
    started_all = time.perf_counter()
    for prompt in PROMPTS:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        started = time.perf_counter()
        input_ids = np.array([ids], dtype=np.int64)
        past = {
            n: np.zeros((1, int(info.shape[1]), 0, int(info.shape[3])), np.float32)
            for n in past_names
        }
        length = 0
        for step in range(NEW_TOKENS):
            n = input_ids.shape[1]
            feed = {
                "input_ids": input_ids,
                "attention_mask": np.ones((1, length + n), np.int64),
                "position_ids": np.arange(length, length + n, dtype=np.int64)[None],
                **past,
            }
            out = session.run(feed)
            length += n
            token = int(np.argmax(out["logits"][0, -1]))
            if step == 0:
                ttfts.append(time.perf_counter() - started)
            tokens += 1
            if token == tok.eos_token_id:
                break
            input_ids = np.array([[token]], dtype=np.int64)
            past = {name: out[name.replace("past_key_values", "present")] for name in past_names}
    return tokens / (time.perf_counter() - started_all), statistics.median(ttfts)


async def engine_generation(engine: InferenceEngine, concurrency: int) -> tuple[float, float]:
    """(aggregate tokens/s, median time to first token s) at ``concurrency``."""
    params = {"max_new_tokens": NEW_TOKENS}
    prompts = (PROMPTS * 4)[: max(4, concurrency * 2)]
    queue = list(prompts)
    results: list[dict[str, Any]] = []

    async def client() -> None:
        while queue:
            prompt = queue.pop()
            request = engine.check("text_generation", "", {"prompt": prompt}, params)
            results.append((await engine.run(request)).result)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    tokens = sum(r["tokens_generated"] for r in results)
    return tokens / elapsed, statistics.median(r["time_to_first_token"] for r in results)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default = Path(os.environ.get("TASKORCH_MODELS_DIR") or "var/models")
    parser.add_argument("--models-dir", type=Path, default=default)
    args = parser.parse_args()
    models: Path = args.models_dir
    print(f"machine: {machine()}")

    raw, side, embedder = raw_embeddings(models / "all-minilm-l6-v2")
    best = max(max(rate for rate, _ in raw.values()), *side.values())
    print(f"\nMiniLM-L6 embeddings, raw ONNX Runtime in process ({embedder.provider})")
    print(
        f"{'batch':>6} {'sent/s':>9} {'p50 ms':>8} {'x best':>7}   "
        f"{embedder.lanes} one-thread sessions side by side: {'sent/s':>7} {'x best':>7}"
    )
    for batch, (rate, p50) in raw.items():
        print(
            f"{batch:>6} {rate:>9.0f} {p50:>8.2f} {rate / best:>7.2f}   "
            f"{'':>36}{side[batch]:>7.0f} {side[batch] / best:>7.2f}"
        )

    engine = InferenceEngine(models, poll_seconds=0)
    await engine.start()
    try:
        served = await served_embeddings(engine)
        print("\nMiniLM-L6 through InferenceEngine (dynamic batcher), one sentence per request")
        print(f"{'conc':>6} {'sent/s':>9} {'p50 ms':>8} {'x best raw':>11}")
        for concurrency, (rate, p50) in served.items():
            print(f"{concurrency:>6} {rate:>9.0f} {p50:>8.2f} {rate / best:>11.2f}")
        print(
            f"batch-1 p50 overhead: {served[1][1] - raw[1][1]:+.2f} ms "
            f"(engine {served[1][1]:.2f} ms vs raw {raw[1][1]:.2f} ms)"
        )

        plain_rate, plain_ttft = plain_generation(models / "smollm2-135m-instruct")
        print(f"\nSmolLM2-135M greedy, {NEW_TOKENS} new tokens max")
        print(f"{'mode':<34} {'tok/s':>7} {'TTFT ms':>8} {'x plain':>8}")
        label = "plain ORT loop, 1 sequence"
        print(f"{label:<34} {plain_rate:>7.1f} {plain_ttft * 1000:>8.0f} {1:>8.2f}")
        for concurrency in (1, 4):
            rate, ttft = await engine_generation(engine, concurrency)
            label = f"engine, concurrency {concurrency}"
            print(f"{label:<34} {rate:>7.1f} {ttft * 1000:>8.0f} {rate / plain_rate:>8.2f}")
    finally:
        await engine.close()


if __name__ == "__main__":
    asyncio.run(main())
