"""Templates over REST through Envoy, at seed 002's /api/v1 paths and the canonical /v1 ones."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from tests.servers import ServerProcess


def call(
    server: ServerProcess, method: str, path: str, body: Any = None
) -> tuple[int, Any, dict[str, str]]:
    """One REST call; answers (status, JSON body, headers), also for error statuses."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server.http_url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            status, headers = response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        raw = error.read()
        status, headers = error.code, {k.lower(): v for k, v in error.headers.items()}
    return status, json.loads(raw) if raw else None, headers


def test_seed_002_list_templates_is_a_bare_array_of_templates(
    gateway_server: ServerProcess,
) -> None:
    status, body, headers = call(gateway_server, "GET", "/api/v1/templates")
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    assert isinstance(body, list)
    by_name = {t["name"]: t for t in body}
    git = by_name["git-script-execution"]
    assert git["description"] == "Clone repository, run script, store results"
    assert [
        {k: p[k] for k in ("name", "type", "required", "description")} for p in git["parameters"]
    ] == [
        {
            "name": "repo_url",
            "type": "string",
            "required": True,
            "description": "Git repository URL",
        },
        {
            "name": "script_path",
            "type": "string",
            "required": True,
            "description": "Path to script within repository",
        },
        {
            "name": "output_path",
            "type": "string",
            "required": True,
            "description": "Path to store output",
        },
    ]
    ollama = by_name["ollama-inference"]
    assert ollama["description"] == "Run inference with specified model and prompt"
    assert ollama["parameters"][2]["required"] is False  # every field is printed
    assert ollama["builtin"] is True


def test_canonical_list_wraps_the_templates(gateway_server: ServerProcess) -> None:
    status, body, _ = call(gateway_server, "GET", "/v1/templates")
    assert status == 200
    assert "text-analysis" in {t["name"] for t in body["templates"]}


def test_seed_002_get_template_shows_its_steps(gateway_server: ServerProcess) -> None:
    status, body, _ = call(gateway_server, "GET", "/api/v1/templates/ollama-inference")
    assert status == 200, body
    assert body["name"] == "ollama-inference"
    [step] = body["steps"]
    assert {k: step[k] for k in ("type", "model", "prompt", "system")} == {
        "type": "ollama_generate",
        "model": "{{model}}",
        "prompt": "{{prompt}}",
        "system": "{{system_prompt}}",
    }
    status, body, _ = call(gateway_server, "GET", "/v1/templates/summarize-then-analyze")
    assert status == 200
    assert [s["name"] for s in body["steps"]] == ["summarize", "analyze"]


def test_an_unknown_template_is_404_with_the_seed_002_detail(
    gateway_server: ServerProcess,
) -> None:
    status, body, _ = call(gateway_server, "GET", "/api/v1/templates/no-such-template")
    assert status == 404
    assert body["detail"].startswith("Template 'no-such-template' not found")
    assert body["request_id"]


def test_seed_002_validate_takes_the_parameters_as_the_body(
    gateway_server: ServerProcess,
) -> None:
    status, body, _ = call(
        gateway_server,
        "POST",
        "/api/v1/templates/validate?template_name=text-analysis",
        {"text": "Explain quantum computing in simple terms"},
    )
    assert status == 200, body
    assert body == {"valid": True, "missing_parameters": [], "invalid_parameters": []}
    status, body, _ = call(
        gateway_server,
        "POST",
        "/api/v1/templates/validate?template_name=text-analysis",
        {"top_n": 2.5},
    )
    assert status == 200
    assert body["valid"] is False
    assert body["missing_parameters"] == ["text"]
    assert body["invalid_parameters"] == [
        {"name": "top_n", "reason": "must be an integer, not a number"}
    ]


def test_seed_002_validate_example_reports_the_unknown_model(
    gateway_server: ServerProcess,
) -> None:
    status, body, _ = call(
        gateway_server,
        "POST",
        "/api/v1/templates/validate?template_name=ollama-inference",
        {"model": "llama3.1:8b", "prompt": "Explain quantum computing in simple terms"},
    )
    assert status == 200, body
    assert body["valid"] is False and body["missing_parameters"] == []
    [invalid] = body["invalid_parameters"]
    assert invalid["name"] == "model"
    assert invalid["reason"].startswith("Model 'llama3.1:8b' not found")


def test_validate_on_the_canonical_path_and_unknown_templates(
    gateway_server: ServerProcess,
) -> None:
    status, body, _ = call(gateway_server, "POST", "/v1/templates/text-analysis:validate", {})
    assert status == 200
    assert body["missing_parameters"] == ["text"]
    status, body, _ = call(
        gateway_server, "POST", "/api/v1/templates/validate?template_name=nope", {}
    )
    assert status == 404 and "nope" in body["detail"]


def test_seed_002_create_task_from_a_template_runs_it(gateway_server: ServerProcess) -> None:
    payload = {
        "template": "text-analysis",
        "parameters": {"text": "one fish two fish red fish", "top_n": 1},
        "priority": 7,
    }
    status, created, _ = call(gateway_server, "POST", "/api/v1/tasks", payload)
    assert status == 200, created
    assert created["template"] == "text-analysis"
    assert created["parameters"] == {"text": "one fish two fish red fish", "top_n": 1}
    assert created["priority"] == 7 and created["status"] == "queued"
    deadline = time.monotonic() + 30
    while True:
        status, task, _ = call(gateway_server, "GET", f"/api/v1/tasks/{created['id']}")
        if task["status"] == "completed" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert task["status"] == "completed", task
    assert task["result"]["top_words"] == ["fish"]
    status, listed, _ = call(gateway_server, "GET", "/api/v1/tasks?template=text-analysis")
    assert created["id"] in [t["id"] for t in listed]


def test_seed_002_create_task_example_with_an_unknown_model_is_404(
    gateway_server: ServerProcess,
) -> None:
    payload = {
        "template": "ollama-inference",
        "parameters": {
            "model": "llama3.1:8b",
            "prompt": "Explain quantum computing in simple terms",
        },
        "priority": 5,
    }
    status, body, _ = call(gateway_server, "POST", "/api/v1/tasks", payload)
    assert status == 404, body
    assert body["detail"].startswith("Model 'llama3.1:8b' not found")
    reasons = [d.get("reason") for d in body["details"]]
    assert "MODEL_NOT_FOUND" in reasons


def test_bad_template_parameters_over_rest_are_400_naming_the_field(
    gateway_server: ServerProcess,
) -> None:
    payload = {"template": "text-analysis", "parameters": {"text": 5}}
    status, body, _ = call(gateway_server, "POST", "/api/v1/tasks", payload)
    assert status == 400
    assert "parameters.text" in body["detail"]
    violations = [
        v for d in body["details"] for v in d.get("fieldViolations", d.get("field_violations", []))
    ]
    assert [v["field"] for v in violations] == ["parameters.text"]


def test_user_templates_over_rest(gateway_server: ServerProcess) -> None:
    name = f"shout-{uuid.uuid4().hex[:8]}"
    definition = {
        "name": name,
        "description": "analyse a word said three times",
        "parameters": [{"name": "word", "type": "string", "required": True}],
        "steps": [{"type": "text_analysis", "text": "{{word}} {{word}} {{word}}"}],
    }
    status, created, _ = call(gateway_server, "POST", "/api/v1/templates", definition)
    assert status == 200, created
    assert created["builtin"] is False and created["steps"][0]["name"] == "step1"
    status, updated, _ = call(
        gateway_server, "PUT", f"/v1/templates/{name}", {**definition, "description": "v2"}
    )
    assert status == 200 and updated["description"] == "v2"
    status, task, _ = call(
        gateway_server, "POST", "/api/v1/tasks", {"template": name, "parameters": {"word": "hey"}}
    )
    assert status == 200 and task["task_type"] == "text_analysis"
    status, body, _ = call(gateway_server, "DELETE", f"/api/v1/templates/{name}")
    assert status == 200
    status, body, _ = call(gateway_server, "GET", f"/api/v1/templates/{name}")
    assert status == 404
    status, body, _ = call(gateway_server, "DELETE", "/api/v1/templates/text-analysis")
    assert status == 403 and "read-only" in body["detail"]
