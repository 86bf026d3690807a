"""A grpc.aio server with one method that does nothing (the ceiling for the benchmarks)."""

from __future__ import annotations

import asyncio
import sys

import grpc


async def main(port: int) -> None:
    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        return b""

    handler = grpc.method_handlers_generic_handler(
        "bench.Empty", {"Call": grpc.unary_unary_rpc_method_handler(call)}
    )
    await serve(handler, port)


async def serve(handler: grpc.GenericRpcHandler, port: int) -> None:
    """Serves ``handler`` on 127.0.0.1:``port`` until the process is stopped (also used by
    the benchmark's other servers)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    # argv: PORT [asyncio|uvloop]
    if sys.argv[2:] == ["uvloop"]:
        from taskorch.cli import _loop

        _loop.run(main(int(sys.argv[1])))
    else:
        asyncio.run(main(int(sys.argv[1])))
