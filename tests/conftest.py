"""Shared fixtures: real servers over real sockets with real database files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import databases
from tests.servers import ServerProcess, WorkerProcess

ServerFactory = Callable[..., ServerProcess]
WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Starts servers on a fresh database of the test backend (or the given URL), all on the
    same one unless told otherwise; stops them and drops the database afterwards."""
    started: list[ServerProcess] = []
    shared: list[str] = []

    def start(
        *args: str,
        database_url: str | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
        gateway: bool = False,
        models_dir: Path | None = None,
        auth: str | None = "none",
    ) -> ServerProcess:
        workdir = tmp_path / f"server{len(started)}"
        workdir.mkdir()
        if database_url is None:
            if not shared:
                shared.append(databases.new_database(tmp_path))
            database_url = shared[0]
        server = ServerProcess(
            workdir=workdir,
            database_url=database_url,
            args=args,
            env=env or {},
            gateway=gateway,
            models_dir=models_dir,
            auth=auth,
        )
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.kill()
    for url in shared:
        databases.discard(url)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by a test module (tests must not assume an empty database)."""
    workdir = tmp_path_factory.mktemp("server")
    url = databases.new_database(workdir)
    process = ServerProcess(workdir=workdir, database_url=url)
    process.start()
    yield process
    process.kill()
    databases.discard(url)


@pytest.fixture(scope="module")
def gateway_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with its Envoy gateway (rate limiting off), shared by a test module."""
    workdir = tmp_path_factory.mktemp("gateway")
    url = databases.new_database(workdir)
    process = ServerProcess(workdir=workdir, database_url=url, gateway=True)
    process.start()
    yield process
    process.stop()
    databases.discard(url)


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[WorkerFactory]:
    """Starts ``taskorch worker`` processes (with the test handlers); kills them afterwards."""
    started: list[WorkerProcess] = []

    def start(server: ServerProcess, *args: str, connected: bool = True) -> WorkerProcess:
        process = WorkerProcess(
            server=server.grpc_addr,
            log_path=tmp_path / f"worker{len(started)}.log",
            args=("--handlers", "tests.workers.handlers:registry", *args),
        )
        started.append(process)
        process.start()
        if connected:
            process.wait_connected()
        return process

    yield start
    for process in started:
        process.kill()
