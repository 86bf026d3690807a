"""A server for the web tests: Envoy with the dashboard and WebSockets, API keys of two
tenants, one allowed cross-origin page origin (and one that is not), the tiny chat model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests import databases
from tests.security.conftest import TINY_TEXT_MODEL, create_key, tiny_repository
from tests.servers import ServerProcess, free_port

# Four progress events a quarter of a second apart.
SLOW_ECHO = {"task_type": "echo", "input_data": {"delay_seconds": 1.0, "progress_steps": 4}}
CHAT_MODEL = TINY_TEXT_MODEL


@dataclass
class WebServer:
    server: ServerProcess
    acme: str  # an API key of tenant acme
    globex: str  # an API key of tenant globex
    allowed_origin: str  # --cors-origins
    other_origin: str  # not allowed

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.server.http_port}"


@pytest.fixture(scope="package")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    workdir = tmp_path_factory.mktemp("web")
    url = databases.new_database(workdir)
    allowed = f"http://127.0.0.1:{free_port()}"
    other = f"http://127.0.0.1:{free_port()}"
    keys = {"acme": create_key(url, "acme"), "globex": create_key(url, "globex")}
    process = ServerProcess(
        workdir=workdir,
        database_url=url,
        gateway=True,
        models_dir=tiny_repository(workdir / "models"),
        auth="keys",
        # Rate limited (so answers carry X-RateLimit-*), loosely enough for every test here.
        args=("--cors-origins", allowed, "--rate-limit", "10000/60s"),
    )
    process.start()
    yield WebServer(process, keys["acme"], keys["globex"], allowed, other)
    process.stop()
    databases.discard(url)
