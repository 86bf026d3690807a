"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) against a real server behind Envoy that requires API keys: log in with a
key, submit a task and watch its progress bar reach 100% live, open a finished task, filter
the list, chat with a reply streaming in, an API error shown as it is, /docs rendered; and a
page of another origin calling the REST API, allowed or refused by ``--cors-origins``.

Each test saves screenshots to ``var/screenshots/`` (``TASKORCH_SCREENSHOTS`` elsewhere).
Without Chromium the tests skip, saying so; ``make test`` installs it when run as root.
"""

from __future__ import annotations

import html
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from tests.web.conftest import CHAT_MODEL, WebServer

pytestmark = pytest.mark.xdist_group("web")

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("TASKORCH_SCREENSHOTS", ROOT / "var" / "screenshots"))
T = TypeVar("T")


def _chromium() -> tuple[str, str]:
    browser = next(
        (p for name in ("chromium", "chromium-browser") if (p := shutil.which(name))), None
    )
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "headless Chromium is not installed (chromium and chromedriver not on PATH): "
            "apt-get install chromium chromium-driver (make test does it when run as root)"
        )
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    binary, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.implicitly_wait(0)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _wait(check: Callable[[], T | None], timeout: float = 30, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the page is still changing under the query
            last_error = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}: {last_error}")


def _shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def _css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def _all(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _open(driver: Any, web: WebServer, hash_path: str = "#/") -> None:
    """Loads the page afresh (a new hash alone would not reload it)."""
    driver.get(f"{web.http_url}/{hash_path}")
    driver.refresh()


def _log_in(driver: Any, web: WebServer, key: str) -> None:
    _open(driver, web, "#/tasks")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    _css(driver, "#login-key").send_keys(key)
    _css(driver, "#login-button").click()
    _wait(lambda: _css(driver, "#logout-button").is_displayed(), what="logged in")


def _create(web: WebServer, payload: dict[str, Any]) -> str:
    response = httpx.post(
        web.http_url + "/v1/tasks", json=payload, headers={"x-api-key": web.acme}, timeout=10
    )
    assert response.status_code == 200, response.text
    return str(response.json()["task_id"])


def _rest(web: WebServer, path: str) -> Any:
    response = httpx.get(web.http_url + path, headers={"x-api-key": web.acme}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_logging_in_with_an_api_key(browser: Any, web: WebServer) -> None:
    _open(browser, web)
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    assert _css(browser, "#login-key").is_displayed()
    # Without a key the server's refusal is shown as it is.
    error = _wait(lambda: _css(browser, "#error").is_displayed() and _css(browser, "#error"))
    assert "HTTP 401 UNAUTHENTICATED" in error.text, error.text
    _shot(browser, "01-login-refused")
    _css(browser, "#login-key").send_keys(web.acme)
    _css(browser, "#login-button").click()
    _wait(lambda: _css(browser, "#count-COMPLETED").text.isdigit(), what="counts")
    assert not _css(browser, "#error").is_displayed()
    assert web.acme[:8] in _css(browser, "#whoami").text
    # The key is kept in the tab's session storage, not in a URL or a cookie.
    assert browser.execute_script("return sessionStorage.getItem('taskorch.credential')") == (
        web.acme
    )
    assert web.acme not in browser.current_url
    assert browser.get_cookies() == []
    _shot(browser, "02-overview")


def test_a_task_submitted_from_the_form_reaches_100_percent_live(
    browser: Any, web: WebServer
) -> None:
    from selenium.webdriver.support.ui import Select

    _log_in(browser, web, web.acme)
    _open(browser, web, "#/submit")
    Select(_wait(lambda: _css(browser, "#submit-kind"))).select_by_value("echo")
    payload = _wait(lambda: _css(browser, "#submit-input"))
    payload.clear()
    payload.send_keys('{"delay_seconds": 3, "progress_steps": 6}')
    _shot(browser, "03-submit-form")
    _css(browser, "#submit-button").click()
    _wait(lambda: "#/task/" in browser.current_url, what="the task page")
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            value = int(_css(browser, "#task-progress").get_attribute("value") or 0)
            status = _css(browser, "#task-status").get_attribute("data-status")
        except Exception:
            continue
        if not seen or seen[-1] != value:
            seen.append(value)
            if 0 < value < 100:
                _shot(browser, "04-task-running")
        if status == "COMPLETED":
            # The page may have drawn the end between the two reads above: read the bar again.
            value = int(_css(browser, "#task-progress").get_attribute("value") or 0)
            if seen[-1] != value:
                seen.append(value)
            break
        time.sleep(0.05)
    assert status == "COMPLETED" and seen[-1] == 100, seen
    # It moved while the page was open: values between 0 and 100, rising.
    assert [v for v in seen if 0 < v < 100], seen
    assert seen == sorted(seen), seen
    assert _css(browser, "#task-progress-text").text == "100%"
    events = [li.text for li in _all(browser, "#task-events li")]
    assert sum("PROGRESS" in e for e in events) >= 3, events
    assert '"echo"' in _css(browser, "#task-result").text
    _shot(browser, "05-task-completed")


TEMPLATE = {
    "name": "say-and-count",
    "description": "echo a message, then count its words",
    "parameters": [
        {"name": "message", "type": "string", "required": True, "description": "what to say"},
        {"name": "loud", "type": "boolean", "description": "unused"},
    ],
    "steps": [
        {"name": "say", "type": "echo", "said": "{{message}}"},
        {"name": "count", "type": "text_analysis", "text": "{{steps.say.output.echo.said}}"},
    ],
}


def test_a_template_is_submitted_through_the_form_made_from_its_parameters(
    browser: Any, web: WebServer
) -> None:
    from selenium.webdriver.support.ui import Select

    created = httpx.post(
        web.http_url + "/v1/templates", json=TEMPLATE, headers={"x-api-key": web.acme}, timeout=10
    )
    assert created.status_code == 200, created.text
    _log_in(browser, web, web.acme)
    _open(browser, web, "#/submit")
    Select(_wait(lambda: _css(browser, "#submit-kind"))).select_by_value("template")
    picker = _wait(
        lambda: _all(browser, "#submit-template option") and _css(browser, "#submit-template")
    )
    Select(picker).select_by_value(TEMPLATE["name"])
    message = _wait(lambda: _css(browser, "#param-message"))
    assert _css(browser, "#param-loud").get_attribute("type") == "checkbox"
    message.send_keys("three little words")
    _shot(browser, "05b-template-form")
    _css(browser, "#submit-button").click()
    _wait(lambda: "#/task/" in browser.current_url, what="the task page")
    _wait(lambda: _css(browser, "#task-status").get_attribute("data-status") == "COMPLETED")
    task_id = browser.current_url.rsplit("/", 1)[1]
    task = _rest(web, f"/v1/tasks/{task_id}")
    assert task["template"] == TEMPLATE["name"]
    assert task["parameters"] == {"message": "three little words", "loud": False}
    assert len(_wait(lambda: _all(browser, "#task-subtasks tr"))) == 2


def test_opening_a_finished_task_from_the_list(browser: Any, web: WebServer) -> None:
    task_id = _create(web, {"text": "one two two"})
    _wait(lambda: _rest(web, f"/v1/tasks/{task_id}")["status"] == "COMPLETED")
    _log_in(browser, web, web.acme)
    _open(browser, web, "#/tasks")
    link = _wait(lambda: _css(browser, f'tr[data-task-id="{task_id}"] a'), what="the row")
    link.click()
    _wait(lambda: _css(browser, "#task-status").get_attribute("data-status") == "COMPLETED")
    result = _wait(lambda: _css(browser, "#task-result").text, what="the result")
    assert '"word_count": 3' in result, result
    assert _css(browser, "#task-progress-text").text == "100%"
    _wait(lambda: _all(browser, "#task-subtasks tr"), what="subtasks")
    _shot(browser, "06-finished-task")


def test_filtering_the_task_list_by_status(browser: Any, web: WebServer) -> None:
    from selenium.webdriver.support.ui import Select

    failed = _create(
        web, {"task_type": "echo", "input_data": {"fail_attempts": 5}, "max_attempts": 1}
    )
    done = _create(web, {"text": "finished"})
    for task_id in (failed, done):
        _wait(lambda t=task_id: _rest(web, f"/v1/tasks/{t}")["status"] in ("FAILED", "COMPLETED"))
    _log_in(browser, web, web.acme)
    _open(browser, web, "#/tasks")
    _wait(lambda: _css(browser, f'tr[data-task-id="{done}"]'), what="the unfiltered list")
    Select(_css(browser, "#task-filter-status")).select_by_value("FAILED")
    _wait(lambda: "status=FAILED" in browser.current_url)
    rows = _wait(
        lambda: [
            r for r in _all(browser, "#task-table tbody tr") if r.get_attribute("data-task-id")
        ],
        what="failed rows",
    )
    assert {r.get_attribute("data-status") for r in rows} == {"FAILED"}
    assert failed in {r.get_attribute("data-task-id") for r in rows}
    total = _rest(web, "/v1/tasks?status=FAILED&limit=1")["total"]
    assert f"{total} tasks" in _css(browser, "#task-page-info").text
    _shot(browser, "07-list-filtered")


def test_a_chat_reply_streams_into_the_page(browser: Any, web: WebServer) -> None:
    from selenium.webdriver.support.ui import Select

    _log_in(browser, web, web.acme)
    _open(browser, web, "#/chat")
    picker = _wait(lambda: _all(browser, "#chat-model option") and _css(browser, "#chat-model"))
    Select(picker).select_by_value(CHAT_MODEL)
    _css(browser, "#chat-new").click()
    _wait(lambda: "session=" in browser.current_url, what="a new session")
    session_id = browser.current_url.split("session=")[1]
    send = _wait(lambda: _css(browser, "#chat-send").is_enabled() and _css(browser, "#chat-send"))
    _css(browser, "#chat-input").send_keys("hello there")
    # Record the reply as the page shows it, until it has finished.
    browser.execute_script(
        """
        window.__replySeen = [];
        new MutationObserver(() => {
          const reply = document.querySelector('#chat-messages .msg.assistant');
          if (reply) window.__replySeen.push([reply.dataset.status,
            reply.querySelector('.text').textContent]);
        }).observe(document.querySelector('#chat-messages'),
          {childList: true, subtree: true, characterData: true, attributes: true});
        """
    )
    send.click()
    reply = _wait(
        lambda: (
            (node := _css(browser, "#chat-messages .msg.assistant"))
            and node.get_attribute("data-status") == "COMPLETED"
            and node
        ),
        timeout=60,
        what="the finished reply",
    )
    shown = reply.find_element("css selector", ".text").text
    seen = browser.execute_script("return window.__replySeen")
    # It arrived in pieces: the page showed it unfinished before it showed it whole.
    assert any(status != "COMPLETED" for status, _ in seen), seen
    messages = _rest(web, f"/v1/chat/sessions/{session_id}/messages?limit=10")["messages"]
    stored = [m for m in messages if m["role"] == "ASSISTANT"][-1]
    assert shown.strip() == stored["content"].strip() and stored["content"].strip()
    _shot(browser, "08-chat")


def test_an_api_error_is_shown_as_the_api_gave_it(browser: Any, web: WebServer) -> None:
    _log_in(browser, web, web.acme)
    _open(browser, web, "#/submit")
    text = _wait(lambda: _css(browser, "#submit-text"))
    browser.execute_script("arguments[0].value = 'x'.repeat(5000)", text)
    _css(browser, "#submit-button").click()
    error = _wait(lambda: _css(browser, "#error").is_displayed() and _css(browser, "#error"))
    assert error.text.startswith("HTTP 422 TEXT_TOO_LONG: "), error.text
    assert "(request " in error.text
    assert "#/submit" in browser.current_url
    _shot(browser, "09-api-error")


def test_every_page_renders_without_script_errors(browser: Any, web: WebServer) -> None:
    _log_in(browser, web, web.acme)
    browser.get_log("browser")  # forget what came before
    for number, (page, ready) in enumerate(
        [
            ("#/", "#count-PENDING"),
            ("#/models", "#model-table tbody tr"),
            ("#/workers", "#workers-leases tr"),
            ("docs", 'details[data-path="/v1/tasks"]'),
        ]
    ):
        browser.get(f"{web.http_url}/{page}")
        _wait(lambda r=ready: _all(browser, r), what=page)
        _shot(browser, f"1{number}-page-{page.strip('#/') or 'overview'}")
    models = _all(browser, "body")  # (the last page: /docs)
    assert models
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], severe


class _Page(BaseHTTPRequestHandler):
    """A page of another origin that calls the REST API from the browser."""

    api = ""
    key = ""

    def do_GET(self) -> None:
        script = f"""
          fetch({self.api!r} + "/v1/tasks?limit=1", {{headers: {{"x-api-key": {self.key!r}}}}})
            .then(r => r.json())
            .then(b => {{ document.title = "allowed " + b.total; }})
            .catch(e => {{ document.title = "refused " + e; }});
        """
        body = f"<!doctype html><title>waiting</title><script>{html.escape('')}{script}</script>"
        data = body.encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed", "refused"])
def test_a_page_of_another_origin_calls_the_api_only_when_allowed(
    browser: Any, web: WebServer, allowed: bool
) -> None:
    origin = web.allowed_origin if allowed else web.other_origin
    handler = type("Page", (_Page,), {"api": web.http_url, "key": web.acme})
    server = ThreadingHTTPServer(("127.0.0.1", urlsplit(origin).port or 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get(origin + "/")
        title = _wait(lambda: browser.title if browser.title != "waiting" else None)
        _shot(browser, f"2{int(not allowed)}-cross-origin-{'allowed' if allowed else 'refused'}")
    finally:
        server.shutdown()
        server.server_close()
    if allowed:
        assert title.startswith("allowed "), title
    else:
        assert title.startswith("refused TypeError"), title
