"""Real taskorch server processes for tests: free ports, a database file, health waits."""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskorch.client import AsyncClient, Client

STARTUP_SECONDS = 60.0
# Test ports start above the services a test machine runs (PostgreSQL, Redis, ...).
_FIRST_PORT = 10_000


def free_port() -> int:
    """A port free now that no outgoing connection can take while a test needs it again.

    Ports come from below the kernel's ephemeral range: a server a test kills and restarts on
    its port cannot find it taken by some other process's client connection in the meantime
    (a port picked with bind(0) is an ephemeral one, and any connect() on the machine may get it
    as its source port). Each pytest-xdist worker takes its own slice and walks it, so two
    workers never pick the same port and one process hands a port out only once per lap.
    """
    for _ in range(len(_SLICE)):
        port = next(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port below the ephemeral range")


def _port_slice() -> range:
    low = _FIRST_PORT
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        high = min(int(text.split()[0]), 65536)
    except (OSError, ValueError, IndexError):
        high = 32768
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) % workers if worker.isdigit() else 0
    width = (high - low) // workers
    return range(low + index * width, low + (index + 1) * width)


def _port_cycle(ports: range) -> Iterator[int]:
    """The ports of this process's slice, from a random start, round and round."""
    start = random.randrange(len(ports)) if ports else 0
    return itertools.cycle(itertools.chain(ports[start:], ports[:start]))


_SLICE = _port_slice()
_PORTS = _port_cycle(_SLICE)


@dataclass
class ServerProcess:
    """One ``taskorch serve`` process started by a test."""

    workdir: Path
    database_url: str
    args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    grpc_port: int = 0
    metrics_port: int = 0
    gateway: bool = False
    http_port: int = 0
    models_dir: Path | None = None
    # serve's --auth: "none" (every caller is the default tenant) unless a test asks for
    # credentials; None passes no flag, so the server runs in its default mode.
    auth: str | None = "none"
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def grpc_addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """The gateway's base URL (REST and gRPC passthrough)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_addr(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.starts}.log"

    def start(self, *, wait: bool = True) -> ServerProcess:
        self.grpc_port = self.grpc_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        self.http_port = self.http_port or (free_port() if self.gateway else 0)
        self.starts += 1
        gateway = ["--http-addr", self.http_addr] if self.gateway else ["--no-gateway"]
        if self.gateway and not any(a.startswith("--rate-limit") for a in self.args):
            gateway += ["--rate-limit", "off"]
        command = [
            sys.executable,
            "-m",
            "taskorch",
            "serve",
            "--grpc-addr",
            self.grpc_addr,
            "--metrics-addr",
            f"127.0.0.1:{self.metrics_port}",
            "--database-url",
            self.database_url,
            "--models-dir",
            str(self.models_dir or self.workdir / "models"),
            *gateway,
            *(["--auth", self.auth] if self.auth is not None else []),
            "--log-format",
            "json",
            *self.args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.grpc_addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.logs()}")
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    # Its own log too: a port picked free may have gone to another test's
                    # server in the meantime, which would answer SERVING in its place.
                    if (
                        answer.status == health_pb2.HealthCheckResponse.SERVING
                        and (not self.gateway or _answers(f"{self.http_url}/health"))
                        and (
                            self._quiet()
                            or "taskorch is serving" in self.log_path.read_text(errors="replace")
                        )
                    ):
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"server not healthy after {timeout} s:\n{self.logs()}")

    def _quiet(self) -> bool:
        """Started with a log level above info (benchmarks): no "serving" line to wait for."""
        args = list(self.args)
        for i, arg in enumerate(args[:-1]):
            if arg == "--log-level" and args[i + 1] in ("warning", "error", "critical"):
                return True
        return False

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("server-*.log"))
        )

    def client(self, **kwargs: object) -> Client:
        return Client(self.grpc_addr, **kwargs)  # type: ignore[arg-type]

    def async_client(self, **kwargs: object) -> AsyncClient:
        return AsyncClient(self.grpc_addr, **kwargs)  # type: ignore[arg-type]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except (OSError, urllib.error.HTTPError):
        return False


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@dataclass
class WorkerProcess:
    """One ``taskorch worker`` process started by a test."""

    server: str
    log_path: Path
    args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        command = [
            sys.executable,
            "-m",
            "taskorch",
            "worker",
            "--server",
            self.server,
            "--log-format",
            "json",
            *self.args,
        ]
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_connected(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}):\n{self.logs()}")
            if "connected to the server" in self.logs():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker did not connect:\n{self.logs()}")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
