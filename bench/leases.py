"""Lease throughput: take + complete per second with 1, 4 and 16 concurrent workers.

A server with no in-process workers is filled with queued subtasks; then N workers (each an
asyncio loop over its own gRPC channel, as separate worker processes would be) repeat
WorkerService.Take → Complete until the queue is empty. Printed against the raw gRPC
ceiling measured in the same run (one lease costs two RPCs, so the physical limit is half
the ceiling). Usage: ``python bench/leases.py [--subtasks 3000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
from _harness import empty_server, machine, percentile, raw_unary_rate, table, taskorch_server

from taskorch.client import AsyncClient
from taskorch.v1 import worker_service_pb2 as pb
from taskorch.v1 import worker_service_pb2_grpc as pb_grpc


async def fill(client: AsyncClient, count: int) -> None:
    made = 0

    async def submitter() -> None:
        nonlocal made
        while made < count:
            made += 1
            await client.create_task(task_type="echo", input_data={"n": made})

    await asyncio.gather(*(submitter() for _ in range(32)))


async def drain(target: str, workers: int, count: int) -> tuple[float, list[float]]:
    """Leases/s and take→complete latencies until ``count`` leases were completed."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(workers)]
    done = 0
    latencies: list[float] = []

    async def worker(index: int) -> None:
        nonlocal done
        stub = pb_grpc.WorkerServiceStub(channels[index])
        take = pb.TakeRequest(worker_id=f"bench-{index}", kinds=["echo"], lease_seconds=60)
        while done < count:
            started = time.perf_counter()
            try:
                subtask = await stub.Take(take)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return
                raise
            complete = pb.CompleteRequest(subtask_id=subtask.subtask_id, lease_id=subtask.lease_id)
            complete.result.update({"ok": True})
            await stub.Complete(complete)
            latencies.append(time.perf_counter() - started)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    return done / elapsed, latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subtasks", type=int, default=3000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with empty_server() as target:
        ceiling = await raw_unary_rate(target)
    rows = [("workers", "leases/s (take+complete)", "latency p50 / p99", "ratio to ceiling/2")]
    for workers in (1, 4, 16):
        with taskorch_server("--workers", "0") as server:
            async with AsyncClient(server.grpc_addr) as client:
                await fill(client, args.subtasks)
            rate, latencies = await drain(server.grpc_addr, workers, args.subtasks)
        rows.append(
            (
                str(workers),
                f"{rate:,.0f}",
                f"{percentile(latencies, 50) * 1e3:.1f} / {percentile(latencies, 99) * 1e3:.1f} ms",
                f"{rate / (ceiling / 2):.2f}",
            )
        )
    print(f"raw empty unary RPC (Python grpc.aio, concurrency 32): {ceiling:,.0f} calls/s")
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())
