"""Served inference against raw ONNX Runtime in the same run (not a test).

1. MiniLM-L6 embeddings, in ``--rounds`` interleaved rounds (the machine's speed drifts, so
   each served figure is compared with the raw figures of its own round): raw ONNX Runtime in
   process at batch 1 and at batch 16, 32 and 64, on one session using every core and on
   one-thread sessions side by side (one per core, as the server's batching instances; the
   best of all of them is the round's limit), then
   ModelService.Infer over gRPC at concurrency 1, 8 and 32 (the server batches concurrent
   requests dynamically), twice: from a Python grpc.aio client (what an SDK user sees) and from
   h2load sending the same gRPC frames (a C client: on two cores the Python client's own CPU
   otherwise decides the result). Ratios, per round then the median and range over rounds:
   served throughput / raw best-batch throughput, and served batch-1 p50 latency minus raw
   batch-1 p50, from alternating one-second slices of raw batch 1 and served concurrency 1.
   A second server on asyncio's own event loop (``--event-loop asyncio``) is measured at the
   top concurrency and at 1 right after the default uvloop one. Figures that steal cannot
   move: CPU per sentence of the raw side-by-side sessions against the server's CPU per
   request (and its event loop's share), and an empty grpc.aio call on uvloop (server CPU per
   call, p50 at concurrency 1): the floor any Python gRPC server here pays. The CPU the
   hypervisor took from this VM (steal) while raw and served ran is printed too.
   A peer in the same rounds: the bare Infer server (bench/_bare_infer_server.py: grpc.aio on
   uvloop, tokenise, batch on the same instances, answer; nothing else) at the top
   concurrency and at 1: the most this design can reach on this machine.
2. SmolLM2-135M generation: a plain single-sequence ORT loop in process, then
   ModelService.Generate over gRPC at concurrency 1 and 4 (continuous batching): aggregate
   tokens/s and time to first token, as ratios to the plain loop.

The client, the server and ONNX Runtime share this machine's cores. Usage:
``python bench/inference_served.py [--models-dir var/models] [--rounds 3]`` after
``taskorch models defaults``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from _harness import (
    Steal,
    Target,
    bare_infer_server,
    cpu_seconds,
    empty_server_process,
    grpc_frame,
    h2load,
    percentile,
    table,
    taskorch_server,
)
from _harness import machine as grpc_machine
from inference_raw import NEW_TOKENS, PROMPTS, SENTENCES, RawEmbedder, machine, plain_generation

from taskorch.v1 import model_service_pb2 as pb
from taskorch.v1 import model_service_pb2_grpc as pb_grpc

MINILM = "all-minilm-l6-v2"
SMOLLM = "smollm2-135m-instruct"
BATCHES = (16, 32, 64)  # raw batch sizes tried for the round's best
CONCURRENCY = (1, 8, 32)
SLICES = 4  # alternating raw / served slices per round for the batch-1 latency added
Measured = tuple[float, list[float]]  # (requests/s, latencies in s)


@dataclass
class Round:
    """One round's raw and served figures."""

    raw: dict[int, tuple[float, float]]  # batch: (sentences/s, p50 ms), one session
    lanes: int  # one-thread sessions side by side
    side: dict[int, float]  # batch: sentences/s of those sessions
    python: dict[int, Measured]
    h2load: dict[int, Measured]
    # Batch-1 p50 added by serving, one figure per slice: raw batch 1 and served concurrency 1
    # measured in alternating one-second slices (the machine's speed moves within seconds).
    added: dict[str, list[float]]
    # h2load at the top concurrency and at 1 against the same server run on asyncio's own
    # event loop (--event-loop asyncio), measured right after the default (uvloop) server's.
    on_asyncio: dict[int, Measured]
    steal: tuple[float, float]  # cores the hypervisor took: (raw, served) measurements
    # CPU ms per sentence of the side-by-side sessions at each batch size (this process's
    # CPU while they ran), and per request of the server at the top concurrency from h2load:
    # (whole process, its event loop thread).
    side_cpu: dict[int, float]
    served_cpu: tuple[float, float]
    # An empty grpc.aio call on uvloop (the server's loop) from h2load: its server CPU ms per
    # call at the top concurrency and its p50 ms at concurrency 1: what any Python gRPC
    # server here pays before doing anything.
    floor: tuple[float, float]
    # The bare Infer server from h2load at the top concurrency, and its CPU ms per request.
    bare: Measured
    bare_cpu: float

    @property
    def raw_cpu(self) -> float:
        """CPU ms per sentence of the side-by-side sessions at their fastest batch size."""
        return self.side_cpu[max(self.side, key=lambda b: self.side[b])]

    @property
    def floor_ratio(self) -> float:
        """The best share of the limit a server could reach that paid only the empty call's
        CPU per request on top of the model's, with every core busy."""
        return self.raw_cpu / (self.raw_cpu + self.floor[0])

    @property
    def cpu_ratio(self) -> float:
        """Raw CPU per sentence / served CPU per request: the share of the limit the server
        could reach with every core busy (steal-proof)."""
        return self.raw_cpu / self.served_cpu[0]

    @property
    def best(self) -> tuple[str, float]:
        """The round's limit: (which configuration, sentences/s)."""
        candidates = [(f"{b}", self.raw[b][0]) for b in BATCHES]
        candidates += [(f"{b} x{self.lanes}", self.side[b]) for b in BATCHES]
        return max(candidates, key=lambda c: c[1])

    def ratio(self, client: str, concurrency: int) -> float:
        return getattr(self, client)[concurrency][0] / self.best[1]

    def overhead_ms(self, client: str) -> float:
        return statistics.median(self.added[client])


def spread(values: list[float], fmt: str) -> str:
    """The median, and the range when there is more than one value."""
    middle = format(statistics.median(values), fmt)
    if len(values) < 2:
        return middle
    return f"{middle} ({format(min(values), fmt)} to {format(max(values), fmt)})"


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


def with_server_cpu(pid: int, run: Callable[[], Measured]) -> tuple[Measured, float, float]:
    """Runs one h2load measurement against the server process ``pid``; returns it with the
    server's CPU ms per request, whole process and its main thread (the event loop). h2load's
    warm-up second runs at the same load: CPU rate over the call / request rate."""
    process, loop, started = cpu_seconds(pid), cpu_seconds(pid, pid), time.perf_counter()
    measured = run()
    per_request = 1e3 / ((time.perf_counter() - started) * measured[0])
    return (
        measured,
        (cpu_seconds(pid) - process) * per_request,
        (cpu_seconds(pid, pid) - loop) * per_request,
    )


def empty_call_floor(target: str, pid: int, workdir: Path, seconds: float) -> tuple[float, float]:
    """(server CPU ms per call at the top concurrency, p50 ms at concurrency 1) of the empty
    grpc.aio method, from h2load."""
    body = workdir / "empty.bin"
    body.write_bytes(grpc_frame(b""))
    call = Target(
        name="empty call",
        url=f"http://{target}/bench.Empty/Call",
        body=body,
        headers=("content-type: application/grpc", "te: trailers"),
    )
    log = workdir / "empty.log"
    _, per_call, _ = with_server_cpu(
        pid, lambda: h2load(call, concurrency=CONCURRENCY[-1], seconds=seconds, log=log)
    )
    _, latencies = h2load(call, concurrency=1, seconds=seconds, log=log)
    return per_call, percentile(latencies, 50) * 1e3


async def batch1_added(
    embedder: RawEmbedder,
    stub: pb_grpc.ModelServiceStub,
    server_addr: str,
    bare_addr: str,
    workdir: Path,
    slices: int = SLICES,
) -> dict[str, list[float]]:
    """Milliseconds serving adds to the batch-1 p50, per slice: each client's served p50 at
    concurrency 1 minus the raw batch-1 p50 of the slice just before it (``bare``: the bare
    Infer server from h2load)."""

    async def python() -> list[float]:
        return (await served_embeddings(stub, 1, 1.0))[1]

    async def h2load_to(addr: str) -> list[float]:
        return served_embeddings_h2load(addr, 1, workdir, 1.0)[1]

    clients: dict[str, Callable[[], Awaitable[list[float]]]] = {
        "python": python,
        "h2load": lambda: h2load_to(server_addr),
        "bare": lambda: h2load_to(bare_addr),
    }
    added: dict[str, list[float]] = {client: [] for client in clients}
    for _ in range(slices):
        for client, measure in clients.items():
            raw_p50 = embedder.measure(1, 1.0)[1]
            added[client].append(percentile(await measure(), 50) * 1e3 - raw_p50)
    return added


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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved embedding rounds")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    args = parser.parse_args()
    models: Path = args.models_dir.resolve()
    seconds: float = args.seconds
    print(f"machine: {machine()}; {grpc_machine()}")

    embedder = RawEmbedder(models / MINILM)
    plain_rate, plain_ttft = plain_generation(models / SMOLLM)
    rounds: list[Round] = []
    with (
        taskorch_server("--models-dir", str(models), "--workers", "4") as server,
        taskorch_server(
            "--models-dir", str(models), "--workers", "4", "--event-loop", "asyncio"
        ) as asyncio_server,
        empty_server_process("uvloop") as (empty_target, empty_pid),
        bare_infer_server(models / MINILM) as (bare_target, bare_pid),
        tempfile.TemporaryDirectory() as scratch,
    ):
        channel = grpc.aio.insecure_channel(server.grpc_addr)
        stub = pb_grpc.ModelServiceStub(channel)
        await served_embeddings(stub, 8, seconds=1.0)  # warm up
        top = CONCURRENCY[-1]
        for warm in (asyncio_server.grpc_addr, bare_target):
            served_embeddings_h2load(warm, top, Path(scratch), 1.0)  # warm up
        for number in range(args.rounds):
            with Steal() as raw_steal:
                raw = {batch: embedder.measure(batch, seconds) for batch in (1, *BATCHES)}
                side, side_cpu = {}, {}
                for batch in BATCHES:
                    cpu, wall = time.process_time(), time.perf_counter()
                    side[batch] = embedder.measure_side_by_side(batch, seconds)
                    sentences = side[batch] * (time.perf_counter() - wall)
                    side_cpu[batch] = (time.process_time() - cpu) * 1e3 / sentences
            with Steal() as served_steal:
                python = {c: await served_embeddings(stub, c, seconds) for c in CONCURRENCY}
                native = {
                    c: served_embeddings_h2load(server.grpc_addr, c, Path(scratch), seconds)
                    for c in CONCURRENCY[:-1]
                }
                assert server.proc is not None
                pid = server.proc.pid  # the event loop runs on its main thread
                native[top], process_cpu, loop_cpu = with_server_cpu(
                    pid,
                    lambda: served_embeddings_h2load(server.grpc_addr, top, Path(scratch), seconds),
                )
                on_asyncio = {
                    c: served_embeddings_h2load(asyncio_server.grpc_addr, c, Path(scratch), seconds)
                    for c in (top, 1)
                }
                bare, bare_cpu, _ = with_server_cpu(
                    bare_pid,
                    lambda: served_embeddings_h2load(bare_target, top, Path(scratch), seconds),
                )
            added = await batch1_added(embedder, stub, server.grpc_addr, bare_target, Path(scratch))
            floor = empty_call_floor(empty_target, empty_pid, Path(scratch), seconds)
            steal = (raw_steal.cores, served_steal.cores)
            rounds.append(
                Round(
                    raw,
                    embedder.lanes,
                    side,
                    python,
                    native,
                    added,
                    on_asyncio,
                    steal,
                    side_cpu,
                    (process_cpu, loop_cpu),
                    floor,
                    bare,
                    bare_cpu,
                )
            )
            print(f"  round {number + 1} of {args.rounds} measured", flush=True)
        generation = {c: await served_generation(stub, c) for c in (1, 4)}
        await channel.close()

    def latencies(client: str, concurrency: int) -> list[float]:
        return [t for r in rounds for t in getattr(r, client)[concurrency][1]]

    def rates(client: str, concurrency: int) -> list[float]:
        return [getattr(r, client)[concurrency][0] for r in rounds]

    provider = embedder.provider
    best_batches = sorted({r.best[0] for r in rounds})
    best_single = "/".join(
        sorted({str(max(BATCHES, key=lambda b, r=r: r.raw[b][0])) for r in rounds}, key=int)
    )
    tokens = len(embedder.tokenizer.encode(SENTENCES[0]).ids)
    rows = [(f"embeddings (MiniLM-L6, {tokens} tokens)", "sentences/s", "p50 / p99", "ratio")]
    rows.append(
        (
            f"raw ORT, batch 1 ({provider})",
            spread([r.raw[1][0] for r in rounds], ",.0f"),
            f"{statistics.median(r.raw[1][1] for r in rounds):.1f} ms",
            "",
        )
    )
    rows.append(
        (
            f"raw ORT, best batch, one session ({best_single})",
            spread([max(r.raw[b][0] for b in BATCHES) for r in rounds], ",.0f"),
            "",
            spread([max(r.raw[b][0] for b in BATCHES) / r.best[1] for r in rounds], ".2f"),
        )
    )
    rows.append(
        (
            f"raw ORT, best batch, {embedder.lanes} one-thread sessions side by side",
            spread([max(r.side.values()) for r in rounds], ",.0f"),
            "",
            spread([max(r.side.values()) / r.best[1] for r in rounds], ".2f"),
        )
    )
    rows.append(
        (
            f"raw ORT, the round's limit ({'/'.join(best_batches)})",
            spread([r.best[1] for r in rounds], ",.0f"),
            "",
            "1.00",
        )
    )
    for client, label in (("python", "Python client"), ("h2load", "h2load")):
        for concurrency in CONCURRENCY:
            times = latencies(client, concurrency)
            rows.append(
                (
                    f"served gRPC Infer, {label}, concurrency {concurrency}",
                    spread(rates(client, concurrency), ",.0f"),
                    f"{percentile(times, 50) * 1e3:.1f} / {percentile(times, 99) * 1e3:.1f} ms",
                    spread([r.ratio(client, concurrency) for r in rounds], ".2f")
                    + " of best batch",
                )
            )
    bare_times = [t for r in rounds for t in r.bare[1]]
    rows.append(
        (
            f"peer: bare grpc.aio Infer server, h2load, concurrency {top}",
            spread([r.bare[0] for r in rounds], ",.0f"),
            f"{percentile(bare_times, 50) * 1e3:.1f} / {percentile(bare_times, 99) * 1e3:.1f} ms",
            spread([r.bare[0] / r.best[1] for r in rounds], ".2f") + " of best batch",
        )
    )
    for concurrency in (1, top):
        times = [t for r in rounds for t in r.on_asyncio[concurrency][1]]
        rows.append(
            (
                f"served gRPC Infer, h2load, concurrency {concurrency}, on asyncio's loop",
                spread([r.on_asyncio[concurrency][0] for r in rounds], ",.0f"),
                f"{percentile(times, 50) * 1e3:.1f} / {percentile(times, 99) * 1e3:.1f} ms",
                "uvloop's rate "
                + spread(
                    [r.h2load[concurrency][0] / r.on_asyncio[concurrency][0] for r in rounds],
                    ".2f",
                )
                + "x",
            )
        )
    for client, label in (
        ("python", "Python client"),
        ("h2load", "h2load"),
        ("bare", "peer: bare server, h2load"),
    ):
        rows.append(
            (
                f"batch-1 latency added, {label} (served p50 - raw p50, {SLICES} slices/round)",
                "",
                spread([r.overhead_ms(client) for r in rounds], "+.1f") + " ms",
                "",
            )
        )
    print(table(rows))
    print(f"(median over {len(rounds)} rounds, range in brackets; each ratio uses its round's raw)")
    print(
        f"CPU per sentence: raw {spread([r.raw_cpu for r in rounds], '.2f')} ms "
        f"(side by side, fastest batch); served Infer at concurrency {top} (h2load) "
        f"{spread([r.served_cpu[0] for r in rounds], '.2f')} ms per request, of which the "
        f"event loop {spread([r.served_cpu[1] for r in rounds], '.2f')} ms; raw / served "
        f"{spread([r.cpu_ratio for r in rounds], '.2f')} (the share of the limit reachable "
        "with every core busy)"
    )
    print(
        f"an empty grpc.aio call on uvloop (h2load): "
        f"{spread([r.floor[0] for r in rounds], '.2f')} ms server CPU per call at concurrency "
        f"{top}, p50 {spread([r.floor[1] for r in rounds], '.2f')} ms at concurrency 1; a "
        "server paying only that per request above the model could reach "
        f"{spread([r.floor_ratio for r in rounds], '.2f')} of the limit with every core busy"
    )
    print(
        f"taskorch against the bare Infer server at concurrency {top} (h2load): "
        f"{spread([r.h2load[top][0] / r.bare[0] for r in rounds], '.2f')} of its requests/s; "
        f"its CPU per request {spread([r.bare_cpu for r in rounds], '.2f')} ms (raw / bare "
        f"{spread([r.raw_cpu / r.bare_cpu for r in rounds], '.2f')})"
    )
    print(
        "cores the hypervisor took (steal) while raw ran: "
        + spread([r.steal[0] for r in rounds], ".2f")
        + "; while served ran: "
        + spread([r.steal[1] for r in rounds], ".2f")
    )
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
