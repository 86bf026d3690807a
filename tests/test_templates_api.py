"""TemplateService over gRPC, and tasks created from templates running on a real server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from taskorch.client import Client, InvalidArgumentError, NotFoundError, Task
from taskorch.client._errors import TaskorchClientError, from_rpc_error
from taskorch.v1 import template_service_pb2 as pb
from taskorch.v1 import template_service_pb2_grpc as pb_grpc
from tests.servers import ServerProcess

BUILTINS = {
    "text-analysis",
    "model-inference",
    "ollama-inference",
    "summarize-then-analyze",
    "git-script-execution",
}


@pytest.fixture
def templates(server: ServerProcess) -> Iterator[pb_grpc.TemplateServiceStub]:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        yield pb_grpc.TemplateServiceStub(channel)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client(timeout=30) as api:
        yield api


def refused(call: Callable[[], Any]) -> TaskorchClientError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return from_rpc_error(caught.value)


def template(name: str, definition: dict[str, Any]) -> pb.Template:
    return json_format.ParseDict({"name": name, **definition}, pb.Template())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def validate(
    templates: pb_grpc.TemplateServiceStub, name: str, parameters: dict[str, Any]
) -> pb.ValidateTemplateParametersResponse:
    request = pb.ValidateTemplateParametersRequest(name=name)
    request.parameters.update(parameters)
    answer: pb.ValidateTemplateParametersResponse = templates.ValidateTemplateParameters(
        request, timeout=10
    )
    return answer


def wait_until(task_id: str, client: Client, done: Callable[[Task], bool]) -> Task:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task = client.get_task(task_id)
        if done(task):
            return task
        time.sleep(0.05)
    raise TimeoutError(task_id)


CHAIN = {
    "description": "echo a message, then analyse what the first step said",
    "parameters": [
        {"name": "message", "type": "string", "required": True},
        {"name": "top_n", "type": "integer", "default": 3},
    ],
    "steps": [
        {"name": "say", "type": "echo", "said": "{{message}}", "repeat": 2},
        {
            "name": "count",
            "type": "text_analysis",
            "text": "{{steps.say.output.echo.said}} and again {{steps.say.output.echo.said}}",
            "top_n": "{{top_n}}",
        },
    ],
}


# -- list, get, create, update, delete ---------------------------------------------------------


def test_list_and_get_show_the_built_in_templates(templates: pb_grpc.TemplateServiceStub) -> None:
    listed = templates.ListTemplates(pb.ListTemplatesRequest(), timeout=10).templates
    builtin = {t.name: t for t in listed if t.builtin}
    assert set(builtin) >= BUILTINS
    ollama = templates.GetTemplate(pb.GetTemplateRequest(name="ollama-inference"), timeout=10)
    assert ollama.builtin
    assert ollama.description == "Run inference with specified model and prompt"
    assert [(p.name, p.type, p.required) for p in ollama.parameters][:3] == [
        ("model", "string", False),
        ("prompt", "string", True),
        ("system_prompt", "string", False),
    ]
    assert ollama.parameters[0].default.string_value == "smollm2-135m-instruct"
    [step] = [json_format.MessageToDict(s) for s in ollama.steps]
    assert step["type"] == "ollama_generate"
    assert (step["model"], step["prompt"], step["system"]) == (
        "{{model}}",
        "{{prompt}}",
        "{{system_prompt}}",
    )


def test_unknown_template_is_not_found(templates: pb_grpc.TemplateServiceStub) -> None:
    error = refused(lambda: templates.GetTemplate(pb.GetTemplateRequest(name="nope"), timeout=10))
    assert isinstance(error, NotFoundError)
    assert error.reason == "TEMPLATE_NOT_FOUND"
    assert "ollama-inference" in str(error)


def test_user_templates_are_created_updated_and_deleted(
    templates: pb_grpc.TemplateServiceStub,
) -> None:
    name = unique("chain")
    created = templates.CreateTemplate(
        pb.CreateTemplateRequest(template=template(name, CHAIN)), timeout=10
    )
    assert not created.builtin and created.created_at.seconds > 0
    assert [s["name"] for s in (json_format.MessageToDict(s) for s in created.steps)] == [
        "say",
        "count",
    ]
    assert created.parameters[1].default.number_value == 3
    assert name in [t.name for t in templates.ListTemplates(pb.ListTemplatesRequest()).templates]
    again = refused(
        lambda: templates.CreateTemplate(pb.CreateTemplateRequest(template=template(name, CHAIN)))
    )
    assert again.code == "ALREADY_EXISTS" and again.reason == "TEMPLATE_ALREADY_EXISTS"

    changed = templates.UpdateTemplate(
        pb.UpdateTemplateRequest(name=name, template=template("", {**CHAIN, "description": "v2"})),
        timeout=10,
    )
    assert changed.description == "v2"
    assert templates.GetTemplate(pb.GetTemplateRequest(name=name)).description == "v2"

    templates.DeleteTemplate(pb.DeleteTemplateRequest(name=name), timeout=10)
    gone = refused(lambda: templates.GetTemplate(pb.GetTemplateRequest(name=name)))
    assert gone.reason == "TEMPLATE_NOT_FOUND"
    gone = refused(lambda: templates.DeleteTemplate(pb.DeleteTemplateRequest(name=name)))
    assert gone.reason == "TEMPLATE_NOT_FOUND"


def test_built_in_templates_are_read_only(templates: pb_grpc.TemplateServiceStub) -> None:
    update = pb.UpdateTemplateRequest(name="text-analysis", template=template("", CHAIN))
    error = refused(lambda: templates.UpdateTemplate(update, timeout=10))
    assert error.code == "PERMISSION_DENIED"
    assert error.reason == "TEMPLATE_READ_ONLY"
    assert "built in and read-only" in str(error)
    delete = pb.DeleteTemplateRequest(name="text-analysis")
    error = refused(lambda: templates.DeleteTemplate(delete, timeout=10))
    assert error.reason == "TEMPLATE_READ_ONLY"
    create = pb.CreateTemplateRequest(template=template("text-analysis", CHAIN))
    assert refused(lambda: templates.CreateTemplate(create)).code == "ALREADY_EXISTS"


def test_an_invalid_definition_names_its_bad_fields(
    templates: pb_grpc.TemplateServiceStub,
) -> None:
    bad = {
        "parameters": [{"name": "n", "type": "decimal"}],
        "steps": [{"type": "text_analysis", "text": "{{missing}}"}],
    }
    request = pb.CreateTemplateRequest(template=template(unique("bad"), bad))
    error = refused(lambda: templates.CreateTemplate(request, timeout=10))
    assert isinstance(error, InvalidArgumentError)
    assert [v.field for v in error.field_violations] == [
        "template.parameters[0].type",
        "template.steps[0].text",
    ]


# -- validation --------------------------------------------------------------------------------


def test_validate_reports_missing_and_invalid_parameters(
    templates: pb_grpc.TemplateServiceStub,
) -> None:
    answer = validate(templates, "text-analysis", {"top_n": "many", "colour": 1})
    assert not answer.valid
    assert list(answer.missing_parameters) == ["text"]
    reasons = {p.name: p.reason for p in answer.invalid_parameters}
    assert reasons["top_n"] == "must be an integer, not a string"
    assert reasons["colour"].startswith("is not a parameter of template 'text-analysis'")
    fine = validate(templates, "text-analysis", {"text": "hello", "top_n": 2})
    assert fine.valid and not fine.missing_parameters and not fine.invalid_parameters


def test_validate_seed_002_example_checks_the_model_too(
    templates: pb_grpc.TemplateServiceStub,
) -> None:
    # Seed 002's example parameters; this server has no model called llama3.1:8b.
    request = pb.ValidateTemplateParametersRequest(template_name="ollama-inference")
    request.parameters.update(
        {"model": "llama3.1:8b", "prompt": "Explain quantum computing in simple terms"}
    )
    answer = templates.ValidateTemplateParameters(request, timeout=10)
    assert not answer.valid and not answer.missing_parameters
    [invalid] = answer.invalid_parameters
    assert invalid.name == "model"
    assert invalid.reason.startswith("Model 'llama3.1:8b' not found")


def test_validate_an_unknown_template_is_not_found(
    templates: pb_grpc.TemplateServiceStub,
) -> None:
    error = refused(lambda: validate(templates, "no-such-template", {}))
    assert error.reason == "TEMPLATE_NOT_FOUND"
    empty = pb.ValidateTemplateParametersRequest()
    error = refused(lambda: templates.ValidateTemplateParameters(empty, timeout=10))
    assert isinstance(error, InvalidArgumentError)
    assert [v.field for v in error.field_violations] == ["template_name"]


# -- tasks from templates ----------------------------------------------------------------------


def test_a_text_analysis_template_task_runs(client: Client) -> None:
    created = client.create_task(
        template="text-analysis", parameters={"text": "red fish blue fish", "top_n": 1}
    )
    assert created.template == "text-analysis"
    assert created.task_type == "text_analysis"
    assert created.parameters == {"text": "red fish blue fish", "top_n": 1}
    done = client.wait_for_task(created.task_id, timeout=30)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    assert done.result["top_words"] == ["fish"] and done.result["word_count"] == 4
    listed = client.list_tasks(template="text-analysis")
    assert created.task_id in [t.task_id for t in listed.tasks]


def test_bad_template_parameters_are_refused_with_their_names(client: Client) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_task(template="text-analysis", parameters={"text": 42, "top_n": "x"})
    assert [v.field for v in caught.value.field_violations] == [
        "parameters.text",
        "parameters.top_n",
    ]
    assert "invalid parameters for template 'text-analysis'" in str(caught.value)
    with pytest.raises(InvalidArgumentError) as missing:
        client.create_task(template="git-script-execution", parameters={"repo_url": "x"})
    assert [v.field for v in missing.value.field_violations] == [
        "parameters.script_path",
        "parameters.output_path",
    ]
    with pytest.raises(NotFoundError) as unknown:
        client.create_task(template="no-such-template", parameters={})
    assert unknown.value.reason == "TEMPLATE_NOT_FOUND"


def test_an_unknown_model_is_refused_and_nothing_is_queued(client: Client) -> None:
    before = client.list_tasks(template="ollama-inference").total
    with pytest.raises(NotFoundError) as caught:
        client.create_task(
            template="ollama-inference", parameters={"model": "llama3.1:8b", "prompt": "Hi"}
        )
    assert caught.value.reason == "MODEL_NOT_FOUND"
    assert client.list_tasks(template="ollama-inference").total == before


def test_the_second_step_receives_the_first_steps_output(
    client: Client, templates: pb_grpc.TemplateServiceStub
) -> None:
    name = unique("chain")
    templates.CreateTemplate(pb.CreateTemplateRequest(template=template(name, CHAIN)), timeout=10)
    created = client.create_task(template=name, parameters={"message": "tick tock bell tick"})
    assert created.task_type == "template"
    done = client.wait_for_task(created.task_id, timeout=30)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    assert done.result["text"] == "tick tock bell tick and again tick tock bell tick"
    assert done.result["word_count"] == 10
    assert done.result["top_words"][0] == "tick"
    assert len(done.result["top_words"]) == 3  # the template's default top_n
    assert done.result["steps"]["say"]["echo"] == {"said": "tick tock bell tick", "repeat": 2}


def test_a_step_reading_an_output_that_does_not_exist_fails_the_task(
    client: Client, templates: pb_grpc.TemplateServiceStub
) -> None:
    name = unique("broken-chain")
    broken = {
        "steps": [
            {"name": "say", "type": "echo", "said": "hi"},
            {"name": "count", "type": "text_analysis", "text": "{{steps.say.output.nothing}}"},
        ]
    }
    templates.CreateTemplate(pb.CreateTemplateRequest(template=template(name, broken)))
    created = client.create_task(template=name, parameters={})
    done = client.wait_for_task(created.task_id, timeout=30)
    assert done.status == "FAILED"
    assert done.error_code == "STEP_OUTPUT_MISSING"
    assert done.error is not None
    assert "step 'count'" in done.error and "has no 'nothing'" in done.error


def test_git_script_execution_waits_for_a_remote_worker(client: Client) -> None:
    created = client.create_task(
        template="git-script-execution",
        parameters={
            "repo_url": "https://example.invalid/scripts.git",
            "script_path": "run.sh",
            "output_path": "results/out.json",
        },
    )
    assert created.task_type == "git_script"
    assert created.progress_message is not None and "git_script" in created.progress_message
    # The in-process workers take the oldest runnable work first: once a later echo task has
    # run, they have passed this one over.
    later = client.create_task(task_type="echo")
    assert client.wait_for_task(later.task_id, timeout=30).status == "COMPLETED"
    still = client.get_task(created.task_id)
    assert still.status == "PENDING" and still.worker_id in (None, "")
    client.cancel_task(created.task_id)
