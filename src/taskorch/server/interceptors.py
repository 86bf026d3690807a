"""The gRPC server interceptor every call goes through.

It gives each call a request id (the caller's ``x-request-id`` if sane, else a new one, sent
back in the trailing metadata; Envoy passes us its own id and returns it to REST clients),
binds it to the logs, resolves the caller, takes a token of the caller's tenant's request
rate limit (core/rate_limits.py), refuses values no backend can store
(server/unstorable.py), times the call for metrics, and turns errors into
gRPC statuses (server/errors.py): a TaskorchError into its code and details, anything else
into INTERNAL after logging it with the request id.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import grpc
import structlog
from google.protobuf.message import DecodeError, Message
from grpc_status import rpc_status

from taskorch.core.rate_limits import TenantRateLimiter
from taskorch.domain.caller import ANONYMOUS, Caller
from taskorch.domain.errors import InvalidArgument, RateLimited, TaskorchError
from taskorch.domain.ids import new_id
from taskorch.gateway import routes
from taskorch.server import access, errors
from taskorch.server.metrics import RATE_LIMITED_REQUESTS, RPC_DURATION
from taskorch.server.unstorable import refuse_unstorable

log = structlog.get_logger("taskorch.rpc")

MAX_METADATA_VALUE_CHARS = 16 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@dataclass(frozen=True)
class RequestContext:
    """The call being served: its request id, method, caller and metadata."""

    request_id: str
    method: str
    caller: Caller
    metadata: dict[str, str]


_current: ContextVar[RequestContext | None] = ContextVar("taskorch_request", default=None)


def current() -> RequestContext:
    """The context of the call being served (RuntimeError outside a call)."""
    context = _current.get()
    if context is None:
        raise RuntimeError("no request in progress")
    return context


def current_caller() -> Caller:
    """The caller of the call being served; the anonymous one outside a call."""
    context = _current.get()
    return context.caller if context is not None else ANONYMOUS


Authenticator = Callable[[str, dict[str, str]], Awaitable[Caller]]


async def open_access(_method: str, _metadata: dict[str, str]) -> Caller:
    """The authenticator of ``--auth none``: every call is anonymous."""
    return ANONYMOUS


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Request ids, logging, authentication, tenant rate limits, metrics and error mapping."""

    def __init__(
        self,
        authenticate: Authenticator = open_access,
        limiter: TenantRateLimiter | None = None,
    ) -> None:
        self.authenticate = authenticate
        self.limiter = limiter
        # The wrapped handler of each method, built on its first call: the servicers'
        # handlers never change, and building one per call was a measurable part of a call.
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """The method's handler, wrapped once and cached."""
        method: str = details.method
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None:
            return None
        wrapped = self._wrap(handler, method)
        self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        # Requests are parsed here, not by grpc, so that a malformed message gets
        # INVALID_ARGUMENT instead of grpc's UNKNOWN.
        parse = handler.request_deserializer or (lambda raw: raw)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, parse),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method, parse),
                response_serializer=handler.response_serializer,
            )
        return handler  # no client-streaming RPCs in the API

    def _identify(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[str, dict[str, str]]:
        metadata = _metadata(context.invocation_metadata())
        given = metadata.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else f"req_{new_id()}"
        # grpc.aio serves every call in its own asyncio task, so what is bound here stays in
        # that call's context and ends with it: nothing to clear afterwards.
        structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
        # Trailing metadata rides on the status frame: no extra frame per call.
        context.set_trailing_metadata((("x-request-id", request_id),))
        return request_id, metadata

    async def _begin(self, method: str, request_id: str, metadata: dict[str, str]) -> None:
        _refuse_oversized_metadata(metadata)
        _refuse_query_overriding_path(method, metadata)
        caller = await self.authenticate(method, metadata)
        structlog.contextvars.bind_contextvars(tenant=caller.tenant_id)
        if self.limiter is not None and access.rate_limited(method):
            try:
                await self.limiter.admit(caller)
            except RateLimited as exc:
                RATE_LIMITED_REQUESTS.labels(exc.tenant_id).inc()
                raise
        _current.set(RequestContext(request_id, method, caller, metadata))

    def _unary(
        self, behavior: Callable[..., Awaitable[Any]], method: str, parse: Callable[[bytes], Any]
    ) -> Callable[..., Any]:
        ok = RPC_DURATION.labels(method, "OK")

        async def unary(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = "OK"
            request_id, metadata = self._identify(method, context)
            try:
                await self._begin(method, request_id, metadata)
                return await behavior(_parse(parse, raw), context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                code = "CANCELLED"
                raise
            except Exception as exc:
                code, status = _status_of(exc, request_id)
                await context.abort_with_status(_with_headers(status, exc, request_id))
            finally:
                duration = ok if code == "OK" else RPC_DURATION.labels(method, code)
                duration.observe(time.perf_counter() - started)

        return unary

    def _stream(
        self,
        behavior: Callable[..., AsyncIterator[Any]],
        method: str,
        parse: Callable[[bytes], Any],
    ) -> Callable[..., AsyncIterator[Any]]:
        ok = RPC_DURATION.labels(method, "OK")

        async def stream(
            raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            started = time.perf_counter()
            code = "OK"
            request_id, metadata = self._identify(method, context)
            try:
                await self._begin(method, request_id, metadata)
                async for response in behavior(_parse(parse, raw), context):
                    yield response
            except (grpc.aio.AbortError, asyncio.CancelledError):
                code = "CANCELLED"
                raise
            except Exception as exc:
                code, status = _status_of(exc, request_id)
                await context.abort_with_status(_with_headers(status, exc, request_id))
            finally:
                duration = ok if code == "OK" else RPC_DURATION.labels(method, code)
                duration.observe(time.perf_counter() - started)

        return stream


def _refuse_oversized_metadata(metadata: dict[str, str]) -> None:
    """Refuses a URL or a header over 16 KiB as bad input.

    It names the URL (Envoy's copy of the REST path) or the header and nothing else: no id, key or
    path of that size is valid.
    """
    for key, value in metadata.items():
        if len(value) > MAX_METADATA_VALUE_CHARS:
            what = "the URL" if key == "x-envoy-original-path" else f"header {key!r}"
            raise InvalidArgument(
                f"{what} is longer than {MAX_METADATA_VALUE_CHARS // 1024} KiB "
                f"({len(value)} characters): send long values in the body",
                field="url" if key == "x-envoy-original-path" else key,
            )


def _refuse_query_overriding_path(method: str, metadata: dict[str, str]) -> None:
    """Refuses a query parameter that would replace a path parameter.

    As in ``GET /v1/tasks/abc?task_id=other``: the gateway would let the query parameter replace the
    path's id, so a call could be redirected to another resource.
    """
    original = metadata.get("x-envoy-original-path", "")
    if "?" not in original:
        return
    bound = routes.path_variables().get(method, frozenset())
    for name, _ in parse_qsl(original.split("?", 1)[1], keep_blank_values=True):
        if name in bound:
            raise InvalidArgument(
                f"query parameter {name!r} may not override the {name} in the path", field=name
            )


def _parse(parse: Callable[[bytes], Any], raw: bytes) -> Any:
    try:
        request = parse(raw)
    except DecodeError as exc:
        raise InvalidArgument(f"the request is not a valid message: {exc}"[:300]) from None
    if isinstance(request, Message):
        refuse_unstorable(request, raw)
    return request


@dataclass(frozen=True)
class _GrpcStatus(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _with_headers(status: Any, exc: Exception, request_id: str) -> grpc.Status:
    """The status to abort with and its trailers (request id, ``retry-after``).

    Its trailers carry the request id and, when retrying later helps, ``retry-after`` in whole
    seconds (Envoy turns trailers of an error into HTTP headers, so REST clients get ``Retry-After``
    too). A tenant over its request rate also gets seed 001's ``x-ratelimit-*``: the bucket's size,
    0 left, and the Unix time it is full again; ``x-ratelimit-scope: tenant`` tells them from the
    gateway's per-address ones (the gateway's Lua filter keeps the tenant's when both are present).
    """
    converted = rpc_status.to_status(status)
    extra: list[tuple[str, str | bytes]] = [("x-request-id", request_id)]
    retry = exc.retry_after_seconds if isinstance(exc, TaskorchError) else None
    if retry is not None:
        extra.append(("retry-after", str(max(1, math.ceil(retry)))))
    if isinstance(exc, RateLimited):
        extra += [
            ("x-ratelimit-limit", str(exc.burst)),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", str(exc.reset_at)),
            ("x-ratelimit-scope", "tenant"),
        ]
    return _GrpcStatus(converted.code, converted.details, (*converted.trailing_metadata, *extra))


def _status_of(exc: Exception, request_id: str) -> tuple[str, Any]:
    """The gRPC code name and status for ``exc``, logged; unexpected errors hide internals."""
    if isinstance(exc, TaskorchError):
        level = log.error if exc.status.value == "INTERNAL" else log.info
        cause = exc.__cause__
        # The cause (a driver's error, say) goes to the log with the request id, never to
        # the caller: it may name the database, its host or its internal state.
        level(
            "request refused",
            code=exc.status.value,
            reason=exc.reason,
            error=exc.message,
            **({"cause": f"{type(cause).__name__}: {cause}"[:500]} if cause else {}),
        )
        return exc.status.value, errors.status_for(exc, request_id)
    log.exception("unexpected error")
    return "INTERNAL", errors.internal_status(request_id)


def _metadata(pairs: Sequence[tuple[str, Any]] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in pairs or ():
        if isinstance(value, str):
            result.setdefault(key.lower(), value)
    return result
