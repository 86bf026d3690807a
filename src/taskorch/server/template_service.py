"""TemplateService over gRPC: protobuf in, domain calls (core/templates/), protobuf out."""

from __future__ import annotations

import json
from typing import Any, TypeAlias

from google.api import httpbody_pb2
from google.protobuf import empty_pb2, json_format

from taskorch import structs
from taskorch.core.templates.definition import Template
from taskorch.core.templates.planner import TemplatePlanner
from taskorch.core.templates.service import TemplateService
from taskorch.domain.errors import InvalidArgument
from taskorch.domain.values import JSON
from taskorch.server.convert import set_time, struct_to_dict, to_json
from taskorch.server.interceptors import current_caller
from taskorch.v1 import template_service_pb2 as pb
from taskorch.v1 import template_service_pb2_grpc as pb_grpc

# grpc ships no type information; servicer contexts are grpc.aio.ServicerContext.
Context: TypeAlias = Any


def template_to_proto(template: Template) -> pb.Template:
    """A template as the API's message."""
    message = pb.Template(
        name=template.name, description=template.description, builtin=template.builtin
    )
    for parameter in template.parameters:
        item = message.parameters.add(
            name=parameter.name,
            type=parameter.type,
            required=parameter.required,
            description=parameter.description,
        )
        if parameter.default is not None:
            json_format.ParseDict(parameter.default, item.default)
        for value in parameter.enum:
            json_format.ParseDict(value, item.enum.add())
    for step in template.steps:
        message.steps.add().update(step)
    set_time(message.created_at, template.created_at)
    set_time(message.updated_at, template.updated_at)
    return message


def definition_from_proto(message: pb.Template) -> JSON:
    """A template message as the definition core/templates/definition.py checks (its JSON shape)."""
    parameters: list[JSON] = []
    for parameter in message.parameters:
        item: JSON = {
            "name": parameter.name,
            "type": parameter.type or "string",
            "required": parameter.required,
            "description": parameter.description,
        }
        if parameter.HasField("default"):
            item["default"] = _value(parameter.default)
        if parameter.enum:
            item["enum"] = [_value(v) for v in parameter.enum]
        parameters.append(item)
    return {
        "name": message.name,
        "description": message.description,
        "parameters": parameters,
        "steps": [
            struct_to_dict(step, f"template.steps[{i}]") for i, step in enumerate(message.steps)
        ],
    }


def _value(value: Any) -> Any:
    return structs.to_dict_value(json_format.MessageToDict(value))


class TemplateServicer(pb_grpc.TemplateServiceServicer):
    """The TemplateService RPCs: built-in and user templates."""

    def __init__(self, templates: TemplateService, planner: TemplatePlanner) -> None:
        self.templates = templates
        self.planner = planner

    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: Context
    ) -> pb.ListTemplatesResponse:
        """Built-in templates and the caller's own, by name."""
        found = await self.templates.list(current_caller())
        return pb.ListTemplatesResponse(templates=[template_to_proto(t) for t in found])

    async def ListTemplatesJson(
        self, request: pb.ListTemplatesRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """The same list as a bare JSON array of templates."""
        found = await self.templates.list(current_caller())
        body = [to_json(template_to_proto(t)) for t in found]
        return httpbody_pb2.HttpBody(
            content_type="application/json",
            data=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
        )

    async def GetTemplate(self, request: pb.GetTemplateRequest, context: Context) -> pb.Template:
        """One template with its parameters and steps."""
        return template_to_proto(await self.templates.get(current_caller(), request.name))

    async def ValidateTemplateParameters(
        self, request: pb.ValidateTemplateParametersRequest, context: Context
    ) -> pb.ValidateTemplateParametersResponse:
        """Checks parameters against a template without creating anything."""
        name = request.name or request.template_name
        if not name.strip():
            raise InvalidArgument("template_name is required", field="template_name")
        parameters = (
            struct_to_dict(request.parameters, "parameters")
            if request.HasField("parameters")
            else {}
        )
        template = await self.templates.get(current_caller(), name)
        report = self.planner.validate(template, parameters)
        return pb.ValidateTemplateParametersResponse(
            valid=report.valid,
            missing_parameters=report.missing,
            invalid_parameters=[
                pb.InvalidParameter(name=p.name, reason=p.reason) for p in report.invalid
            ],
        )

    async def CreateTemplate(
        self, request: pb.CreateTemplateRequest, context: Context
    ) -> pb.Template:
        """Creates a user template in the caller's tenant."""
        if not request.HasField("template"):
            raise InvalidArgument("template is required", field="template")
        definition = definition_from_proto(request.template)
        return template_to_proto(await self.templates.create(current_caller(), definition))

    async def UpdateTemplate(
        self, request: pb.UpdateTemplateRequest, context: Context
    ) -> pb.Template:
        """Replaces a user template's description, parameters and steps."""
        if not request.HasField("template"):
            raise InvalidArgument("template is required", field="template")
        definition = definition_from_proto(request.template)
        updated = await self.templates.update(current_caller(), request.name, definition)
        return template_to_proto(updated)

    async def DeleteTemplate(
        self, request: pb.DeleteTemplateRequest, context: Context
    ) -> empty_pb2.Empty:
        """Deletes a user template."""
        await self.templates.delete(current_caller(), request.name)
        return empty_pb2.Empty()
