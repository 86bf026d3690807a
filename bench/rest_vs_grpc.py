"""REST through Envoy against direct gRPC: the same calls, the same load generator, one run.

Calls: GetTask of an existing task, and CreateTask of a text-analysis task. Paths:
- gRPC: h2load sending raw gRPC frames straight to the server's port;
- REST: h2load to Envoy (h2c, and HTTP/1.1) at GET /v1/tasks/{id} and POST /v1/tasks {text};
- gRPC passthrough: the same gRPC frames through Envoy's port (what the proxy hop alone costs).
Concurrency 1 and 32 (connections with one request in flight each). Every path of a case is run
``--repeats`` times in alternating order (A B C D, D C B A, ...); rates are the mean, p50/p99
come from every request of those runs. After each CreateTask run the server's queue drains
before the next run starts. Each call's result is checked: all HTTP 2xx, and for gRPC the
server's own count of OK answers of that method rose by at least the requests h2load counted.

Usage: python bench/rest_vs_grpc.py [--seconds 5] [--repeats 2] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from _harness import Target, grpc_frame, h2load, machine, percentile, table, taskorch_server

from taskorch.gateway.launcher import envoy_binary
from taskorch.v1 import task_service_pb2 as pb
from tests.servers import ServerProcess

TEXT = "Multimodal is building AI-powered tools to automate complex tasks."
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
JSON_HEADERS = ("content-type: application/json",)


@dataclass
class Measured:
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds

    @property
    def rate(self) -> float:
        return sum(self.rates) / len(self.rates)

    def cell(self) -> str:
        p50 = percentile(self.latencies, 50) * 1e3
        p99 = percentile(self.latencies, 99) * 1e3
        return f"{self.rate:,.0f}/s ({p50:.1f} / {p99:.1f} ms)"


def ok_count(server: ServerProcess, method: str) -> float:
    """The server's count of OK answers of ``method`` (its Prometheus metrics)."""
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    pattern = (
        rf'taskorch_rpc_duration_seconds_count{{code="OK",method="{re.escape(method)}"}} (\S+)'
    )
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def drain(server: ServerProcess, timeout: float = 300.0) -> None:
    """Waits until no task is pending or running (CreateTask runs leave a queue behind)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = json.load(urllib.request.urlopen(f"{server.http_url}/health", timeout=10))
        if health["pending_tasks"] == 0 and health["active_tasks"] == 0:
            return
        time.sleep(0.5)
    raise TimeoutError("the server did not drain its queue")


def measure(
    server: ServerProcess,
    paths: list[Target],
    *,
    concurrency: int,
    seconds: float,
    repeats: int,
    creates: bool,
    workdir: Path,
) -> dict[str, Measured]:
    results = {p.name: Measured() for p in paths}
    for repeat in range(repeats):
        for path in paths if repeat % 2 == 0 else list(reversed(paths)):
            before = ok_count(server, path.grpc_method) if path.grpc_method else 0.0
            rate, latencies = h2load(
                path, concurrency=concurrency, seconds=seconds, log=workdir / "h2load.log"
            )
            if path.grpc_method:
                answered = ok_count(server, path.grpc_method) - before
                if answered < len(latencies):
                    raise RuntimeError(f"{path.name}: {answered:.0f} OK of {len(latencies)}")
            results[path.name].rates.append(rate)
            results[path.name].latencies += latencies
            if creates:
                drain(server)
    return results


def versions() -> str:
    h2 = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    envoy = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"/(\d+\.\d+\.\d+)/", envoy)
    return f"{h2}, envoy {found.group(1) if found else '?'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per path and case")
    parser.add_argument("--workers", type=int, default=4, help="in-process worker slots")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client")
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"load generator: {versions()}; one request in flight per connection")
    rows: list[tuple[str, ...]] = [
        (
            "call",
            "conc",
            "gRPC direct",
            "REST h2c via Envoy",
            "ratio",
            "REST HTTP/1.1 via Envoy",
            "ratio",
            "gRPC via Envoy",
            "ratio",
        )
    ]
    with (
        tempfile.TemporaryDirectory(prefix="rest-vs-grpc-") as tmp,
        taskorch_server("--workers", str(args.workers), gateway=True) as server,
    ):
        workdir = Path(tmp)
        request = urllib.request.Request(
            f"{server.http_url}/v1/tasks",
            data=json.dumps({"text": TEXT}).encode(),
            headers={"content-type": "application/json"},
        )
        task_id = json.load(urllib.request.urlopen(request, timeout=10))["task_id"]
        drain(server)
        files = {
            "get.grpc": grpc_frame(pb.GetTaskRequest(task_id=task_id).SerializeToString()),
            "create.grpc": grpc_frame(pb.CreateTaskRequest(text=TEXT).SerializeToString()),
            "create.json": json.dumps({"text": TEXT}).encode(),
        }
        for name, data in files.items():
            (workdir / name).write_bytes(data)
        service = "/taskorch.v1.TaskService"
        cases = [
            (
                "GetTask",
                [
                    Target(
                        "grpc",
                        f"http://{server.grpc_addr}{service}/GetTask",
                        workdir / "get.grpc",
                        GRPC_HEADERS,
                        grpc_method=f"{service}/GetTask",
                    ),
                    Target("rest", f"{server.http_url}/v1/tasks/{task_id}", None, ()),
                    Target("rest1", f"{server.http_url}/v1/tasks/{task_id}", None, (), http1=True),
                    Target(
                        "proxied",
                        f"{server.http_url}{service}/GetTask",
                        workdir / "get.grpc",
                        GRPC_HEADERS,
                        grpc_method=f"{service}/GetTask",
                    ),
                ],
            ),
            (
                "CreateTask",
                [
                    Target(
                        "grpc",
                        f"http://{server.grpc_addr}{service}/CreateTask",
                        workdir / "create.grpc",
                        GRPC_HEADERS,
                        grpc_method=f"{service}/CreateTask",
                    ),
                    Target(
                        "rest", f"{server.http_url}/v1/tasks", workdir / "create.json", JSON_HEADERS
                    ),
                    Target(
                        "rest1",
                        f"{server.http_url}/v1/tasks",
                        workdir / "create.json",
                        JSON_HEADERS,
                        http1=True,
                    ),
                    Target(
                        "proxied",
                        f"{server.http_url}{service}/CreateTask",
                        workdir / "create.grpc",
                        GRPC_HEADERS,
                        grpc_method=f"{service}/CreateTask",
                    ),
                ],
            ),
        ]
        for call, paths in cases:
            for concurrency in (1, 32):
                measured = measure(
                    server,
                    paths,
                    concurrency=concurrency,
                    seconds=args.seconds,
                    repeats=args.repeats,
                    creates=call == "CreateTask",
                    workdir=workdir,
                )
                grpc_rate = measured["grpc"].rate
                row = [call, str(concurrency), measured["grpc"].cell()]
                for name in ("rest", "rest1", "proxied"):
                    row += [measured[name].cell(), f"{measured[name].rate / grpc_rate:.2f}"]
                rows.append(tuple(row))
                print(f"  measured {call} at concurrency {concurrency}", flush=True)
    print(table(rows))
    print(
        f"(req/s mean of {args.repeats} runs of {args.seconds:g} s each, p50 / p99 over all "
        f"their requests; ratio = path / gRPC direct; server: SQLite, {args.workers} worker "
        f"slots, rate limiting off; load average {os.getloadavg()[0]:.2f} at the end)"
    )


if __name__ == "__main__":
    main()
