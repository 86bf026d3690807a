"""Fixtures of the gateway tests: a REST client of the module's gateway server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.servers import ServerProcess


@pytest.fixture(scope="module")
def rest(gateway_server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP/1.1 client of the module's gateway (REST through Envoy)."""
    with httpx.Client(base_url=gateway_server.http_url, timeout=15) as client:
        yield client
