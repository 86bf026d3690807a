"""Served inference against raw ONNX Runtime in the same run (not a test).

1. MiniLM-L6 embeddings: raw ONNX Runtime in process at batch 1 and at the best batch size,
   then ModelService.Infer over gRPC at concurrency 1, 8 and 32 (the server batches
   concurrent requests dynamically), twice: from a Python grpc.aio client (what an SDK user
   sees) and from h2load sending the same gRPC frames (a C client: on two cores the Python
   client's own CPU otherwise decides the result). Ratios: served throughput / raw best-batch
   throughput, and served batch-1 p50 latency minus raw batch-1 p50.
2. SmolLM2-135M generation: a plain single-sequence ORT loop in process, then
   ModelService.Generate over gRPC at concurrency 1 and 4 (continuous batching): aggregate
   tokens/s and time to first token, as ratios to the plain loop.

The client, the server and ONNX Runtime share this machine's cores. Usage:
``python bench/inference_served.py [--models-dir var/models]`` after ``taskorch models defaults``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from _harness import Target, grpc_frame, h2load, percentile, table, taskorch_server
from _harness import machine as grpc_machine
from inference_raw import NEW_TOKENS, PROMPTS, SENTENCES, machine, plain_generation, raw_embeddings

from taskorch.v1 import model_service_pb2 as pb
from taskorch.v1 import model_service_pb2_grpc as pb_grpc

MINILM = "all-minilm-l6-v2"
SMOLLM = "smollm2-135m-instruct"


async def served_embeddings(
    stub: pb_grpc.ModelServiceStub, concurrency: int, seconds: float = 4.0
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = 0

    async def client() -> None:
        nonlocal counter
        while time.perf_counter() < deadline:
            counter += 1
            request = pb.InferRequest(model_name=MINILM, task_type="feature_extraction")
            request.inputs.string_value = SENTENCES[counter % len(SENTENCES)]
            started = time.perf_counter()
            await stub.Infer(request)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


def served_embeddings_h2load(
    server_addr: str, concurrency: int, workdir: Path, seconds: float = 4.0
) -> tuple[float, list[float]]:
    """The same Infer calls from h2load (one request in flight per connection)."""
    request = pb.InferRequest(model_name=MINILM, task_type="feature_extraction")
    request.inputs.string_value = SENTENCES[0]
    body = workdir / "infer.bin"
    body.write_bytes(grpc_frame(request.SerializeToString()))
    target = Target(
        name=f"Infer h2load c{concurrency}",
        url=f"http://{server_addr}/taskorch.v1.ModelService/Infer",
        body=body,
        headers=("content-type: application/grpc", "te: trailers"),
        grpc_method="/taskorch.v1.ModelService/Infer",
    )
    return h2load(target, concurrency=concurrency, seconds=seconds, log=workdir / "h2load.log")


async def served_generation(
    stub: pb_grpc.ModelServiceStub, concurrency: int
) -> tuple[float, float]:
    queue = list((PROMPTS * 4)[: max(4, concurrency * 2)])
    tokens = 0
    ttfts: list[float] = []

    async def client() -> None:
        nonlocal tokens
        while queue:
            request = pb.InferRequest(model_name=SMOLLM, task_type="text_generation")
            request.input_data.update({"prompt": queue.pop()})
            request.parameters.update({"max_new_tokens": NEW_TOKENS})
            started = time.perf_counter()
            first = None
            async for event in stub.Generate(request):
                if first is None and event.delta:
                    first = time.perf_counter() - started
                if event.done:
                    tokens += int(event.result["tokens_generated"])
            ttfts.append(first or 0.0)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return tokens / (time.perf_counter() - started), statistics.median(ttfts)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default = Path(os.environ.get("TASKORCH_MODELS_DIR") or "var/models")
    parser.add_argument("--models-dir", type=Path, default=default)
    args = parser.parse_args()
    models: Path = args.models_dir.resolve()
    print(f"machine: {machine()}; {grpc_machine()}")

    raw, provider = raw_embeddings(models / MINILM)
    best_batch = max(raw, key=lambda b: raw[b][0])
    raw_best, raw_batch1_p50 = raw[best_batch][0], raw[1][1]
    plain_rate, plain_ttft = plain_generation(models / SMOLLM)

    with taskorch_server("--models-dir", str(models), "--workers", "4") as server:
        channel = grpc.aio.insecure_channel(server.grpc_addr)
        stub = pb_grpc.ModelServiceStub(channel)
        await served_embeddings(stub, 8, seconds=1.0)  # warm up
        embeddings = {c: await served_embeddings(stub, c) for c in (1, 8, 32)}
        with tempfile.TemporaryDirectory() as scratch:
            native = {
                c: served_embeddings_h2load(server.grpc_addr, c, Path(scratch)) for c in (1, 8, 32)
            }
        generation = {c: await served_generation(stub, c) for c in (1, 4)}
        await channel.close()

    rows = [("embeddings (MiniLM-L6, ~16 tokens)", "sentences/s", "p50 / p99", "ratio")]
    rows.append(
        (f"raw ORT, batch 1 ({provider})", f"{raw[1][0]:,.0f}", f"{raw_batch1_p50:.1f} ms", "")
    )
    rows.append((f"raw ORT, best batch ({best_batch})", f"{raw_best:,.0f}", "", "1.00"))
    for concurrency, (rate, latencies) in embeddings.items():
        rows.append(
            (
                f"served gRPC Infer, concurrency {concurrency}",
                f"{rate:,.0f}",
                f"{percentile(latencies, 50) * 1e3:.1f} / {percentile(latencies, 99) * 1e3:.1f} ms",
                f"{rate / raw_best:.2f} of best batch",
            )
        )
    for concurrency, (rate, latencies) in native.items():
        rows.append(
            (
                f"served gRPC Infer from h2load, concurrency {concurrency}",
                f"{rate:,.0f}",
                f"{percentile(latencies, 50) * 1e3:.1f} / {percentile(latencies, 99) * 1e3:.1f} ms",
                f"{rate / raw_best:.2f} of best batch",
            )
        )
    for client, measured in (("Python client", embeddings), ("h2load", native)):
        overhead = percentile(measured[1][1], 50) * 1e3 - raw_batch1_p50
        rows.append(
            (
                f"batch-1 latency overhead, {client} (served p50 - raw p50)",
                "",
                f"{overhead:+.1f} ms",
                "",
            )
        )
    print(table(rows))
    print()
    gen_rows = [("generation (SmolLM2-135M, greedy)", "tokens/s", "TTFT p50", "ratio")]
    gen_rows.append(
        ("raw ORT loop, 1 sequence", f"{plain_rate:.1f}", f"{plain_ttft * 1e3:.0f} ms", "1.00")
    )
    for concurrency, (rate, ttft) in generation.items():
        gen_rows.append(
            (
                f"served gRPC Generate, concurrency {concurrency}",
                f"{rate:.1f}",
                f"{ttft * 1e3:.0f} ms",
                f"{rate / plain_rate:.2f}",
            )
        )
    print(table(gen_rows))


if __name__ == "__main__":
    asyncio.run(main())
