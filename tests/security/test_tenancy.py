"""Tenant isolation: tenant globex cannot read, change or even detect what tenant acme owns.

Every attempt on another tenant's id answers NOT_FOUND, exactly as an id that does not exist
would (never PERMISSION_DENIED, never a worker id or a status); lists, counts, grouped status
and /health count only the caller's tenant. An admin key sees every tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2

from taskorch.v1 import chat_service_pb2 as chat_pb
from taskorch.v1 import chat_service_pb2_grpc as chat_grpc
from taskorch.v1 import schedule_service_pb2 as schedule_pb
from taskorch.v1 import schedule_service_pb2_grpc as schedule_grpc
from taskorch.v1 import status_pb2
from taskorch.v1 import system_service_pb2 as system_pb
from taskorch.v1 import system_service_pb2_grpc as system_grpc
from taskorch.v1 import task_service_pb2 as task_pb
from taskorch.v1 import task_service_pb2_grpc as task_grpc
from taskorch.v1 import template_service_pb2 as template_pb
from taskorch.v1 import template_service_pb2_grpc as template_grpc
from taskorch.v1 import worker_service_pb2 as worker_pb
from taskorch.v1 import worker_service_pb2_grpc as worker_grpc
from tests.gateway._http import assert_json_error
from tests.security.conftest import TINY_TEXT_MODEL, Secured

pytestmark = pytest.mark.xdist_group("secured")


@dataclass
class Api:
    """The gRPC stubs, calling with one credential."""

    channel: grpc.Channel
    key: str

    def __post_init__(self) -> None:
        self.tasks = task_grpc.TaskServiceStub(self.channel)
        self.workers = worker_grpc.WorkerServiceStub(self.channel)
        self.chat = chat_grpc.ChatServiceStub(self.channel)
        self.templates = template_grpc.TemplateServiceStub(self.channel)
        self.schedules = schedule_grpc.ScheduleServiceStub(self.channel)
        self.system = system_grpc.SystemServiceStub(self.channel)

    def __call__(self, method: Callable[..., Any], request: Any) -> Any:
        return method(request, metadata=(("x-api-key", self.key),), timeout=15)

    def stream(self, method: Callable[..., Any], request: Any) -> Any:
        """The first message of a server stream."""
        call = method(request, metadata=(("x-api-key", self.key),), timeout=15)
        try:
            return next(iter(call))
        finally:
            call.cancel()


@dataclass
class Tenants:
    acme: Api
    globex: Api
    acme_worker: Api
    globex_worker: Api
    admin: Api


@pytest.fixture(scope="module")
def tenants(secured: Secured) -> Iterator[Tenants]:
    with secured.channel() as channel:
        yield Tenants(
            Api(channel, secured.acme),
            Api(channel, secured.globex),
            Api(channel, secured.acme_worker),
            Api(channel, secured.globex_worker),
            Api(channel, secured.admin),
        )


def refusal(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), str(raised.value.details())


def assert_not_found(call: Callable[[], Any]) -> str:
    code, details = refusal(call)
    assert code is grpc.StatusCode.NOT_FOUND, details
    return details


def _echo_task(api: Api, kind: str = "echo") -> task_pb.Task:
    """A task whose one subtask of ``kind`` waits for a worker (the server runs none)."""
    if kind == "echo":
        return api(api.tasks.CreateTask, task_pb.CreateTaskRequest(task_type="echo"))
    task = api(api.tasks.CreateTask, task_pb.CreateTaskRequest(task_type="container"))
    api(api.tasks.CreateSubtask, task_pb.CreateSubtaskRequest(task_id=task.task_id, kind=kind))
    return task


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


@pytest.fixture(scope="module")
def acme_task(tenants: Tenants) -> task_pb.Task:
    return _echo_task(tenants.acme)


def test_another_tenants_task_is_not_found_for_every_task_call(
    tenants: Tenants, acme_task: task_pb.Task
) -> None:
    globex = tenants.globex
    attempts: dict[str, Callable[[str], Any]] = {
        "get": lambda tid: globex(globex.tasks.GetTask, task_pb.GetTaskRequest(task_id=tid)),
        "cancel": lambda tid: globex(
            globex.tasks.CancelTask, task_pb.CancelTaskRequest(task_id=tid)
        ),
        "priority": lambda tid: globex(
            globex.tasks.UpdateTaskPriority,
            task_pb.UpdateTaskPriorityRequest(task_id=tid, priority=9),
        ),
        "watch": lambda tid: globex.stream(
            globex.tasks.WatchTask, task_pb.WatchTaskRequest(task_id=tid)
        ),
        "watch many": lambda tid: globex.stream(
            globex.tasks.WatchTasks, task_pb.WatchTasksRequest(task_ids=[tid])
        ),
        "subtasks": lambda tid: globex(
            globex.tasks.ListSubtasks, task_pb.ListSubtasksRequest(task_id=tid)
        ),
        "take subtask": lambda tid: globex(
            globex.tasks.TakeSubtask, task_pb.TakeSubtaskRequest(task_id=tid, worker_id="w")
        ),
        "add subtask": lambda tid: globex(
            globex.tasks.CreateSubtask, task_pb.CreateSubtaskRequest(task_id=tid, kind="echo")
        ),
        "artifact": lambda tid: globex(
            globex.tasks.GetTaskArtifact,
            task_pb.GetTaskArtifactRequest(task_id=tid, name="speech.wav"),
        ),
        "depend on": lambda tid: globex(
            globex.tasks.CreateTask, task_pb.CreateTaskRequest(text="x", depends_on=[tid])
        ),
    }
    task_id, unknown = acme_task.task_id, str(uuid.uuid4())
    for name, attempt in attempts.items():
        code, foreign = refusal(lambda a=attempt: a(task_id))
        # The same answer as for an id that does not exist, apart from the id itself: not
        # found (a dependency is a field of the request, so that one is invalid).
        assert (code, foreign.replace(task_id, unknown)) == refusal(lambda a=attempt: a(unknown))
        expected = "INVALID_ARGUMENT" if name == "depend on" else "NOT_FOUND"
        assert code.name == expected, (name, foreign)
    # ...and nothing changed.
    again = tenants.acme(tenants.acme.tasks.GetTask, task_pb.GetTaskRequest(task_id=task_id))
    assert again.status == status_pb2.PENDING
    assert again.priority == acme_task.priority
    listed = tenants.acme(
        tenants.acme.tasks.ListSubtasks, task_pb.ListSubtasksRequest(task_id=task_id)
    )
    assert len(listed.subtasks) == 1


def test_a_stream_of_all_my_tasks_holds_only_my_tenants(tenants: Tenants) -> None:
    globex = tenants.globex
    call = globex.tasks.WatchTasks(
        task_pb.WatchTasksRequest(), metadata=(("x-api-key", globex.key),), timeout=15
    )
    try:
        call.initial_metadata()  # the stream follows globex's tasks from here on
        acme_task = _echo_task(tenants.acme)
        globex_task = _echo_task(globex)
        # Events of one tenant come in the order they happened: acme's, created first,
        # would come first had it leaked.
        first = next(iter(call))
    finally:
        call.cancel()
    assert first.task_id == globex_task.task_id != acme_task.task_id


def test_lists_and_counts_hold_only_the_callers_tasks(
    tenants: Tenants, acme_task: task_pb.Task
) -> None:
    globex_task = _echo_task(tenants.globex)
    for api, mine, theirs in (
        (tenants.acme, acme_task.task_id, globex_task.task_id),
        (tenants.globex, globex_task.task_id, acme_task.task_id),
    ):
        listed = api(api.tasks.ListTasks, task_pb.ListTasksRequest(limit=1000))
        ids = {t.task_id for t in listed.tasks}
        assert mine in ids and theirs not in ids
        assert listed.total == len(ids)
        grouped = api(api.tasks.GetTasksByStatus, task_pb.GetTasksByStatusRequest(limit=1000))
        queued = {t.task_id for t in grouped.queued}
        assert mine in queued and theirs not in queued
    everyone = tenants.admin(tenants.admin.tasks.ListTasks, task_pb.ListTasksRequest(limit=1000))
    assert {acme_task.task_id, globex_task.task_id} <= {t.task_id for t in everyone.tasks}
    admin_view = tenants.admin(
        tenants.admin.tasks.GetTask, task_pb.GetTaskRequest(task_id=acme_task.task_id)
    )
    assert admin_view.task_id == acme_task.task_id


def test_health_counts_only_the_callers_tenant(secured: Secured, tenants: Tenants) -> None:
    before = {
        name: getattr(tenants, name)(
            getattr(tenants, name).system.GetHealth, system_pb.GetHealthRequest()
        ).pending_tasks
        for name in ("acme", "globex")
    }
    _echo_task(tenants.acme)
    acme = tenants.acme(tenants.acme.system.GetHealth, system_pb.GetHealthRequest())
    globex = tenants.globex(tenants.globex.system.GetHealth, system_pb.GetHealthRequest())
    assert acme.pending_tasks == before["acme"] + 1
    assert globex.pending_tasks == before["globex"]
    anonymous = httpx.get(secured.server.http_url + "/health").json()
    assert anonymous["status"] == "healthy" and anonymous["pending_tasks"] == 0


def test_workers_take_only_the_work_of_their_tenant(tenants: Tenants) -> None:
    kind = f"kind-{uuid.uuid4().hex[:8]}"
    task = _echo_task(tenants.acme, kind)
    take = worker_pb.TakeRequest(worker_id="globex-w", kinds=[kind], wait_seconds=0.2)
    assert_not_found(lambda: tenants.globex_worker(tenants.globex_worker.workers.Take, take))
    lease = tenants.acme_worker(
        tenants.acme_worker.workers.Take, worker_pb.TakeRequest(worker_id="acme-w", kinds=[kind])
    )
    assert lease.task_id == task.task_id
    # Reports on a subtask of another tenant: not found, whatever the lease id, and the
    # answer names no worker.
    subtask_id = lease.subtask_id
    globex = tenants.globex_worker
    for lease_id in (lease.lease_id, str(uuid.uuid4())):
        for method, request in (
            (
                globex.workers.Heartbeat,
                worker_pb.HeartbeatRequest(subtask_id=subtask_id, lease_id=lease_id),
            ),
            (
                globex.workers.Complete,
                worker_pb.CompleteRequest(subtask_id=subtask_id, lease_id=str(uuid.uuid4())),
            ),
            (
                globex.workers.Fail,
                worker_pb.FailRequest(subtask_id=subtask_id, lease_id=str(uuid.uuid4()), error="x"),
            ),
            (
                globex.workers.Release,
                worker_pb.ReleaseRequest(subtask_id=subtask_id, lease_id=str(uuid.uuid4())),
            ),
        ):
            details = assert_not_found(lambda m=method, r=request: globex(m, r))
            assert "acme-w" not in details
        # In a batched report too: that report is refused as not found, saying no more.
        report = worker_pb.SubtaskReport(
            complete=worker_pb.CompleteRequest(subtask_id=subtask_id, lease_id=lease_id)
        )
        answer = globex(globex.workers.Report, worker_pb.ReportRequest(reports=[report]))
        refused = answer.outcomes[0].error
        assert refused.code == grpc.StatusCode.NOT_FOUND.value[0]
        assert "acme-w" not in refused.message
    # The rightful worker still holds its lease and completes (a worker key may report).
    report = worker_pb.SubtaskReport(
        complete=worker_pb.CompleteRequest(subtask_id=subtask_id, lease_id=lease.lease_id)
    )
    answer = tenants.acme_worker(
        tenants.acme_worker.workers.Report, worker_pb.ReportRequest(reports=[report])
    )
    assert answer.outcomes[0].subtask.subtask_id == subtask_id


def test_another_tenants_chat_session_is_not_found(tenants: Tenants) -> None:
    acme, globex = tenants.acme, tenants.globex
    session = acme(
        acme.chat.CreateSession,
        chat_pb.CreateSessionRequest(model_name=TINY_TEXT_MODEL, title="acme only"),
    )
    sid = session.session_id
    for attempt in (
        lambda: globex(globex.chat.GetSession, chat_pb.GetSessionRequest(session_id=sid)),
        lambda: globex(
            globex.chat.PostMessage, chat_pb.PostMessageRequest(session_id=sid, content="hi")
        ),
        lambda: globex(globex.chat.ListMessages, chat_pb.ListMessagesRequest(session_id=sid)),
        lambda: globex.stream(
            globex.chat.WatchSession, chat_pb.WatchSessionRequest(session_id=sid)
        ),
        lambda: globex(globex.chat.DeleteSession, chat_pb.DeleteSessionRequest(session_id=sid)),
    ):
        assert_not_found(attempt)
    listed = globex(globex.chat.ListSessions, chat_pb.ListSessionsRequest(limit=100))
    assert sid not in {s.session_id for s in listed.sessions}
    assert acme(acme.chat.GetSession, chat_pb.GetSessionRequest(session_id=sid)).session_id == sid


def test_another_tenants_template_is_not_found(tenants: Tenants) -> None:
    acme, globex = tenants.acme, tenants.globex
    name = f"acme-{uuid.uuid4().hex[:8]}"
    template = template_pb.Template(
        name=name,
        parameters=[template_pb.TemplateParameter(name="text", type="string", required=True)],
        steps=[_struct({"type": "text_analysis", "text": "{{text}}"})],
    )
    acme(acme.templates.CreateTemplate, template_pb.CreateTemplateRequest(template=template))
    assert_not_found(
        lambda: globex(globex.templates.GetTemplate, template_pb.GetTemplateRequest(name=name))
    )
    listed = globex(globex.templates.ListTemplates, template_pb.ListTemplatesRequest())
    assert name not in {t.name for t in listed.templates}
    assert_not_found(
        lambda: globex(
            globex.tasks.CreateTask,
            task_pb.CreateTaskRequest(template=name, parameters=_struct({"text": "x"})),
        )
    )
    # The name is free in globex's own namespace.
    globex(globex.templates.CreateTemplate, template_pb.CreateTemplateRequest(template=template))


def test_rest_callers_see_only_their_tenant(secured: Secured, acme_task: task_pb.Task) -> None:
    base, task_id = secured.server.http_url, acme_task.task_id
    globex = {"X-API-Key": secured.globex}
    for method, path in (
        ("GET", f"/v1/tasks/{task_id}"),
        ("GET", f"/tasks/{task_id}"),
        ("GET", f"/api/v1/tasks/{task_id}"),
        ("POST", f"/v1/tasks/{task_id}:cancel"),
        ("DELETE", f"/api/v1/tasks/{task_id}"),
    ):
        response = httpx.request(method, base + path, headers=globex, timeout=10)
        assert_json_error(response, 404, "TASK_NOT_FOUND")
    listed = httpx.get(base + "/api/v1/tasks", params={"limit": 100}, headers=globex).json()
    assert task_id not in {t["id"] for t in listed}
    mine = httpx.get(base + f"/api/v1/tasks/{task_id}", headers={"X-API-Key": secured.acme})
    assert mine.status_code == 200


def test_another_tenants_schedule_is_not_found_and_its_tasks_stay_in_its_tenant(
    tenants: Tenants,
) -> None:
    acme, globex = tenants.acme, tenants.globex
    name = f"nightly-{uuid.uuid4().hex[:8]}"
    request = schedule_pb.CreateScheduleRequest(
        name=name, cron="0 3 * * *", task=task_pb.CreateTaskRequest(task_type="echo")
    )
    acme(acme.schedules.CreateSchedule, request)
    for method, message in (
        (globex.schedules.GetSchedule, schedule_pb.GetScheduleRequest(name=name)),
        (globex.schedules.PauseSchedule, schedule_pb.PauseScheduleRequest(name=name)),
        (globex.schedules.ResumeSchedule, schedule_pb.ResumeScheduleRequest(name=name)),
        (globex.schedules.TriggerSchedule, schedule_pb.TriggerScheduleRequest(name=name)),
        (globex.schedules.DeleteSchedule, schedule_pb.DeleteScheduleRequest(name=name)),
    ):
        assert "not found" in assert_not_found(lambda m=method, r=message: globex(m, r))
    listed = globex(globex.schedules.ListSchedules, schedule_pb.ListSchedulesRequest())
    assert name not in [s.name for s in listed.schedules]
    # The same name is free in another tenant.
    globex(globex.schedules.CreateSchedule, request)
    fired = acme(acme.schedules.TriggerSchedule, schedule_pb.TriggerScheduleRequest(name=name))
    task_id = fired.task.task_id
    assert acme(acme.tasks.GetTask, task_pb.GetTaskRequest(task_id=task_id)).task_id == task_id
    assert_not_found(lambda: globex(globex.tasks.GetTask, task_pb.GetTaskRequest(task_id=task_id)))
