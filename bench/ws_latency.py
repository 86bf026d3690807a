"""WebSocket update latency (a task's change -> the client has it) beside the gRPC watch's, in
one run on one server: every task is followed at once by a gRPC ``WatchTask`` stream (direct
to the server) and by a ``/ws/tasks`` subscription through Envoy, so both see the same events
under the same load.

Latency is the client's receive time minus the event's ``created_at`` (stamped by the server
when it stored the change; same machine, same clock). Echo tasks with 5 progress steps over
0.5 s, watched 10 at a time.

    python bench/ws_latency.py [--tasks 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime

import websockets
from _harness import machine, percentile, summary_ms, table, taskorch_server

from taskorch.client import AsyncClient

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
ECHO = {"delay_seconds": 0.5, "progress_steps": 5}


def _seconds_since(stamp: datetime) -> float:
    return (datetime.now(UTC) - stamp).total_seconds()


async def _grpc_watch(client: AsyncClient, task_id: str, into: list[float]) -> None:
    async for event in client.watch_task(task_id):
        if event.type != "SNAPSHOT" and event.created_at is not None:
            into.append(_seconds_since(event.created_at))


async def _ws_watch(url: str, task_id: str, subscribed: asyncio.Event, into: list[float]) -> None:
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"action": "subscribe", "task_id": task_id}))
        subscribed.set()
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] != "update":
                continue
            if message["event"] != "SNAPSHOT":
                stamp = datetime.fromisoformat(message["created_at"].replace("Z", "+00:00"))
                into.append(_seconds_since(stamp))
            if message["status"] in TERMINAL:
                return


async def measure(grpc_addr: str, ws_url: str, tasks: int) -> tuple[list[float], list[float]]:
    grpc_latencies: list[float] = []
    ws_latencies: list[float] = []
    async with AsyncClient(grpc_addr) as client:

        async def one() -> None:
            task = await client.create_task(task_type="echo", input_data=ECHO)
            subscribed = asyncio.Event()
            ws = asyncio.create_task(_ws_watch(ws_url, task.task_id, subscribed, ws_latencies))
            await subscribed.wait()
            await asyncio.gather(_grpc_watch(client, task.task_id, grpc_latencies), ws)

        for batch in range(0, tasks, 10):
            await asyncio.gather(*(one() for _ in range(min(10, tasks - batch))))
    return grpc_latencies, ws_latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with taskorch_server(gateway=True) as server:
        ws_url = f"ws://127.0.0.1:{server.http_port}/ws/tasks"
        grpc_latencies, ws_latencies = await measure(server.grpc_addr, ws_url, args.tasks)
    ratio = percentile(ws_latencies, 50) / percentile(grpc_latencies, 50)
    print(
        table(
            [
                ("change -> client received", "latency", "events"),
                ("gRPC WatchTask (direct)", summary_ms(grpc_latencies), str(len(grpc_latencies))),
                (
                    "WebSocket /ws/tasks (via Envoy)",
                    summary_ms(ws_latencies),
                    str(len(ws_latencies)),
                ),
            ]
        )
    )
    print(f"(WebSocket p50 / gRPC p50: {ratio:.2f}; {args.tasks} echo tasks, 10 at a time)")


if __name__ == "__main__":
    asyncio.run(main())
