"""CORS through the real Envoy (``serve --cors-origins``): an allowed origin's preflight gets
204 with the methods and headers a browser page needs, and its answers expose the request id
and rate-limit headers; any other origin gets no ``Access-Control-*`` header at all."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskorch.gateway.config import GatewaySettings, parse_origins, render
from tests.web.conftest import WebServer

pytestmark = pytest.mark.xdist_group("web")

# A REST path of every surface. (Browsers send no preflight before a WebSocket: the server
# checks a WebSocket's Origin itself, see test_websocket.py.)
PATHS = ("/v1/tasks", "/tasks", "/api/v1/tasks", "/task", "/v1/chat/sessions", "/openai/v1/models")


def _preflight(web: WebServer, path: str, origin: str) -> httpx.Response:
    return httpx.options(
        web.http_url + path,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-api-key, idempotency-key",
        },
        timeout=10,
    )


@pytest.mark.parametrize("path", PATHS)
def test_an_allowed_origins_preflight_gets_204_with_what_a_page_needs(
    web: WebServer, path: str
) -> None:
    response = _preflight(web, path, web.allowed_origin)
    assert response.status_code == 204, (response.status_code, response.text)
    headers = response.headers
    assert headers["access-control-allow-origin"] == web.allowed_origin
    methods = {m.strip() for m in headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PATCH", "PUT", "DELETE"} <= methods
    allowed = {h.strip() for h in headers["access-control-allow-headers"].lower().split(",")}
    assert {"x-api-key", "authorization", "idempotency-key", "content-type"} <= allowed
    assert response.content == b""


@pytest.mark.parametrize("path", PATHS[:3])
def test_another_origins_preflight_gets_no_cors_headers(web: WebServer, path: str) -> None:
    response = _preflight(web, path, web.other_origin)
    assert response.status_code != 204
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


def test_an_allowed_origins_answers_expose_request_id_and_rate_limits(web: WebServer) -> None:
    response = httpx.get(
        web.http_url + "/v1/tasks",
        headers={"origin": web.allowed_origin, "x-api-key": web.acme},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == web.allowed_origin
    exposed = {h.strip() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "x-ratelimit-limit", "x-ratelimit-remaining"} <= exposed
    assert "x-ratelimit-remaining" in response.headers and response.headers["x-request-id"]


def test_errors_reach_an_allowed_origin_with_cors_headers(web: WebServer) -> None:
    """A page must be able to read the API's error (here: no credentials)."""
    response = httpx.get(
        web.http_url + "/v1/tasks", headers={"origin": web.allowed_origin}, timeout=10
    )
    assert response.status_code == 401, response.text
    assert response.headers["access-control-allow-origin"] == web.allowed_origin
    assert response.json()["reason"] == "UNAUTHENTICATED"


def test_another_origins_answers_carry_no_allow_origin(web: WebServer) -> None:
    response = httpx.get(
        web.http_url + "/v1/tasks",
        headers={"origin": web.other_origin, "x-api-key": web.acme},
        timeout=10,
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_without_cors_origins_the_gateway_has_no_cors_filter() -> None:
    """The default (no --cors-origins): no origin but the gateway's own may call it."""
    settings = GatewaySettings(
        listen="127.0.0.1:8080", upstreams=["127.0.0.1:1"], descriptor=Path("x")
    )
    filters = [f["name"] for f in _hcm(render(settings))["http_filters"]]
    assert "envoy.filters.http.cors" not in filters
    with_origins = render(replace(settings, cors_origins=("https://app.example.com",)))
    assert "envoy.filters.http.cors" in [f["name"] for f in _hcm(with_origins)["http_filters"]]


def test_cors_origins_must_be_origins() -> None:
    assert parse_origins(" https://a.example.com/, http://127.0.0.1:3000,,*") == (
        "https://a.example.com",
        "http://127.0.0.1:3000",
        "*",
    )
    for bad in ("a.example.com", "https://a.example.com/path", "ftp://x"):
        with pytest.raises(ValueError, match="is not an origin"):
            parse_origins(bad)


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    return dict(listener["filter_chains"][0]["filters"][0]["typed_config"])
