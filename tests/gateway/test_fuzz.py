"""A property-based fuzz run over the REST surface described by /openapi.json (schemathesis),
with a fixed budget: a deterministic seed and a bounded number of examples per operation, valid
(positive) and schema-violating (negative) ones. No answer may be a 5xx, every answer must be
JSON, and the server must still be healthy afterwards.

The watch stream is left out (it stays open while its task runs); test_watch_http.py covers it.
Operations are listed from the compiled protos so that each is its own test; test_openapi.py
checks that the served document lists the same ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.schemas import BaseSchema

from taskorch.gateway import openapi
from tests.servers import ServerProcess, sqlite_url

pytestmark = pytest.mark.xdist_group("gateway_fuzz")

EXAMPLES_PER_OPERATION = 20


def _success(operation: dict[str, Any]) -> dict[str, Any]:
    """The documented success answer with a body (200, or 201 for seed 001's create)."""
    for status in ("200", "201"):
        if status in operation["responses"]:
            return dict(operation["responses"][status])
    raise AssertionError(f"no success documented: {operation['operationId']}")


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """Every operation with valid data; those with a body or query parameters also with
    invalid data (a string path parameter has no invalid value)."""
    cases = []
    for path, operations in openapi.document()["paths"].items():
        for verb, operation in operations.items():
            if "text/event-stream" in _success(operation).get("content", {}):
                continue  # server streams (watch, worker listen) do not end on their own
            cases.append((verb.upper(), path, GenerationMode.POSITIVE))
            queries = [p for p in operation.get("parameters", []) if p["in"] == "query"]
            if "requestBody" in operation or queries:
                cases.append((verb.upper(), path, GenerationMode.NEGATIVE))
    return sorted(cases)


CASES = _cases()
# Statuses seen, to check the run exercised success paths as well as refusals.
SEEN: Counter[int] = Counter()
BUDGET = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,  # the same examples on every run
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A gateway server of its own: fuzzed echo tasks may run for minutes, so no drain."""
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    server = ServerProcess(
        workdir=workdir,
        database_url=sqlite_url(workdir / "taskorch.db"),
        args=("--drain-seconds", "0"),
        gateway=True,
    )
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def rest_schema(fuzzed_server: ServerProcess) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed_server.http_url}/openapi.json", timeout=10)


@pytest.fixture(scope="module")
def existing_task(fuzzed_server: ServerProcess) -> str:
    """A real task id, so valid examples of the {task_id} paths reach a task, not a 400/404."""
    response = httpx.post(f"{fuzzed_server.http_url}/v1/tasks", json={"text": "fuzz"}, timeout=10)
    return str(response.json()["task_id"])


def _documented_media_type(method: str, path: str) -> str:
    """What a success answers: JSON, but for the few bodies documented otherwise (metrics)."""
    content = _success(openapi.document()["paths"][path][method.lower()])["content"]
    return str(next(iter(content)))


def _check(case: Case) -> None:
    response = case.call(timeout=10)
    SEEN[response.status_code] += 1
    where = (case.method, case.formatted_path, case.query, str(case.body)[:200])
    assert response.status_code < 500, (*where, response.text[:500])
    if response.status_code == 204:
        return
    kind = response.headers["content-type"][0]
    if response.status_code < 300:
        assert kind.startswith(_documented_media_type(case.method, case.path)), (*where, kind)
        if not kind.startswith("application/json"):
            return
    assert kind.startswith("application/json"), where
    body = response.json()
    if response.status_code >= 400 and case.path.startswith("/openai/"):
        # OpenAI's error shape; the request id is the x-request-id header
        assert isinstance(body, dict) and body["error"]["message"] and body["error"]["type"]
        assert response.headers["x-request-id"], where
    elif response.status_code >= 400:
        assert isinstance(body, dict) and body["message"] and body["request_id"], where


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES]
)
def test_no_5xx_and_json_answers(
    rest_schema: BaseSchema, existing_task: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = rest_schema[path][method]
    pinned = {"task_id": existing_task} if "{task_id}" in path and mode.is_positive else None

    @BUDGET
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned))
    def run(case: Case) -> None:
        _check(case)

    run()


def test_the_server_survived_the_fuzzing(fuzzed_server: ServerProcess) -> None:
    assert fuzzed_server.proc is not None and fuzzed_server.proc.poll() is None
    health = httpx.get(f"{fuzzed_server.http_url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    logs = fuzzed_server.logs()
    assert '"unexpected error"' not in logs, "the server hit an unexpected error (INTERNAL)"
    assert "the gateway (envoy) died" not in logs
    if sum(SEEN.values()) >= 100:  # (fewer when this test runs alone)
        assert sum(n for status, n in SEEN.items() if status < 300) >= 10, SEEN
        assert sum(n for status, n in SEEN.items() if status >= 400) >= 10, SEEN
