"""Which gRPC methods each role may call, which are open, which are never rate-limited.

This is the method-path knowledge of authentication, kept in server/: core/auth.py
resolves a caller from credentials (API keys, OAuth tokens) and knows no method;
:func:`checked` puts the two together into the authenticate step of the interceptor and
of the web endpoint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from taskorch.core.auth import Authenticator
from taskorch.domain.caller import ADMIN, USER, WORKER, Caller
from taskorch.domain.errors import PermissionDenied

# Anyone may call these: load balancers, grpcurl, the docs.
OPEN_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/taskorch.v1.SystemService/GetHealth",
        "/taskorch.v1.SystemService/GetOpenApiDocument",
    }
)
# Only an admin may call these: metrics cover every tenant.
ADMIN_METHODS = frozenset({"/taskorch.v1.SystemService/GetMetrics"})
# What a worker-only credential may call.
WORKER_METHODS = frozenset(
    {
        "/taskorch.v1.WorkerService/Take",
        "/taskorch.v1.WorkerService/Listen",
        "/taskorch.v1.WorkerService/Heartbeat",
        "/taskorch.v1.WorkerService/Complete",
        "/taskorch.v1.WorkerService/Fail",
        "/taskorch.v1.WorkerService/Release",
        "/taskorch.v1.WorkerService/Report",
        "/taskorch.v1.TaskService/TakeSubtask",
        "/taskorch.v1.TaskService/UpdateSubtaskStatus",
        "/taskorch.v1.TaskService/GetSubtask",
        "/taskorch.v1.TaskService/ListSubtasks",
        "/taskorch.v1.TaskService/GetTask",
        "/taskorch.v1.ModelService/ListModels",
        "/taskorch.v1.ModelService/GetModel",
    }
)
# Methods never rate-limited: probes, the docs, metrics, and the worker protocol.
RATE_EXEMPT_METHODS = OPEN_METHODS | ADMIN_METHODS
RATE_EXEMPT_PREFIXES = ("/taskorch.v1.WorkerService/",)


def checked(
    authenticator: Authenticator,
) -> Callable[[str, dict[str, str]], Awaitable[Caller]]:
    """The authenticate step of a server that requires credentials.

    Returns:
        ``authenticate(method, metadata)``: the caller of an open method (NOBODY without
        usable credentials); of any other method, the caller whose role may call it.
        It raises Unauthenticated (no usable credentials) or PermissionDenied (the role
        may not call the method).
    """

    async def authenticate(method: str, metadata: Mapping[str, str]) -> Caller:
        if method in OPEN_METHODS:
            return await authenticator.identify(metadata)
        caller = await authenticator.authenticate(metadata)
        authorize(method, caller)
        return caller

    return authenticate


def authorize(method: str, caller: Caller) -> None:
    """Raises PermissionDenied unless ``caller``'s roles may call ``method``."""
    if ADMIN in caller.roles:
        return
    if method in ADMIN_METHODS:
        raise PermissionDenied(
            f"Only an admin credential may call {method.rsplit('/', 1)[-1]} (it covers every "
            "tenant)"
        )
    if USER in caller.roles:
        return
    if WORKER in caller.roles and method in WORKER_METHODS:
        return
    raise PermissionDenied(f"The role of this credential may not call {method.rsplit('/', 1)[-1]}")


def rate_limited(method: str) -> bool:
    """Whether a call of ``method`` takes a token of its tenant's rate limit."""
    return method not in RATE_EXEMPT_METHODS and not method.startswith(RATE_EXEMPT_PREFIXES)
