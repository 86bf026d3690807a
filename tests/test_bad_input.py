"""Bad input gets INVALID_ARGUMENT naming the field, never INTERNAL, a hang or a crash."""

from __future__ import annotations

import grpc
import pytest

from taskorch.client import InvalidArgumentError, NotFoundError, TaskorchClientError
from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc
from tests.servers import ServerProcess


def _refused(server: ServerProcess, call: str, **kwargs: object) -> InvalidArgumentError:
    with server.client() as client, pytest.raises(InvalidArgumentError) as caught:
        getattr(client, call)(**kwargs)
    assert caught.value.code == "INVALID_ARGUMENT"
    return caught.value


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"text": "a" * 4001}, "text", "4001 characters"),
        ({"text": ""}, "text", "must not be empty"),
        ({"text": "   "}, "text", "must not be empty"),
        ({}, "task_type", "one of text, task_type or template"),
        ({"text": "x", "priority": 11}, "priority", "between 1 and 10"),
        ({"text": "x", "priority": -1}, "priority", "between 1 and 10"),
        ({"text": "x", "max_attempts": 101}, "max_attempts", "between 1 and 100"),
        ({"text": "x", "timeout_seconds": -5}, "timeout_seconds", "between 0"),
        ({"text": "x", "depends_on": ["not-a-uuid"]}, "depends_on[0]", "not a valid UUID"),
        (
            {"text": "x", "depends_on": ["0d9b9c0e-0c33-4b8e-9a36-1c5bd0a4e1f1"]},
            "depends_on",
            "unknown tasks",
        ),
        ({"text": "x", "template": "t"}, "template", "not several"),
        (
            {"task_type": "echo", "input_data": {"delay_seconds": "soon"}},
            "input_data.delay_seconds",
            "number",
        ),
        ({"text": "x", "request_id": "k" * 201}, "request_id", "longer than 200"),
    ],
)
def test_create_refuses_bad_fields(
    server: ServerProcess, kwargs: dict[str, object], field: str, words: str
) -> None:
    error = _refused(server, "create_task", **kwargs)
    assert error.field_violations, error
    assert error.field_violations[0].field == field
    assert words in error.message


def test_text_of_exactly_4000_characters_is_accepted(server: ServerProcess) -> None:
    with server.client() as client:
        task = client.create_task(text="word " * 800)
        assert client.wait_for_task(task.task_id, timeout=30).status == "COMPLETED"


@pytest.mark.parametrize("bad_id", ["nope", "1234", "g" * 36, "../../etc/passwd", "' OR 1=1 --"])
def test_malformed_task_ids_are_not_found(server: ServerProcess, bad_id: str) -> None:
    """An id that cannot exist is simply not found, as seed 003 answers `GET /v1/tasks/xyz`."""
    with server.client() as client:
        for call in (client.get_task, client.cancel_task, lambda i: list(client.watch_task(i))):
            with pytest.raises(NotFoundError) as caught:
                call(bad_id)
            assert caught.value.reason == "TASK_NOT_FOUND"
            assert caught.value.message == f"Task with ID '{bad_id}' not found"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": -1}, "limit"),
        ({"offset": -3}, "offset"),
        ({"page": -1}, "page"),
        ({"page": 2, "offset": 5}, "page"),
        ({"sort_by": "password"}, "sort_by"),
        ({"sort_order": "sideways"}, "sort_order"),
        ({"status": "sleeping"}, "status"),
        ({"page_token": "not-a-token"}, "page_token"),
    ],
)
def test_list_refuses_bad_parameters(
    server: ServerProcess, kwargs: dict[str, object], field: str
) -> None:
    error = _refused(server, "list_tasks", **kwargs)
    assert error.field_violations[0].field == field


def test_oversized_limit_is_reduced_not_refused(server: ServerProcess) -> None:
    with server.client() as client:
        assert client.list_tasks(limit=100_000).limit == 1000


def _nested(levels: int) -> dict[str, object]:
    nested: dict[str, object] = {}
    inner = nested
    for _ in range(levels - 1):
        inner["x"] = {}
        inner = inner["x"]  # type: ignore[assignment]
    return nested


def test_deeply_nested_input_is_refused(server: ServerProcess) -> None:
    error = _refused(server, "create_task", task_type="echo", input_data=_nested(33))
    assert error.field_violations[0].field == "input_data"
    assert "nested more than 32 levels" in error.message


def test_input_too_deep_to_parse_is_refused(server: ServerProcess) -> None:
    error = _refused(server, "create_task", task_type="echo", input_data=_nested(60))
    assert "not a valid message" in error.message


def test_garbage_bytes_get_a_clean_error_and_the_server_keeps_serving(
    server: ServerProcess,
) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        raw = channel.unary_unary(
            "/taskorch.v1.TaskService/CreateTask",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xff\xff\xff garbage", timeout=10)
        assert caught.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
        stub = pb_grpc.TaskServiceStub(channel)
        assert stub.CreateTask(pb.CreateTaskRequest(text="still fine"), timeout=10).task_id


# Issue 22 item 8: what a built-in handler reads is checked when the work is created, whatever
# the route (a task, or a subtask of a built-in kind added to a container), with the field named.
HANDLER_INPUTS = [
    ("echo", {"delay_seconds": None}, "delay_seconds", "a number"),
    ("echo", {"delay_seconds": "soon"}, "delay_seconds", "a number"),
    ("echo", {"delay_seconds": [1]}, "delay_seconds", "a number"),
    ("echo", {"progress_steps": None}, "progress_steps", "a whole number"),
    ("echo", {"delay_seconds": 1, "progress_steps": 2.5}, "progress_steps", "a whole number"),
    ("echo", {"fail_attempts": True}, "fail_attempts", "a whole number"),
    ("echo", {"fail_attempts": "2"}, "fail_attempts", "a whole number"),
    ("text_analysis", {"text": 5}, "text", "must be a string"),
    ("text_analysis", {"text": None}, "text", "must be a string"),
    ("text_analysis", {"text": "x", "top_n": "3"}, "top_n", "a whole number"),
]


@pytest.mark.parametrize(("kind", "data", "name", "words"), HANDLER_INPUTS[:7])
def test_a_task_whose_handler_input_has_a_wrong_type_is_refused_at_create(
    server: ServerProcess, kind: str, data: dict[str, object], name: str, words: str
) -> None:
    error = _refused(server, "create_task", task_type=kind, input_data=data)
    assert [v.field for v in error.field_violations] == [f"input_data.{name}"], error
    assert words in error.message


def _container_with_subtask(stub: pb_grpc.TaskServiceStub, kind: str, data: object) -> str:
    task = stub.CreateTask(pb.CreateTaskRequest(task_type="container"), timeout=10)
    request = pb.CreateSubtaskRequest(task_id=task.task_id, kind=kind)
    request.input.update(data)
    return stub.CreateSubtask(request, timeout=10).subtask_id


@pytest.mark.parametrize(("kind", "data", "name", "words"), HANDLER_INPUTS)
def test_a_subtask_of_a_built_in_kind_with_a_wrong_input_is_refused_at_create(
    server: ServerProcess, kind: str, data: dict[str, object], name: str, words: str
) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            _container_with_subtask(stub, kind, data)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"input.{name}" in caught.value.details() and words in caught.value.details()


def test_a_pending_subtask_cannot_be_given_a_wrong_input(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        task = stub.CreateTask(pb.CreateTaskRequest(task_type="container"), timeout=10)
        added = pb.CreateSubtaskRequest(task_id=task.task_id, kind="unrun-kind")
        subtask = stub.CreateSubtask(added, timeout=10)
        # A kind no built-in handler runs: its input belongs to its workers.
        update = pb.UpdateSubtaskRequest(task_id=task.task_id, subtask_id=subtask.subtask_id)
        update.input.update({"anything": None})
        stub.UpdateSubtask(update, timeout=10)
        # Stage 1: it waits for the stage-0 subtask no worker runs, so it stays pending.
        echo = stub.CreateSubtask(
            pb.CreateSubtaskRequest(task_id=task.task_id, kind="echo", stage=1), timeout=10
        )
        update = pb.UpdateSubtaskRequest(task_id=task.task_id, subtask_id=echo.subtask_id)
        update.input.update({"delay_seconds": None})
        with pytest.raises(grpc.RpcError) as caught:
            stub.UpdateSubtask(update, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input.delay_seconds" in caught.value.details()


def test_the_echo_inputs_that_were_accepted_still_run(server: ServerProcess) -> None:
    with server.client() as client:
        task = client.create_task(
            task_type="echo",
            input_data={"delay_seconds": 0.1, "progress_steps": 2, "fail_attempts": 0, "x": None},
        )
        assert client.wait_for_task(task.task_id, timeout=30).status == "COMPLETED"


LONG = "v" * 20_000


@pytest.mark.parametrize(
    ("call", "kwargs", "field"),
    [
        ("create_task", {"task_type": LONG}, "task_type"),
        ("create_task", {"task_type": "text_generation", "model_name": LONG}, ""),
        ("create_task", {"template": LONG}, ""),
        ("create_task", {"text": "x", "request_id": LONG}, "request_id"),
        ("create_task", {"text": "x", "depends_on": [LONG]}, "depends_on[0]"),
        ("list_tasks", {"status": LONG}, "status"),
        ("list_tasks", {"sort_by": LONG}, "sort_by"),
        ("list_tasks", {"task_type": "y" * 100_000, "sort_by": "z" * 100_000}, "sort_by"),
    ],
)
def test_a_long_value_is_quoted_by_a_bounded_prefix_in_the_error(
    server: ServerProcess, call: str, kwargs: dict[str, object], field: str
) -> None:
    """A value of any length is refused as bad input or not found (not RESOURCE_EXHAUSTED
    because the error that echoes it is too big to send), quoting at most a prefix of it."""
    with server.client() as client, pytest.raises(TaskorchClientError) as caught:
        getattr(client, call)(**kwargs)
    error = caught.value
    assert error.code in ("INVALID_ARGUMENT", "NOT_FOUND"), error
    assert len(error.message) <= 1000, len(error.message)
    assert "v" * 200 not in error.message and "z" * 200 not in error.message
    if field:
        assert error.field_violations and error.field_violations[0].field == field
    assert all(len(v.description) <= 1000 for v in error.field_violations)


def test_a_long_id_is_not_found_with_a_bounded_message(server: ServerProcess) -> None:
    with server.client() as client, pytest.raises(NotFoundError) as caught:
        client.get_task("t" * 20_000)
    assert len(caught.value.message) <= 1000
    assert caught.value.message.startswith("Task with ID 'tttt")
