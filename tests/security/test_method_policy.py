"""The method policy (server/access.py) names real gRPC methods, so a typo cannot silently
lock a role out of a method or leave one open."""

from __future__ import annotations

import pytest

from taskorch.domain.caller import Caller
from taskorch.domain.errors import PermissionDenied
from taskorch.gateway import routes
from taskorch.server import access

# Served beside ours (server/app.py adds health and reflection).
STANDARD = {
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
}


def _served() -> set[str]:
    ours = {f"/{s.full_name}/{m.name}" for s in routes.services() for m in s.methods}
    return ours | STANDARD


@pytest.mark.parametrize("named", ["OPEN_METHODS", "ADMIN_METHODS", "WORKER_METHODS"])
def test_every_method_the_policy_names_is_served(named: str) -> None:
    assert getattr(access, named) - _served() == set()


def test_a_worker_credential_may_take_work_but_not_create_tasks() -> None:
    worker = Caller(tenant_id="t", roles=frozenset({"worker"}))
    access.authorize("/taskorch.v1.WorkerService/Listen", worker)
    with pytest.raises(PermissionDenied, match="CreateTask"):
        access.authorize("/taskorch.v1.TaskService/CreateTask", worker)


def test_the_worker_protocol_and_probes_are_not_rate_limited() -> None:
    assert not access.rate_limited("/taskorch.v1.WorkerService/Report")
    assert not access.rate_limited("/grpc.health.v1.Health/Check")
    assert access.rate_limited("/taskorch.v1.TaskService/CreateTask")
