"""`taskorch gateway render`: the committed envoy.yaml is its default rendering, Envoy accepts
what it renders, and its flags change what they should."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskorch.gateway.launcher import envoy_binary

pytestmark = pytest.mark.xdist_group("gateway_render")

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "envoy.yaml"
DESCRIPTOR_LINE = re.compile(r"^(\s*proto_descriptor: ).*$", re.M)


def _render(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "taskorch", "gateway", "render", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def _validate(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "envoy.yaml"
    path.write_text(config)
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "--config-path", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    return dict(listener["filter_chains"][0]["filters"][0]["typed_config"])


def _with_descriptor(text: str, descriptor: Path) -> str:
    return DESCRIPTOR_LINE.sub(lambda m: f"{m.group(1)}{descriptor}", text)


def test_committed_envoy_yaml_is_the_default_rendering() -> None:
    # The descriptor path is the one part that depends on where the checkout is.
    rendered = _render()
    committed = COMMITTED.read_text()
    placeholder = Path("/CHECKOUT/gateway/taskorch.pb")
    assert _with_descriptor(committed, placeholder) == _with_descriptor(rendered, placeholder)


def test_committed_envoy_yaml_names_no_checkout_specific_path() -> None:
    (descriptor,) = re.findall(r"proto_descriptor: (.*)", COMMITTED.read_text())
    assert not Path(descriptor).is_absolute(), descriptor


def test_envoy_accepts_the_committed_and_the_rendered_config(tmp_path: Path) -> None:
    descriptor = ROOT / "gateway" / "taskorch.pb"
    committed = _with_descriptor(COMMITTED.read_text(), descriptor)
    for config in (committed, _render()):
        result = _validate(config, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "OK" in result.stdout + result.stderr


def test_upstream_twice_gives_two_endpoints(tmp_path: Path) -> None:
    text = _render("--upstream", "127.0.0.1:50051", "--upstream", "127.0.0.1:50052")
    config = yaml.safe_load(text)
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "taskorch_grpc"]
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints]
    assert ports == [50051, 50052]
    assert cluster["health_checks"][0]["grpc_health_check"]["service_name"]
    assert _validate(text, tmp_path).returncode == 0


def test_rate_limit_off_renders_without_limiters(tmp_path: Path) -> None:
    text = _render("--rate-limit", "off", "--http-addr", "127.0.0.1:9090")
    config = yaml.safe_load(text)
    hcm = _hcm(config)
    names = [f["name"] for f in hcm["http_filters"]]
    assert not [n for n in names if "ratelimit" in n]
    assert names[-2:] == ["envoy.filters.http.grpc_json_transcoder", "envoy.filters.http.router"]
    assert names.index("envoy.filters.http.lua") < names.index(
        "envoy.filters.http.grpc_json_transcoder"
    )
    # /metrics is transcoded to SystemService.GetMetrics on the servers, which check the
    # caller like any call: no route bypasses them to the unauthenticated metrics port.
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    (metrics,) = [r for r in routes if r["match"].get("path") == "/metrics"]
    assert metrics["route"]["cluster"] == "taskorch_grpc"
    clusters = [c["name"] for c in config["static_resources"]["clusters"]]
    # The gRPC servers, and their web endpoint (dashboard, /docs, WebSockets).
    assert clusters == ["taskorch_grpc", "taskorch_web"]
    web_routes = [r for r in routes if r["route"]["cluster"] == "taskorch_web"]
    assert {r["match"].get("path") or r["match"].get("prefix") for r in web_routes} == {
        "/",
        "/docs",
        "/ui/",
        "/ws/",
    }
    listener = config["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == 9090
    assert _validate(text, tmp_path).returncode == 0


def test_a_bad_rate_limit_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taskorch", "gateway", "render", "--rate-limit", "lots"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "rate-limit" in result.stderr


def test_the_lua_filter_is_the_packaged_file() -> None:
    """The Lua filter's code ships as package data and is what the config embeds."""
    from importlib import resources

    lua = resources.files("taskorch.gateway").joinpath("response_filter.lua").read_text()
    assert lua.lstrip().startswith("-- What the gRPC-JSON transcoder cannot express")
    assert "{--RATE_WINDOWS--}" in lua
    config = yaml.safe_load(_render())
    source = _hcm(config)["http_filters"][0]["typed_config"]["default_source_code"]
    head, _, tail = lua.partition("{--RATE_WINDOWS--}")
    assert source["inline_string"].startswith(head)
    assert source["inline_string"].endswith(tail)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"**/*.lua"' in pyproject, "package-data must ship the .lua files"
