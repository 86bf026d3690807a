"""The FileDescriptorSet Envoy's transcoder reads: our protos and everything they import,
plus google/rpc status and error details (without them Envoy drops error details)."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import descriptor, descriptor_pb2
from google.rpc import error_details_pb2, status_pb2

from taskorch.gateway.routes import SERVICE_FILES


def descriptor_set(extra: Iterable[descriptor.FileDescriptor] = ()) -> bytes:
    """Serialised FileDescriptorSet of the API's files and their dependencies, in order."""
    files = [module.DESCRIPTOR for module in SERVICE_FILES]
    files += [status_pb2.DESCRIPTOR, error_details_pb2.DESCRIPTOR, *extra]
    ordered: list[descriptor.FileDescriptor] = []
    seen: set[str] = set()

    def visit(file: descriptor.FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    for file in files:
        visit(file)
    result = descriptor_pb2.FileDescriptorSet()
    for file in ordered:
        file.CopyToProto(result.file.add())
    return result.SerializeToString()


def service_names() -> list[str]:
    return [
        service.full_name
        for module in SERVICE_FILES
        for service in module.DESCRIPTOR.services_by_name.values()
    ]
