"""REST through Envoy against direct gRPC: the same calls, the same load generator, one run.

Calls: GetTask of an existing task, and CreateTask of a text-analysis task. Paths:
- gRPC: h2load sending raw gRPC frames straight to the server's port;
- REST: h2load to Envoy (h2c, and HTTP/1.1) at GET /v1/tasks/{id} and POST /v1/tasks {text};
- gRPC passthrough: the same gRPC frames through Envoy's port (what the proxy hop alone costs).
The raw limit of any proxy on this machine is measured in the same run: a bare Envoy (router
only) in front of an Envoy that answers by itself, against that Envoy directly. Its added p50
bounds what REST through a proxy can reach one call at a time: a call that takes T directly
takes at least T + hop through any proxy, so the "c=1 bound" column is T / (T + hop). In the
same alternating set, the same router-only Envoy is measured in front of the taskorch server
(GetTask, which reads the database, and ListModels, which does not), to tell what the server
side of a hop adds beyond that limit (``--hop-only`` measures just this part).
Concurrency 1 and 32 (connections with one request in flight each). Every path of a case is run
``--repeats`` times in alternating order (A B C D, D C B A, ...); rates are the mean, p50/p99
come from every request of those runs. After each CreateTask run the server's queue drains
before the next run starts. Each call's result is checked: all HTTP 2xx, and for gRPC the
server's own count of OK answers of that method rose by at least the requests h2load counted.

Usage: python bench/rest_vs_grpc.py [--seconds 5] [--repeats 2] [--workers 4] [--hop-only]
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _harness import Target, grpc_frame, h2load, machine, percentile, table, taskorch_server

from taskorch.gateway.launcher import envoy_binary
from taskorch.v1 import model_service_pb2 as model_pb
from taskorch.v1 import task_service_pb2 as pb
from tests.servers import ServerProcess, free_port

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


_ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def _listener(port: int, route: dict[str, Any]) -> dict[str, Any]:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "codec_type": "AUTO",
        "route_config": {
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, **route}]}
            ]
        },
        "http_filters": [_ROUTER],
    }
    return {
        "name": f"bench-{port}",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def _h2_cluster(name: str, port: int) -> dict[str, Any]:
    """A cluster of one host on 127.0.0.1:``port`` spoken to over HTTP/2, no other option."""
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                ".HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
        },
    }


@contextmanager
def bare_hop(workdir: Path, server_port: int) -> Iterator[tuple[str, str, str]]:
    """Two Envoys: one answering 200 by itself, one routing to it over HTTP/2 with no other
    filter. The routing one has a second listener, routing the same way to the taskorch
    server's gRPC port. Yields (direct URL, proxied URL, base URL of the server through the
    router-only Envoy)."""
    answer, hop, front = free_port(), free_port(), free_port()
    answering = {
        "static_resources": {
            "listeners": [
                _listener(
                    answer, {"direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
                )
            ]
        }
    }
    routing = {
        "static_resources": {
            "listeners": [
                _listener(hop, {"route": {"cluster": "answer", "timeout": "0s"}}),
                _listener(front, {"route": {"cluster": "taskorch", "timeout": "0s"}}),
            ],
            "clusters": [_h2_cluster("answer", answer), _h2_cluster("taskorch", server_port)],
        }
    }
    procs = []
    try:
        for name, config in (("answer", answering), ("hop", routing)):
            path = workdir / f"{name}.yaml"
            path.write_text(yaml.safe_dump(config))
            log = (workdir / f"{name}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [envoy_binary(), "-c", str(path), "--disable-hot-restart", "-l", "warning"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        urls = (f"http://127.0.0.1:{answer}/", f"http://127.0.0.1:{hop}/")
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        yield (*urls, f"http://127.0.0.1:{front}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def hop_case(server: ServerProcess, workdir: Path, seconds: float, repeats: int) -> float:
    """What one router-only Envoy adds to the p50 of a call at concurrency 1, measured in one
    alternating set: in front of an Envoy answering by itself (the bare hop, the raw limit of
    any proxy here) and in front of the taskorch server (GetTask, which reads the database,
    and ListModels, which does not). Prints the three; returns the bare hop in ms."""
    port = int(server.grpc_addr.rsplit(":", 1)[1])
    with bare_hop(workdir, port) as (direct_url, hop_url, front):
        paths = [Target("direct", direct_url, None, ()), Target("hop", hop_url, None, ())]
        for call, service, body in (
            ("GetTask", "/taskorch.v1.TaskService", "get.grpc"),
            ("ListModels", "/taskorch.v1.ModelService", "models.grpc"),
        ):
            method = f"{service}/{call}"
            for name, base in ((call, f"http://{server.grpc_addr}"), (f"{call} hop", front)):
                paths.append(
                    Target(name, base + method, workdir / body, GRPC_HEADERS, grpc_method=method)
                )
        measured = measure(
            server,
            paths,
            concurrency=1,
            seconds=seconds,
            repeats=repeats,
            creates=False,
            workdir=workdir,
        )

    def added(direct: str, hop: str) -> float:
        p50 = percentile(measured[hop].latencies, 50) - percentile(measured[direct].latencies, 50)
        return p50 * 1e3

    hop_ms = added("direct", "hop")
    print(
        f"  bare Envoy hop, concurrency 1: direct {measured['direct'].cell()}, through a "
        f"router-only Envoy {measured['hop'].cell()}: +{hop_ms:.2f} ms p50",
        flush=True,
    )
    for call in ("GetTask", "ListModels"):
        extra = added(call, f"{call} hop")
        print(
            f"  the same router-only Envoy in front of the server, {call}: direct "
            f"{measured[call].cell()}, through it {measured[f'{call} hop'].cell()}: "
            f"+{extra:.2f} ms p50 ({extra - hop_ms:+.2f} ms against the bare hop)",
            flush=True,
        )
    return hop_ms


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
    parser.add_argument(
        "--hop-only", action="store_true", help="measure only what a router-only Envoy adds"
    )
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
            "c=1 bound",
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
            "models.grpc": grpc_frame(model_pb.ListModelsRequest().SerializeToString()),
        }
        for name, data in files.items():
            (workdir / name).write_bytes(data)
        hop_ms = hop_case(server, workdir, args.seconds, args.repeats)
        if args.hop_only:
            return
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
                    if name == "rest":
                        direct_ms = percentile(measured["grpc"].latencies, 50) * 1e3
                        bound = direct_ms / (direct_ms + hop_ms)
                        row.append(f"{bound:.2f}" if concurrency == 1 else "")
                rows.append(tuple(row))
                print(f"  measured {call} at concurrency {concurrency}", flush=True)
    print(table(rows))
    print(
        f"(req/s mean of {args.repeats} runs of {args.seconds:g} s each, p50 / p99 over all "
        f"their requests; ratio = path / gRPC direct; server: SQLite, {args.workers} worker "
        f"slots, rate limiting off; load average {os.getloadavg()[0]:.2f} at the end; c=1 "
        f"bound = gRPC p50 / (gRPC p50 + the bare hop's {hop_ms:.2f} ms))"
    )


if __name__ == "__main__":
    main()
