"""The dashboard and /docs are served on the gateway port from files shipped in the package,
which fetch nothing from another host (no CDN); other methods on their paths are REST's 404."""

from __future__ import annotations

import re

import httpx
import pytest

from taskorch.server.web import STATIC_DIR
from tests.web.conftest import WebServer

pytestmark = pytest.mark.xdist_group("web")


@pytest.mark.parametrize(
    ("path", "kind", "needle"),
    [
        ("/", "text/html", "/ui/app.js"),
        ("/docs", "text/html", "/ui/docs.js"),
        ("/ui/app.js", "javascript", "sessionStorage"),
        ("/ui/docs.js", "javascript", "/openapi.json"),
        ("/ui/app.css", "text/css", ":root"),
    ],
)
def test_the_pages_are_served_through_envoy_without_credentials(
    web: WebServer, path: str, kind: str, needle: str
) -> None:
    response = httpx.get(web.http_url + path, timeout=10)
    assert response.status_code == 200, response.text
    assert kind in response.headers["content-type"]
    assert needle in response.text


def test_the_shipped_files_load_nothing_from_another_host() -> None:
    files = sorted(STATIC_DIR.iterdir())
    assert {f.name for f in files} >= {"index.html", "docs.html", "app.js", "docs.js", "app.css"}
    for path in files:
        text = path.read_text()
        remote = re.findall(r"(?:src|href)=[\"']?(?:https?:)?//|fetch\(\s*[\"'`]https?:", text)
        assert remote == [], (path.name, remote)


def test_other_methods_on_the_page_paths_are_rest_json_404s(web: WebServer) -> None:
    response = httpx.post(web.http_url + "/", content=b"{}", timeout=10)
    assert response.status_code == 404
    assert response.json()["reason"] == "NOT_FOUND"
