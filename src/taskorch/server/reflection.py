"""Server reflection under both names clients ask for.

``grpc.reflection.v1`` (what newer grpcurl and Postman try first) and ``grpc.reflection.v1alpha``
(older clients).

grpcio-reflection ships only v1alpha. The v1 protocol is the same messages under another
package (field for field), so one servicer answers both: the v1 method decodes and encodes
with the v1alpha classes, and the v1 file is registered in the descriptor pool (v1alpha's
with the package renamed) so that reflection can describe itself under either name.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name = _V1_FILE
    file.package = "grpc.reflection.v1"
    file.options.Clear()
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    for message in file.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
    for service in file.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    pool.Add(file)


def add_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serves reflection of ``service_names`` (and of itself) under v1 and v1alpha."""
    _register_v1_descriptor()
    servicer = reflection.aio.ReflectionServicer(
        [*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME]
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
