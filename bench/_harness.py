"""What the benchmarks share: servers to measure, the raw gRPC ceiling, percentiles, tables."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import ServerProcess, free_port, sqlite_url

EMPTY_SERVER = Path(__file__).with_name("_empty_server.py")
BARE_INFER_SERVER = Path(__file__).with_name("_bare_infer_server.py")


def machine() -> str:
    import grpc as grpc_module

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"grpcio {grpc_module.__version__}"
    )


class Steal:
    """Cores the hypervisor took from this VM (``/proc/stat`` steal time) while a block ran:
    CPU a benchmark wanted and did not get, which moves figures from one minute to the next."""

    def __enter__(self) -> Steal:
        self._start = _steal_and_total()
        self.cores = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        steal, total = (b - a for a, b in zip(self._start, _steal_and_total(), strict=True))
        self.cores = (os.cpu_count() or 1) * steal / total if total else 0.0


def _cpu_ticks() -> list[int]:
    """Clock ticks of every core since boot, as /proc/stat counts them: user, nice, system,
    idle, iowait, irq, softirq, steal; zeros where it is missing."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return [0] * 8
    return [int(f) for f in fields[:8]]


def _steal_and_total() -> tuple[int, int]:
    """(steal, all) clock ticks of every core since boot."""
    ticks = _cpu_ticks()
    return ticks[7], sum(ticks)


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent busy since boot (user, nice, system, irq,
    softirq; not idle, I/O wait or steal): every process's work, clients and databases too."""
    user, nice, system, _idle, _iowait, irq, softirq, _steal = _cpu_ticks()
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def io_stall_seconds() -> float:
    """Time since boot during which some task of this machine waited for I/O (Linux pressure
    stall information, ``/proc/pressure/io``); 0 where the kernel does not keep it. A run
    whose share of it is far above its neighbours' had a disk the others did not."""
    try:
        some = Path("/proc/pressure/io").read_text().split("\n", 1)[0]
    except OSError:
        return 0.0
    return int(some.rsplit("total=", 1)[1]) / 1e6


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU time (user + system) a process, or one of its threads, has used so far."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def summary_ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 50) * 1e3:.1f} ms, p99 {percentile(values, 99) * 1e3:.1f} ms"


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


@contextmanager
def server_hook(hook: Path, *paths: Path, **env: str) -> Iterator[None]:
    """The servers started inside see ``hook`` (a folder with a sitecustomize.py) and then
    ``paths`` first on their PYTHONPATH, and ``env`` in their environment (they inherit
    this process's); both are restored after."""
    current = os.environ.get("PYTHONPATH")
    path = [str(hook), *(str(p) for p in paths), *([current] if current else [])]
    values = {**env, "PYTHONPATH": os.pathsep.join(path)}
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def taskorch_server(
    *args: str, database_url: str | None = None, gateway: bool = False
) -> Iterator[ServerProcess]:
    """A server for one benchmark; with ``gateway`` its Envoy too (rate limiting off)."""
    with tempfile.TemporaryDirectory(prefix="taskorch-bench-") as workdir:
        path = Path(workdir)
        server = ServerProcess(
            workdir=path,
            database_url=database_url or sqlite_url(path / "bench.db"),
            args=("--log-level", "warning", *args),
            gateway=gateway,
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def empty_server() -> Iterator[str]:
    """A grpc.aio server whose one method does nothing: the Python gRPC ceiling here."""
    with empty_server_process() as (target, _pid):
        yield target


@contextmanager
def empty_server_process(event_loop: str = "asyncio") -> Iterator[tuple[str, int]]:
    """The empty server on ``event_loop`` (asyncio or uvloop); yields (target, its pid)."""
    with _server_script(EMPTY_SERVER, event_loop) as started:
        yield started


@contextmanager
def bare_infer_server(model_dir: Path) -> Iterator[tuple[str, int]]:
    """The bare MiniLM Infer server (bench/_bare_infer_server.py); yields (target, its pid)."""
    with _server_script(BARE_INFER_SERVER, str(model_dir), timeout=120) as started:
        yield started


@contextmanager
def _server_script(script: Path, *args: str, timeout: float = 20) -> Iterator[tuple[str, int]]:
    """Runs a benchmark's own server ``script PORT *args`` until it accepts gRPC calls."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port), *args])
    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        yield target, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


async def closed_loop(
    call: Callable[[], Awaitable[object]], *, concurrency: int, seconds: float
) -> tuple[float, list[float]]:
    """Runs ``call`` from ``concurrency`` loops for ``seconds``; returns (calls/s, latencies)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


async def echo_tasks(
    addr: str, tasks: int, *, submitters: int = 32, waits: list[float] | None = None
) -> None:
    """Submits ``tasks`` echo tasks, one per call, from ``submitters`` SDK coroutines (each
    call's time appended to ``waits``); returns when all of them completed (counted from the
    server's completed tasks before the first, so earlier runs on it do not count)."""
    from taskorch.client import AsyncClient

    client = AsyncClient(addr)
    try:
        done_before = (await client.list_tasks(status="completed", limit=1)).total
        left = iter(range(tasks))

        async def submitter() -> None:
            for n in left:
                sent = time.perf_counter()
                await client.create_task(task_type="echo", input_data={"n": n})
                if waits is not None:
                    waits.append(time.perf_counter() - sent)

        await asyncio.gather(*(submitter() for _ in range(submitters)))
        while (await client.list_tasks(status="completed", limit=1)).total < done_before + tasks:
            await asyncio.sleep(0.01)
    finally:
        await client.close()


async def raw_unary_rate(target: str, *, concurrency: int = 32, seconds: float = 5.0) -> float:
    channel = grpc.aio.insecure_channel(target)
    empty = channel.unary_unary(
        "/bench.Empty/Call", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    await closed_loop(lambda: empty(b""), concurrency=concurrency, seconds=1.0)  # warm up
    rate, _ = await closed_loop(lambda: empty(b""), concurrency=concurrency, seconds=seconds)
    await channel.close()
    return rate


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


# -- h2load: a C load generator, so the client costs the shared cores little -------------


@dataclass(frozen=True)
class Target:
    """One way of making a call: where to send it and how."""

    name: str
    url: str
    body: Path | None
    headers: tuple[str, ...]
    http1: bool = False
    grpc_method: str = ""  # counted on the server for gRPC paths


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def h2load(
    path: Target, *, concurrency: int, seconds: float, log: Path
) -> tuple[float, list[float]]:
    """Runs h2load once; returns (requests/s, latencies in seconds)."""
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is missing: apt-get install nghttp2-client")
    log.unlink(missing_ok=True)  # h2load appends to its log file
    command = [
        "h2load",
        "-D",
        f"{seconds:g}",
        "--warm-up-time",
        "1",
        "-c",
        str(concurrency),
        "-m",
        "1",
        "--log-file",
        str(log),
    ]
    if path.http1:
        command.append("--h1")
    if path.body is not None:
        command += ["-d", str(path.body)]
    for header in path.headers:
        command += ["-H", header]
    command.append(path.url)
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    rate = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    assert codes and failed, out
    if any(int(n) for n in codes.groups()[1:]) or any(int(n) for n in failed.groups()):
        raise RuntimeError(f"{path.name}: not every request succeeded:\n{out}")
    latencies = [int(line.split("\t")[2]) / 1e6 for line in log.read_text().splitlines() if line]
    return rate, latencies
