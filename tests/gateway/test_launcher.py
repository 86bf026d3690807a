"""The launcher `taskorch serve` uses: Envoy starts, is seen ready, and stops."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from taskorch.gateway.config import GatewaySettings
from taskorch.gateway.descriptor import service_names
from taskorch.gateway.launcher import Gateway, write_descriptor
from tests.servers import free_port

pytestmark = pytest.mark.xdist_group("gateway_render")


async def test_start_returns_as_soon_as_envoy_is_ready(tmp_path: Path) -> None:
    # Envoy's admin API refuses HTTP/1.0 (426 Upgrade Required): a readiness probe that
    # speaks it never sees "ready", and `taskorch serve` gave up on a working Envoy.
    settings = GatewaySettings(
        listen=f"127.0.0.1:{free_port()}",
        upstreams=[f"127.0.0.1:{free_port()}"],
        descriptor=write_descriptor(tmp_path),
        admin=f"127.0.0.1:{free_port()}",
        rate_limit=None,
        services=service_names(),
    )
    gateway = Gateway(settings, tmp_path)
    started = time.monotonic()
    try:
        await gateway.start(timeout=10)
        elapsed = time.monotonic() - started
        assert gateway.process is not None and gateway.process.returncode is None
    finally:
        await gateway.stop()
    assert elapsed < 5, f"ready after {elapsed:.1f} s"
    assert gateway.process.returncode is not None
