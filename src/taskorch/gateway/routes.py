"""The REST routes of the API, read from the google.api.http options of the protos.

Used to print routes at start-up and to build the OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor

from taskorch.v1 import (
    chat_service_pb2,
    collection_service_pb2,
    model_service_pb2,
    openai_service_pb2,
    schedule_service_pb2,
    system_service_pb2,
    task_service_pb2,
    template_service_pb2,
    worker_service_pb2,
)

SERVICE_FILES = (
    task_service_pb2,
    worker_service_pb2,
    template_service_pb2,
    schedule_service_pb2,
    model_service_pb2,
    system_service_pb2,
    chat_service_pb2,
    collection_service_pb2,
    openai_service_pb2,
)
_VARIABLE = re.compile(r"\{([^}=]+)")


@dataclass(frozen=True)
class Route:
    """One HTTP binding of an RPC, as its ``google.api.http`` option declares it."""

    http_method: str
    path: str
    body: str
    service: str
    rpc: str
    server_streaming: bool
    primary: bool


def services() -> list[descriptor.ServiceDescriptor]:
    """The descriptors of every service the server offers."""
    return [s for module in SERVICE_FILES for s in module.DESCRIPTOR.services_by_name.values()]


def routes() -> Iterator[Route]:
    """Every HTTP binding of every service, primary binding first."""
    for service in services():
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            for index, binding in enumerate([rule, *rule.additional_bindings]):
                verb, path = _verb_path(binding)
                yield Route(
                    http_method=verb,
                    path=path,
                    body=binding.body,
                    service=service.full_name,
                    rpc=method.name,
                    server_streaming=method.server_streaming,
                    primary=index == 0,
                )


def _verb_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    assert kind is not None
    return kind.upper(), getattr(rule, kind)


@cache
def path_variables() -> dict[str, frozenset[str]]:
    """For each gRPC method path (``/pkg.Service/Method``), the fields its REST paths bind."""
    found: dict[str, set[str]] = {}
    for route in routes():
        method = f"/{route.service}/{route.rpc}"
        found.setdefault(method, set()).update(_VARIABLE.findall(route.path))
    return {method: frozenset(names) for method, names in found.items()}
