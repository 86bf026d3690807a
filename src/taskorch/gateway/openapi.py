"""An OpenAPI 3 document of the REST surface, generated from the protos' http annotations.

``make proto`` writes ``gateway/openapi.json`` from the descriptor set with source info
(descriptions come from the proto comments); a server started outside a checkout generates
the same document from the compiled-in descriptors, without descriptions.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from taskorch import __version__
from taskorch.gateway.descriptor import descriptor_set, service_names

FD = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[int, dict[str, Any]] = {
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FD.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FD.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # 64-bit integers are JSON strings in proto3 JSON.
    FD.TYPE_INT64: {"type": "string", "format": "int64"},
    FD.TYPE_SINT64: {"type": "string", "format": "int64"},
    FD.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FD.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FD.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {"type": "object", "additionalProperties": True},
}
EVENT_STREAM = "text/event-stream"
# Methods answering google.api.HttpBody with something else than JSON: its media type.
HTTP_BODY_MEDIA_TYPES: dict[str, str] = {
    "taskorch.v1.SystemService.GetMetrics": "text/plain",
    "taskorch.v1.TaskService.GetTaskArtifact": "application/octet-stream",
}
# Methods answering google.api.HttpBody: what their body holds.
HTTP_BODY_SCHEMAS: dict[str, dict[str, Any]] = {
    "taskorch.v1.SystemService.GetMetrics": {
        "type": "string",
        "description": "Prometheus text exposition format.",
    },
    "taskorch.v1.TaskService.GetTaskArtifact": {
        "type": "string",
        "format": "binary",
        "description": "The artifact's bytes, with its own content type (audio/wav, image/png).",
    },
    "taskorch.v1.TaskService.ListTasksJson": {
        "type": "array",
        "items": {"$ref": "#/components/schemas/taskorch.v1.Task"},
    },
    "taskorch.v1.TemplateService.ListTemplatesJson": {
        "type": "array",
        "items": {"$ref": "#/components/schemas/taskorch.v1.Template"},
    },
    "taskorch.v1.SystemService.GetOpenApiDocument": {
        "type": "object",
        "description": "This document.",
    },
}
# Where the gateway answers otherwise than 200 (the Lua rules of gateway/config.py): the
# success statuses of those bindings, by (verb, path).
_TASK_REF = {"$ref": "#/components/schemas/taskorch.v1.Task"}
SUCCESS_RESPONSES: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("post", "/tasks"): {
        "201": {
            "description": "Created (seed 001)",
            "content": {"application/json": {"schema": _TASK_REF}},
        }
    },
    ("delete", "/api/v1/tasks/{task_id}"): {
        "204": {"description": "Cancelled; no body (seed 002, over HTTP/1.1)"},
        "200": {
            "description": "Cancelled, over HTTP/2: the cancelled task (a 204 cannot carry "
            "the gRPC trailers)",
            "content": {"application/json": {"schema": _TASK_REF}},
        },
    },
}
# Error statuses worth naming besides the default: 422 where a text or message may be too
# long (TEXT_TOO_LONG, MESSAGE_TOO_LONG), 503 from /health when unhealthy.
_UNPROCESSABLE_METHODS = {
    "taskorch.v1.TaskService.CreateTask",
    "taskorch.v1.TaskService.BatchCreateTasks",
    "taskorch.v1.ChatService.PostMessage",
    "taskorch.v1.ChatService.PostMessageStream",
}
_HEALTH_METHOD = "taskorch.v1.SystemService.GetHealth"

# Methods taking google.api.HttpBody: what the request body holds (OpenAI's API, passed
# through verbatim).
_OPENAI_REQUEST = {
    "type": "object",
    "description": "OpenAI's request body (see the README's OpenAI-compatible API section).",
    "required": ["model"],
    "properties": {"model": {"type": "string"}},
    "additionalProperties": True,
}
HTTP_BODY_REQUESTS: dict[str, dict[str, Any]] = {
    f"taskorch.v1.OpenAIService.{name}": _OPENAI_REQUEST
    for name in ("CreateChatCompletion", "CreateCompletion", "CreateEmbedding")
}
_OPENAI_ERROR = {
    "type": "object",
    "description": "OpenAI's error body.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
        }
    },
}
_ERROR = {
    "type": "object",
    "description": "google.rpc.Status as JSON; details carry google.rpc.ErrorInfo (reason: the "
    "error code, e.g. TASK_NOT_FOUND) and google.rpc.BadRequest field violations.",
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
    },
}
_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")


class _Index:
    """Messages, enums and comments of a descriptor set, by full name."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[str, str] = {}
        self.files = list(files)
        for file in self.files:
            package = f".{file.package}" if file.package else ""
            locations = {tuple(loc.path): loc for loc in file.source_code_info.location}
            for i, message in enumerate(file.message_type):
                self._message(f"{package}.{message.name}", message, (4, i), locations)
            for i, enum in enumerate(file.enum_type):
                self.enums[f"{package}.{enum.name}"] = enum
                self._comment(f"{package}.{enum.name}", locations, (5, i))
            for i, service in enumerate(file.service):
                self._comment(f"{package}.{service.name}", locations, (6, i))
                for j, method in enumerate(service.method):
                    self._comment(
                        f"{package}.{service.name}.{method.name}", locations, (6, i, 2, j)
                    )

    def _message(
        self,
        name: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
        locations: dict[tuple[int, ...], Any],
    ) -> None:
        self.messages[name] = message
        self._comment(name, locations, path)
        for i, field in enumerate(message.field):
            self._comment(f"{name}.{field.name}", locations, (*path, 2, i))
        for i, nested in enumerate(message.nested_type):
            self._message(f"{name}.{nested.name}", nested, (*path, 3, i), locations)
        for i, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = enum
            self._comment(f"{name}.{enum.name}", locations, (*path, 4, i))

    def _comment(
        self, name: str, locations: dict[tuple[int, ...], Any], path: tuple[int, ...]
    ) -> None:
        location = locations.get(path)
        if location is not None and location.leading_comments.strip():
            self.comments[name] = " ".join(location.leading_comments.split())


class _Builder:
    def __init__(self, index: _Index) -> None:
        self.index = index
        self.schemas: dict[str, Any] = {"Error": _ERROR, "OpenAIError": _OPENAI_ERROR}

    def ref(self, type_name: str) -> dict[str, Any]:
        if type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[type_name])
        key = type_name.lstrip(".")
        if key not in self.schemas:
            self.schemas[key] = {}  # placeholder against recursion
            self.schemas[key] = self._schema(type_name)
        return {"$ref": f"#/components/schemas/{key}"}

    def _schema(self, type_name: str) -> dict[str, Any]:
        if type_name in self.index.enums:
            enum = self.index.enums[type_name]
            return {"type": "string", "enum": [v.name for v in enum.value]}
        message = self.index.messages[type_name]
        properties = {field.name: self.field(type_name, field) for field in message.field}
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if type_name in self.index.comments:
            schema["description"] = self.index.comments[type_name]
        return schema

    def field(self, owner: str, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type in (FD.TYPE_MESSAGE, FD.TYPE_ENUM):
            item = self.ref(field.type_name)
        else:
            item = dict(_SCALARS[field.type])
        if field.label == FD.LABEL_REPEATED:
            item = {"type": "array", "items": item}
        comment = self.index.comments.get(f"{owner}.{field.name}")
        if comment:
            item = (
                {**item, "description": comment}
                if "$ref" not in item
                else {
                    "allOf": [item],
                    "description": comment,
                }
            )
        return item


def build(
    files: Iterable[descriptor_pb2.FileDescriptorProto], services: Iterable[str]
) -> dict[str, Any]:
    index = _Index(files)
    builder = _Builder(index)
    paths: dict[str, dict[str, Any]] = {}
    wanted = {f".{s}" for s in services}
    for file in index.files:
        package = f".{file.package}" if file.package else ""
        for service in file.service:
            full = f"{package}.{service.name}"
            if full not in wanted:
                continue
            for method in service.method:
                options = method.options
                if not options.HasExtension(annotations_pb2.http):
                    continue
                rule = options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    verb, template = _pattern(binding)
                    operation = _operation(builder, full, method, binding, template)
                    paths.setdefault(_VARIABLE.sub(r"{\1}", template), {})[verb] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "taskorch REST API",
            "version": __version__,
            "description": "REST transcoded by Envoy from the taskorch gRPC API (package "
            "taskorch.v1). Field names are snake_case; enums are names; timestamps RFC 3339; "
            "64-bit integers are strings. Server streams are Server-Sent Events.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(builder.schemas.items()))},
    }


def _pattern(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        return rule.custom.kind.lower(), rule.custom.path
    assert kind is not None
    return kind, getattr(rule, kind)


def _operation(
    builder: _Builder,
    service: str,
    method: descriptor_pb2.MethodDescriptorProto,
    binding: http_pb2.HttpRule,
    template: str,
) -> dict[str, Any]:
    index = builder.index
    request = index.messages[method.input_type]
    path_fields = set(_VARIABLE.findall(template))
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _VARIABLE.findall(template)
    ]
    operation: dict[str, Any] = {
        "operationId": f"{method.name}_{_slug(template)}",
        "tags": [service.rsplit(".", 1)[-1]],
        "x-grpc-method": f"{service.lstrip('.')}/{method.name}",
    }
    comment = index.comments.get(f"{service}.{method.name}")
    if comment:
        operation["description"] = comment
        operation["summary"] = comment.split(". ")[0][:120]
    name = f"{service.lstrip('.')}.{method.name}"
    if method.input_type == ".google.api.HttpBody":
        schema = HTTP_BODY_REQUESTS.get(name, {})
        operation["requestBody"] = {"content": {"application/json": {"schema": schema}}}
    elif binding.body == "*":
        body_fields = [f for f in request.field if f.name not in path_fields]
        schema = {
            "type": "object",
            "properties": {f.name: builder.field(method.input_type, f) for f in body_fields},
        }
        operation["requestBody"] = {"content": {"application/json": {"schema": schema}}}
    else:
        # `body: "field"`: that field is the whole body; the others are query parameters.
        for field in request.field:
            if field.name == binding.body:
                schema = builder.field(method.input_type, field)
                operation["requestBody"] = {"content": {"application/json": {"schema": schema}}}
        for field in request.field:
            if field.name in path_fields or field.name == binding.body:
                continue
            if field.type == FD.TYPE_MESSAGE:
                continue
            parameters.append(
                {
                    "name": field.name,
                    "in": "query",
                    "required": False,
                    "schema": builder.field(method.input_type, field),
                }
            )
    if parameters:
        operation["parameters"] = parameters
    success: dict[str, Any]
    if method.output_type == ".google.api.HttpBody":
        media = HTTP_BODY_MEDIA_TYPES.get(name, "application/json")
        schema = HTTP_BODY_SCHEMAS.get(name, {})
        success = {"description": "OK", "content": {media: {"schema": schema}}}
        if method.server_streaming:  # OpenAI's `"stream": true`
            success["content"][EVENT_STREAM] = {"schema": {"type": "string"}}
    elif method.server_streaming:
        success = {
            "description": "A Server-Sent Events stream: one `data: {json}` frame per message "
            f"({method.output_type.lstrip('.')}).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    else:
        success = {
            "description": "OK",
            "content": {"application/json": {"schema": builder.ref(method.output_type)}},
        }
    error_schema = "OpenAIError" if service == ".taskorch.v1.OpenAIService" else "Error"
    error = {
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{error_schema}"}}
        }
    }
    verb, _ = _pattern(binding)
    path = _VARIABLE.sub(r"{\1}", template)
    responses: dict[str, Any] = dict(SUCCESS_RESPONSES.get((verb, path), {"200": success}))
    if name in _UNPROCESSABLE_METHODS:
        responses["422"] = {
            "description": "A text or message longer than its limit (TEXT_TOO_LONG, "
            "MESSAGE_TOO_LONG)",
            **error,
        }
    if name == _HEALTH_METHOD:
        responses["503"] = {"description": "Unhealthy (the same report)", **success}
    else:
        responses["429"] = {
            "description": "Too many requests: the caller's address (the gateway's "
            "--rate-limit) or its tenant (RATE_LIMITED: `taskorch keys limit`, "
            "--tenant-rate-limit) is over its rate, or its tenant has too many unfinished "
            "tasks (--max-active-tasks); Retry-After, when sent, says when to retry",
            "headers": _RATE_LIMIT_HEADERS,
            **error,
        }
    responses["default"] = {"description": "An error (google.rpc.Status as JSON)", **error}
    operation["responses"] = responses
    return operation


_RATE_LIMIT_HEADERS = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Limit": {
        "description": "Requests the limit allows at once (its burst)",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left now (0 when refused)",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Reset": {
        "description": "When the limit allows a request again (Unix time, seconds)",
        "schema": {"type": "integer"},
    },
}


def _slug(template: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", template).strip("_")


def document(descriptor_bytes: bytes | None = None) -> dict[str, Any]:
    """The OpenAPI document from a serialised FileDescriptorSet (default: compiled-in)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_bytes or descriptor_set()).file
    return build(files, service_names())


def document_json(descriptor_bytes: bytes | None = None) -> str:
    return json.dumps(document(descriptor_bytes), indent=2, sort_keys=False) + "\n"


# In a checkout, `make proto` keeps the documented OpenAPI (with descriptions) here.
CHECKOUT_DOCUMENT = Path(__file__).resolve().parents[3] / "gateway" / "openapi.json"


def served_document() -> bytes:
    """What GET /openapi.json answers: the checkout's document, else a generated one."""
    if CHECKOUT_DOCUMENT.exists():
        return CHECKOUT_DOCUMENT.read_bytes()
    return document_json().encode()


def main() -> None:
    """``python -m taskorch.gateway.openapi DESCRIPTOR_SET OUTPUT`` (used by ``make proto``)."""
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    target.write_text(document_json(source.read_bytes()))


if __name__ == "__main__":
    main()
