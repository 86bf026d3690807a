"""TaskService over gRPC: each RPC's happy path and its error codes and details."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from taskorch.client import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    Task,
)
from taskorch.v1 import task_service_pb2 as pb
from taskorch.v1 import task_service_pb2_grpc as pb_grpc
from tests.conftest import ServerFactory
from tests.servers import ServerProcess

SEED_003_TEXT = "Multimodal is building AI-powered tools to automate complex tasks."


def test_text_task_runs_to_a_word_count_and_top_words(server: ServerProcess) -> None:
    with server.client() as client:
        created = client.create_task(text=SEED_003_TEXT)
        assert created.status == "PENDING"
        assert str(uuid.UUID(created.task_id)) == created.task_id
        assert uuid.UUID(created.task_id).version == 4
        done = client.wait_for_task(created.task_id, timeout=30)
    assert done.status == "COMPLETED"
    assert done.result is not None
    assert done.result["word_count"] == 9
    assert done.result["text"] == SEED_003_TEXT
    assert "multimodal" in done.result["top_words"]
    assert "is" not in done.result["top_words"] and "to" not in done.result["top_words"]
    assert done.started_at is not None and done.completed_at is not None
    assert done.created_at <= done.started_at <= done.completed_at  # type: ignore[operator]
    assert done.progress == 100.0
    assert done.worker_id


def test_top_words_rank_by_frequency_without_stop_words(server: ServerProcess) -> None:
    text = "The cat sat. The cat ran. A dog ran to the cat and the dog barked."
    with server.client() as client:
        done = client.wait_for_task(client.create_task(text=text).task_id, timeout=30)
    assert done.result is not None
    assert done.result["top_words"][:3] == ["cat", "ran", "dog"]
    assert done.result["word_frequencies"]["cat"] == 3
    assert done.result["word_count"] == 16


def test_get_returns_the_same_task(server: ServerProcess) -> None:
    with server.client() as client:
        created = client.create_task(text="hello there", priority=8)
        fetched = client.get_task(created.task_id)
    assert fetched.task_id == created.task_id
    assert fetched.priority == 8
    assert fetched.text == "hello there"
    assert fetched.task_type == "text_analysis"


def test_seed_001_task_ids_with_a_task_prefix_are_accepted(server: ServerProcess) -> None:
    with server.client() as client:
        created = client.create_task(text="prefixed ids")
        assert client.get_task(f"task_{created.task_id}").task_id == created.task_id


def test_unknown_task_is_not_found_with_the_seed_error_code(server: ServerProcess) -> None:
    missing = str(uuid.uuid4())
    with server.client() as client, pytest.raises(NotFoundError) as caught:
        client.get_task(missing)
    assert caught.value.reason == "TASK_NOT_FOUND"
    assert missing in caught.value.message
    assert caught.value.request_id.startswith("req_")


def test_errors_carry_error_info_bad_request_and_request_id(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateTask(pb.CreateTaskRequest(text="x", priority=11), timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    kinds = {d.type_url.rsplit(".", 1)[-1]: d for d in status.details}
    info = error_details_pb2.ErrorInfo()
    kinds["ErrorInfo"].Unpack(info)
    assert info.reason == "VALIDATION_ERROR"
    bad = error_details_pb2.BadRequest()
    kinds["BadRequest"].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["priority"]
    assert "between 1 and 10" in bad.field_violations[0].description
    assert "RequestInfo" in kinds


def test_request_id_comes_back_in_response_metadata(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        _, call = stub.CreateTask.with_call(
            pb.CreateTaskRequest(text="ids"),
            metadata=(("x-request-id", "my-trace-123"),),
            timeout=10,
        )
    assert ("x-request-id", "my-trace-123") in call.trailing_metadata()


def test_idempotent_create_returns_the_first_task(server: ServerProcess) -> None:
    key = f"order-{uuid.uuid4()}"
    with server.client() as client:
        first = client.create_task(text="only once", request_id=key)
        second = client.create_task(text="only once", request_id=key)
        assert second.task_id == first.task_id
        listed = client.list_tasks(limit=1000).tasks
        assert sum(t.request_id == key for t in listed) == 1
        with pytest.raises(ConflictError) as caught:
            client.create_task(text="something else", request_id=key)
    assert caught.value.reason == "REQUEST_ID_REUSED"


def test_idempotency_key_metadata_works_like_request_id(server: ServerProcess) -> None:
    key = f"hdr-{uuid.uuid4()}"
    with grpc.insecure_channel(server.grpc_addr) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        request = pb.CreateTaskRequest(text="header key")
        first = stub.CreateTask(request, metadata=(("idempotency-key", key),), timeout=10)
        again = stub.CreateTask(request, metadata=(("idempotency-key", key),), timeout=10)
    assert first.task_id == again.task_id
    assert first.request_id == key


def test_cancel_a_pending_task(server: ServerProcess) -> None:
    with server.client() as client:
        task = client.create_task(task_type="echo", input_data={"delay_seconds": 30})
        cancelled = client.cancel_task(task.task_id, reason="changed my mind")
        assert cancelled.status == "CANCELLED"
        assert cancelled.cancelled_at is not None
        again = client.cancel_task(task.task_id)
        assert again.status == "CANCELLED"
        assert client.get_task(task.task_id).status == "CANCELLED"


def test_cancel_a_finished_task_is_a_conflict(server: ServerProcess) -> None:
    with server.client() as client:
        task = client.create_task(text="finish first")
        client.wait_for_task(task.task_id, timeout=30)
        with pytest.raises(ConflictError) as caught:
            client.cancel_task(task.task_id)
    assert caught.value.code == "ABORTED"
    assert caught.value.reason == "TASK_NOT_CANCELLABLE"
    assert "COMPLETED" in caught.value.message


def test_cancel_an_unknown_task_is_not_found(server: ServerProcess) -> None:
    with server.client() as client, pytest.raises(NotFoundError):
        client.cancel_task(str(uuid.uuid4()))


def test_cancel_reaches_a_running_worker_quickly(server: ServerProcess) -> None:
    with server.client() as client:
        task = client.create_task(
            task_type="echo", input_data={"delay_seconds": 60, "progress_steps": 600}
        )
        for event in client.watch_task(task.task_id):
            if event.status == "RUNNING":
                break
        client.cancel_task(task.task_id)
        final = client.wait_for_task(task.task_id, timeout=10)
        assert final.status == "CANCELLED"
        # The worker slot is free again: new work runs at once.
        quick = client.wait_for_task(client.create_task(text="next").task_id, timeout=10)
        assert quick.status == "COMPLETED"


def test_echo_retries_with_backoff_then_completes(server: ServerProcess) -> None:
    with server.client() as client:
        task = client.create_task(task_type="echo", input_data={"fail_attempts": 1})
        messages = [e.message for e in client.watch_task(task.task_id)]
        final = client.get_task(task.task_id)
    assert final.status == "COMPLETED"
    assert final.attempt == 2
    assert final.result is not None and final.result["attempt"] == 2
    assert any("attempt 1 of 3 failed" in m and "retrying in 1 s" in m for m in messages)


def test_a_task_fails_after_max_attempts_with_the_last_error(server: ServerProcess) -> None:
    with server.client() as client:
        task = client.create_task(task_type="echo", input_data={"fail_attempts": 5}, max_attempts=2)
        final = client.wait_for_task(task.task_id, timeout=30)
    assert final.status == "FAILED"
    assert "fail attempt 2" in final.error
    assert final.error_code == "INTERNAL_ERROR"
    assert final.attempt == 2


def test_unsupported_task_type_is_refused_at_create(server: ServerProcess) -> None:
    with server.client() as client, pytest.raises(InvalidArgumentError) as caught:
        client.create_task(
            task_type="visual_question_answering", model_name="vqa", input_data={"p": 1}
        )
    assert caught.value.reason == "UNSUPPORTED_TASK_TYPE"
    assert "text_analysis" in caught.value.message
    assert caught.value.field_violations[0].field == "task_type"


def test_task_dataclass_reports_done(server: ServerProcess) -> None:
    with server.client() as client:
        task: Task = client.create_task(text="done flag")
        assert not task.done
        assert client.wait_for_task(task.task_id, timeout=30).done


# -- batch create ------------------------------------------------------------------------------


def test_batch_create_queues_every_task_in_order_and_runs_them(server: ServerProcess) -> None:
    texts = [f"batch text number {i} of fifty" for i in range(50)]
    with server.client() as client:
        before = client.list_tasks(limit=1).total
        created = client.create_tasks(
            [{"text": t} for t in texts[:-1]] + [{"task_type": "echo", "priority": 9}]
        )
        assert [t.text for t in created[:-1]] == texts[:-1]
        assert created[-1].task_type == "echo" and created[-1].priority == 9
        assert len({t.task_id for t in created}) == 50
        assert all(t.status == "PENDING" for t in created)
        assert client.list_tasks(limit=1).total == before + 50
        done = [client.wait_for_task(t.task_id, timeout=60) for t in created]
    assert {t.status for t in done} == {"COMPLETED"}
    assert done[7].result is not None and done[7].result["word_count"] == 6


def test_a_bad_request_refuses_the_whole_batch_naming_it(server: ServerProcess) -> None:
    with server.client() as client:
        before = client.list_tasks(limit=1).total
        with pytest.raises(InvalidArgumentError) as bad:
            client.create_tasks([{"text": "fine"}, {"text": "also fine"}, {"text": "x" * 4001}])
        assert [v.field for v in bad.value.field_violations] == ["requests[2].text"]
        assert bad.value.message.startswith("requests[2]: ")
        with pytest.raises(InvalidArgumentError) as unknown:
            client.create_tasks([{"text": "fine"}, {"task_type": "visual_question_answering"}])
        assert unknown.value.field_violations[0].field == "requests[1].task_type"
        with pytest.raises(InvalidArgumentError) as empty:
            client.create_tasks([])
        assert empty.value.field_violations[0].field == "requests"
        with pytest.raises(InvalidArgumentError) as too_many:
            client.create_tasks([{"task_type": "echo"}] * 1001)
        assert too_many.value.field_violations[0].field == "requests"
        assert client.list_tasks(limit=1).total == before  # nothing of them was stored


def test_a_retried_batch_creates_nothing_twice(server: ServerProcess) -> None:
    keys = [f"batch-{uuid.uuid4()}" for _ in range(3)]
    requests = [{"task_type": "echo", "request_id": key} for key in keys]
    with server.client() as client:
        first = client.create_tasks(requests)
        again = client.create_tasks([*requests, {"task_type": "echo"}])
        assert [t.task_id for t in again[:3]] == [t.task_id for t in first]
        assert again[3].task_id not in {t.task_id for t in first}
        with pytest.raises(InvalidArgumentError) as repeated:
            client.create_tasks([requests[0], requests[0]])
        assert repeated.value.field_violations[0].field == "requests"
        with pytest.raises(ConflictError) as reused:
            client.create_tasks([{"text": "different", "request_id": keys[1]}])
        assert reused.value.reason == "REQUEST_ID_REUSED"
        with pytest.raises(TypeError):
            client.create_tasks([{"txt": "typo"}])


@pytest.mark.parametrize("blocking", [True, False])
def test_wait_for_task_times_out_at_its_deadline_while_nothing_happens(
    server_factory: ServerFactory, blocking: bool
) -> None:
    """No worker runs the task, so no event comes: both clients give up at the deadline."""
    server = server_factory("--workers", "0")
    with server.client() as client:
        task = client.create_task(task_type="echo")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        if blocking:
            with server.client() as client:
                client.wait_for_task(task.task_id, timeout=2)
        else:

            async def wait() -> None:
                async with server.async_client() as client:
                    await client.wait_for_task(task.task_id, timeout=2)

            asyncio.run(wait())
    assert 1.9 <= time.monotonic() - started <= 4.0
