"""Served int8 embeddings against the float model's raw ONNX Runtime limit, in one run (not a test).

The CPU fast path of ``taskorch models import --quantize int8``: MiniLM-L6's int8 variant
(``all-minilm-l6-v2-int8``, from ``taskorch models defaults``) served over gRPC at concurrency
32, against the float model (``all-minilm-l6-v2``) straight on ONNX Runtime in process at its
best batch (16, 32 or 64; one session using every core, or one-thread sessions side by side as
the server's batching instances run: the best of all of them is the round's limit). The int8
model's own raw limit and the float model served at the same concurrency are measured too, in
``--rounds`` rounds (the machine's speed drifts, so each served figure is divided by the raw
figure of its own round, the float limit measured before and after the served runs and the
higher kept). Goal: served int8 >= 1.5x the float raw limit. CPU per sentence (raw: this
process; served: the server process per request) is printed too: it moves little when other
work shares the machine, which the rates do.

Quality: the int8 model's stored check (``quantization_check`` in its model.yaml) and the
cosine of served int8 embeddings against raw float ones on the benchmark's sentences.

The client (h2load when installed, else a grpc.aio client in this process, whose own CPU then
competes with the server's on a small machine), the server and ONNX Runtime share this
machine's cores. Usage: ``python bench/quantized_served.py [--models-dir var/models]
[--rounds 3] [--seconds 3]`` after ``taskorch models defaults``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from _harness import (
    Steal,
    Target,
    cpu_seconds,
    grpc_frame,
    h2load,
    percentile,
    table,
    taskorch_server,
)
from _harness import machine as grpc_machine
from inference_raw import SENTENCES, RawEmbedder, machine

from taskorch.inference.config import load_model_config
from taskorch.v1 import model_service_pb2 as pb
from taskorch.v1 import model_service_pb2_grpc as pb_grpc

FLOAT = "all-minilm-l6-v2"
INT8 = "all-minilm-l6-v2-int8"
BATCHES = (16, 32, 64)
CONCURRENCY = 32
GOAL = 1.5
Measured = tuple[float, list[float]]  # (requests/s, latencies in s)


def raw_limit(embedder: RawEmbedder, seconds: float) -> tuple[float, float]:
    """(sentences/s at the best batch, one session or side-by-side sessions; the lowest CPU ms
    per sentence of those configurations, this process's CPU while each ran)."""
    rates: list[float] = []
    cpu: list[float] = []
    for batch in BATCHES:
        for side_by_side in (False, True):
            used, wall = time.process_time(), time.perf_counter()
            if side_by_side:
                rate = embedder.measure_side_by_side(batch, seconds)
            else:
                rate = embedder.measure(batch, seconds)[0]
            rates.append(rate)
            cpu.append((time.process_time() - used) * 1e3 / (rate * (time.perf_counter() - wall)))
    return max(rates), min(cpu)


async def served_python(
    stub: pb_grpc.ModelServiceStub, model: str, concurrency: int, seconds: float
) -> Measured:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = 0

    async def client() -> None:
        nonlocal counter
        while time.perf_counter() < deadline:
            counter += 1
            request = pb.InferRequest(model_name=model, task_type="feature_extraction")
            request.inputs.string_value = SENTENCES[counter % len(SENTENCES)]
            started = time.perf_counter()
            await stub.Infer(request)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


def served_h2load(addr: str, model: str, concurrency: int, seconds: float, work: Path) -> Measured:
    request = pb.InferRequest(model_name=model, task_type="feature_extraction")
    request.inputs.string_value = SENTENCES[0]
    body = work / f"{model}.bin"
    body.write_bytes(grpc_frame(request.SerializeToString()))
    target = Target(
        name=f"Infer {model} c{concurrency}",
        url=f"http://{addr}/taskorch.v1.ModelService/Infer",
        body=body,
        headers=("content-type: application/grpc", "te: trailers"),
        grpc_method="/taskorch.v1.ModelService/Infer",
    )
    return h2load(target, concurrency=concurrency, seconds=seconds, log=work / "h2load.log")


def spread(values: list[float], fmt: str) -> str:
    middle = format(statistics.median(values), fmt)
    if len(values) < 2:
        return middle
    return f"{middle} ({format(min(values), fmt)} to {format(max(values), fmt)})"


def raw_float_embeddings(embedder: RawEmbedder, texts: list[str]) -> np.ndarray:
    encodings = embedder.tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    types = np.array([e.type_ids for e in encodings], dtype=np.int64)
    hidden = embedder.session.run(
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    )["last_hidden_state"]
    pooled = (hidden * mask[..., None]).sum(1) / mask[..., None].sum(1)
    return np.asarray(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("TASKORCH_MODELS_DIR") or "var/models")
    parser.add_argument("--models-dir", type=Path, default=default)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    args = parser.parse_args()
    models: Path = args.models_dir.resolve()
    seconds: float = args.seconds
    use_h2load = shutil.which("h2load") is not None
    print(f"machine: {machine()}; {grpc_machine()}")
    int8_config = load_model_config(models / INT8)
    check = int8_config.quantization_check
    float_raw = RawEmbedder(models / FLOAT)
    int8_raw = RawEmbedder(models / INT8, int8_config.onnx_file)
    with (
        tempfile.TemporaryDirectory() as scratch,
        tempfile.TemporaryDirectory(prefix="taskorch-bench-models-") as repo,
    ):
        for name in (FLOAT, INT8):  # a repository with just the two (no generation model)
            (Path(repo) / name).symlink_to(models / name, target_is_directory=True)
        with taskorch_server("--models-dir", repo, "--workers", "4") as server:
            channel = grpc.aio.insecure_channel(server.grpc_addr)
            stub = pb_grpc.ModelServiceStub(channel)

            async def served(model: str) -> Measured:
                if use_h2load:
                    return served_h2load(
                        server.grpc_addr, model, CONCURRENCY, seconds, Path(scratch)
                    )
                return await served_python(stub, model, CONCURRENCY, seconds)

            for model in (FLOAT, INT8):  # warm up
                await served_python(stub, model, 8, 1.0)
            sample = SENTENCES[:16]
            answers = [(await stub.Infer(_request(INT8, text))).embedding for text in sample]
            served_int8 = np.asarray([list(a) for a in answers])
            reference = raw_float_embeddings(float_raw, sample)
            cosines = (served_int8 * reference).sum(1) / np.linalg.norm(served_int8, axis=1)
            rounds: list[dict[str, float]] = []
            latencies: dict[str, list[float]] = {FLOAT: [], INT8: []}
            assert server.proc is not None
            pid = server.proc.pid
            for number in range(args.rounds):
                # The float limit is measured before and after the served runs and the higher
                # figure kept: other work on the machine moves speeds within a round.
                figures: dict[str, float] = {}
                with Steal() as steal:
                    first, figures["float raw cpu"] = raw_limit(float_raw, seconds)
                    for model, key in ((INT8, "int8 served"), (FLOAT, "float served")):
                        used, wall = cpu_seconds(pid), time.perf_counter()
                        rate, times = await served(model)
                        requests = rate * (time.perf_counter() - wall)
                        figures[key] = rate
                        figures[f"{key} cpu"] = (cpu_seconds(pid) - used) * 1e3 / requests
                        latencies[model] += times
                    figures["int8 raw"], figures["int8 raw cpu"] = raw_limit(int8_raw, seconds)
                    second, _ = raw_limit(float_raw, seconds)
                figures["float raw"] = max(first, second)
                figures["steal"] = steal.cores
                rounds.append(figures)
                print(f"  round {number + 1} of {args.rounds} measured", flush=True)
            await channel.close()

    def rates(key: str) -> list[float]:
        return [r[key] for r in rounds]

    def ratios(key: str) -> list[float]:
        return [r[key] / r["float raw"] for r in rounds]

    client = "h2load" if use_h2load else "grpc.aio client in process"
    tokens = len(float_raw.tokenizer.encode(SENTENCES[0]).ids)
    rows = [(f"MiniLM-L6 embeddings ({tokens} tokens)", "sentences/s", "p50 / p99", "vs float raw")]
    rows.append(
        ("float, raw ORT, best batch (the limit)", spread(rates("float raw"), ",.0f"), "", "1.00")
    )
    rows.append(
        (
            "int8, raw ORT, best batch",
            spread(rates("int8 raw"), ",.0f"),
            "",
            spread(ratios("int8 raw"), ".2f"),
        )
    )
    for model, key in ((FLOAT, "float served"), (INT8, "int8 served")):
        times = latencies[model]
        rows.append(
            (
                f"{key.split()[0]}, served gRPC Infer, {client}, concurrency {CONCURRENCY}",
                spread(rates(key), ",.0f"),
                f"{percentile(times, 50) * 1e3:.1f} / {percentile(times, 99) * 1e3:.1f} ms",
                spread(ratios(key), ".2f"),
            )
        )
    print(table(rows))
    print(f"(median over {len(rounds)} rounds, range in brackets; each ratio uses its round's raw)")
    verdict = "meets" if statistics.median(ratios("int8 served")) >= GOAL else "misses"
    print(
        f"served int8 / float raw limit: {spread(ratios('int8 served'), '.2f')}x "
        f"({verdict} the {GOAL}x goal)"
    )
    if check is not None:
        print(f"stored int8 check: {check.summary()}")
    print(
        f"served int8 vs raw float embeddings, {len(cosines)} bench sentences: cosine mean "
        f"{cosines.mean():.4f}, min {cosines.min():.4f}"
    )
    print(
        "CPU ms per sentence (insensitive to other work on the machine): float raw "
        f"{spread(rates('float raw cpu'), '.2f')}, int8 raw {spread(rates('int8 raw cpu'), '.2f')}"
        f"; served, the server process per request: int8 {spread(rates('int8 served cpu'), '.2f')}"
        f", float {spread(rates('float served cpu'), '.2f')} (the client's CPU not counted); "
        "float raw / int8 served = "
        + spread([r["float raw cpu"] / r["int8 served cpu"] for r in rounds], ".2f")
        + "x (the share of the float limit int8 serving reaches with every core busy)"
    )
    print("cores the hypervisor took (steal): " + spread(rates("steal"), ".2f"))


def _request(model: str, text: str) -> pb.InferRequest:
    request = pb.InferRequest(model_name=model, task_type="feature_extraction")
    request.inputs.string_value = text
    return request


if __name__ == "__main__":
    asyncio.run(main())
