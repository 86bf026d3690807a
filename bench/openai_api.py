"""The OpenAI-compatible API and remote models against ModelService, in one run (not a test).

Three servers' worth of paths to the same model (SmolLM2-135M, greedy, at most 64 new tokens,
the same chat prompts), taken in turn for every prompt so that load from elsewhere on the
machine falls on all of them alike:

1. ``ModelService.Generate`` over gRPC, straight to the server (the reference);
2. ``POST /v1/models/{name}:generate`` through Envoy (Generate as REST Server-Sent Events);
3. ``POST /openai/v1/chat/completions`` with ``stream: true`` through Envoy, read with httpx
   (the surface's own cost: the same hop as 2);
4. the same through the official ``openai`` client (what an OpenAI tool sees; the client's
   parsing runs on the same two cores);
5. ``ModelService.Generate`` on a second server whose model is ``provider: openai`` pointing at
   the first one's OpenAI API (the remote provider: one more server, HTTP hop and SSE parse).

Time to first token is from the call to the first text; tokens/s is the reply's tokens over
the time from its first to its last text (decode speed as the client sees it). Greedy decoding
makes the three replies equal (checked). The overhead a remote provider adds per request is
also measured on a small embedding (MiniLM, ``Infer`` on the first server against ``Infer`` of
the remote model on the second): the difference of medians.

Usage: ``python bench/openai_api.py [--models-dir DIR] [--prompts N]`` after
``taskorch models defaults`` (the directory needs smollm2-135m-instruct and all-minilm-l6-v2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
from _harness import Steal, table
from _harness import machine as grpc_machine
from inference_raw import machine

from taskorch.client import AsyncClient
from tests.servers import ServerProcess, sqlite_url

SMOLLM = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"
PROMPTS = [
    "Give me a name for a black cat.",
    "What is the capital of France?",
    "Name three colours of the rainbow.",
    "Describe the sea in one sentence.",
    "What does a CPU do?",
    "How is bread made?",
    "Why do bicycles stay upright?",
    "What is the moon made of?",
]
MAX_TOKENS = 64


@dataclass
class Reply:
    text: str
    tokens: int
    first: float  # seconds from the call to the first text
    total: float  # seconds from the call to the last text

    @property
    def tokens_per_second(self) -> float:
        decode = self.total - self.first
        return (self.tokens - 1) / decode if self.tokens > 1 and decode > 0 else float("nan")


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


async def generate(client: AsyncClient, model: str, prompt: str) -> Reply:
    started = time.perf_counter()
    first = last = 0.0
    pieces: list[str] = []
    tokens = 0
    async for event in client.models.generate(
        model, input_data={"messages": _messages(prompt)}, parameters={"max_new_tokens": MAX_TOKENS}
    ):
        if event.delta:
            last = time.perf_counter()
            first = first or last
            pieces.append(event.delta)
        if event.result is not None:
            tokens = int(event.result["tokens_generated"])
    return Reply("".join(pieces), tokens, first - started, last - started)


async def chat_completion(client: openai.AsyncOpenAI, prompt: str) -> Reply:
    started = time.perf_counter()
    first = last = 0.0
    pieces: list[str] = []
    tokens = 0
    stream = await client.chat.completions.create(
        model=SMOLLM,
        messages=_messages(prompt),  # type: ignore[arg-type]
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return Reply("".join(pieces), tokens, first - started, last - started)


async def generate_rest(http: httpx.AsyncClient, prompt: str) -> Reply:
    started = time.perf_counter()
    first = last = 0.0
    pieces: list[str] = []
    tokens = 0
    body = {"input_data": {"messages": _messages(prompt)}, "parameters": {"max_new_tokens": 64}}
    async with http.stream("POST", f"/v1/models/{SMOLLM}:generate", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event.get("delta"):
                last = time.perf_counter()
                first = first or last
                pieces.append(event["delta"])
            if event.get("done"):
                tokens = int(event["result"]["tokens_generated"])
    return Reply("".join(pieces), tokens, first - started, last - started)


async def chat_completion_http(http: httpx.AsyncClient, prompt: str) -> Reply:
    started = time.perf_counter()
    first = last = 0.0
    pieces: list[str] = []
    tokens = 0
    body = {
        "model": SMOLLM,
        "messages": _messages(prompt),
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.stream("POST", "/openai/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
                pieces.append(chunk["choices"][0]["delta"]["content"])
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    return Reply("".join(pieces), tokens, first - started, last - started)


async def embed_ms(client: AsyncClient, model: str, text: str) -> float:
    started = time.perf_counter()
    await client.models.infer(model, text)
    return (time.perf_counter() - started) * 1000


def p50(values: list[float]) -> float:
    return statistics.median(values)


def ttft_ratio(reference: list[Reply], replies: list[Reply]) -> float:
    """The median over prompts of the reference's time to first token over ``replies``'."""
    return p50([a.first / b.first for a, b in zip(reference, replies, strict=True) if b.first])


def decode_rate(replies: list[Reply]) -> float:
    """Tokens after the first over the time they took, over all replies."""
    tokens = sum(r.tokens - 1 for r in replies if r.tokens > 1)
    seconds = sum(r.total - r.first for r in replies if r.tokens > 1)
    return tokens / seconds if seconds else float("nan")


def _repository(root: Path, source: Path) -> Path:
    root.mkdir(parents=True)
    for name in (SMOLLM, MINILM):
        (root / name).symlink_to((source / name).resolve(), target_is_directory=True)
    return root


def _add_remote(models: Path, name: str, base_url: str, model: str, task: str) -> None:
    command = [sys.executable, "-m", "taskorch", "models", "add-remote", name]
    command += ["--base-url", base_url, "--model", model, "--task", task]
    subprocess.run([*command, "--models-dir", str(models)], check=True, capture_output=True)


async def measure(first: ServerProcess, second: ServerProcess, prompts: int) -> None:
    chosen = [PROMPTS[i % len(PROMPTS)] for i in range(prompts)]
    async with (
        AsyncClient(first.grpc_addr, timeout=300) as direct,
        AsyncClient(second.grpc_addr, timeout=300) as relayed,
        httpx.AsyncClient(base_url=first.http_url, timeout=300) as http,
        openai.AsyncOpenAI(
            base_url=f"{first.http_url}/openai/v1", api_key="unused", max_retries=0
        ) as oai,
    ):
        paths = {
            "generate": lambda p: generate(direct, SMOLLM, p),
            "generate_rest": lambda p: generate_rest(http, p),
            "openai_http": lambda p: chat_completion_http(http, p),
            "openai": lambda p: chat_completion(oai, p),
            "remote": lambda p: generate(relayed, "remote-smollm", p),
        }
        results: dict[str, list[Reply]] = {name: [] for name in paths}
        for path in paths.values():  # warm up every path (sessions, connections, caches)
            await path(chosen[0])
        with Steal() as steal:
            for n, prompt in enumerate(chosen):
                order = list(paths)
                order = order[n % len(order) :] + order[: n % len(order)]  # rotate who is first
                replies = {name: await paths[name](prompt) for name in order}
                texts = {r.text for r in replies.values()}
                assert len(texts) == 1, f"greedy replies differ for {prompt!r}: {replies}"
                for name, reply in replies.items():
                    results[name].append(reply)
            local_ms, remote_ms = [], []
            for n in range(60):
                text = f"A short sentence number {n} to embed."
                if n % 2:
                    remote_ms.append(await embed_ms(relayed, "remote-minilm", text))
                    local_ms.append(await embed_ms(direct, MINILM, text))
                else:
                    local_ms.append(await embed_ms(direct, MINILM, text))
                    remote_ms.append(await embed_ms(relayed, "remote-minilm", text))

    base = results["generate"]
    rest = results["generate_rest"]
    rows = [
        (
            "path",
            "TTFT p50 ms",
            "decode tokens/s",
            "TTFT vs Generate (gRPC / REST)",
            "tokens/s vs Generate (gRPC / REST)",
        )
    ]
    for name, label in (
        ("generate", "ModelService.Generate, gRPC"),
        ("generate_rest", "Generate as REST SSE, Envoy"),
        ("openai_http", "OpenAI chat/completions stream, Envoy, httpx"),
        ("openai", "the same, official openai client"),
        ("remote", "Generate of a provider: openai model"),
    ):
        replies = results[name]
        rows.append(
            (
                label,
                f"{p50([r.first for r in replies]) * 1000:.1f}",
                f"{decode_rate(replies):.1f}",
                f"{ttft_ratio(base, replies):.3f}x / {ttft_ratio(rest, replies):.3f}x",
                f"{decode_rate(replies) / decode_rate(base):.3f}x / "
                f"{decode_rate(replies) / decode_rate(rest):.3f}x",
            )
        )
    print(table(rows))
    tokens = [r.tokens for r in base]
    print(
        f"\n{len(chosen)} prompts, {min(tokens)}-{max(tokens)} tokens each, replies equal on "
        "all paths. TTFT ratio: the median over prompts of Generate's TTFT over the path's "
        "(paired, so higher is better); tokens/s: all replies' tokens after the first over "
        "their decode time. Goal: the OpenAI API >= 0.95x Generate on both. "
        f"{steal.cores:.2f} cores stolen by the hypervisor meanwhile."
    )
    extra_first = p50([r.first - g.first for g, r in zip(base, results["remote"], strict=True)])
    print(
        f"\nRemote provider overhead: embedding p50 {p50(local_ms):.2f} ms direct, "
        f"{p50(remote_ms):.2f} ms through the remote model (+{p50(remote_ms) - p50(local_ms):.2f}"
        f" ms per request); first token {extra_first * 1000:+.1f} ms (median of paired "
        "differences)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default = Path(os.environ.get("TASKORCH_MODELS_DIR") or "var/models")
    parser.add_argument("--models-dir", type=Path, default=default)
    parser.add_argument("--prompts", type=int, default=16)
    options = parser.parse_args()
    print(f"machine: {machine()}; {grpc_machine()}\n")
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-openai-") as workdir:
        root = Path(workdir)
        first = ServerProcess(
            workdir=root,
            database_url=sqlite_url(root / "first.db"),
            models_dir=_repository(root / "first-models", options.models_dir),
            gateway=True,
            args=("--log-level", "warning"),
        )
        remote_models = root / "second-models"
        remote_models.mkdir()
        second = ServerProcess(
            workdir=root / "second",
            database_url=sqlite_url(root / "second.db"),
            models_dir=remote_models,
            args=("--log-level", "warning"),
        )
        (root / "second").mkdir()
        first.start()
        try:
            base_url = f"{first.http_url}/openai/v1"
            _add_remote(remote_models, "remote-smollm", base_url, SMOLLM, "text_generation")
            _add_remote(remote_models, "remote-minilm", base_url, MINILM, "feature_extraction")
            second.start()
            try:
                asyncio.run(measure(first, second, options.prompts))
            finally:
                second.stop()
        finally:
            first.stop()


if __name__ == "__main__":
    main()
