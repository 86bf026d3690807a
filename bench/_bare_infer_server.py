"""The least a Python gRPC server can do to serve MiniLM embeddings (a benchmark peer, not
taskorch): ``ModelService.Infer`` on grpc.aio and uvloop, tokenising on the event loop and
batching on the same instances taskorch runs (one-thread sessions side by side, one per core;
a lone request while they are idle runs on a session using every core), pooling on the
instance, answering the vector. No interceptor, request ids, validation, metrics, result
fields or resource usage: what is left is the cost of the design itself on this machine.

Usage: ``python bench/_bare_infer_server.py PORT MODEL_DIR``.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from _empty_server import serve
from inference_raw import fast_tokenizer

from taskorch.cli import _loop
from taskorch.inference.batching import lower_thread_priority
from taskorch.inference.runtime import batching_instances
from taskorch.inference.sessions import ModelSession, default_threads
from taskorch.v1 import model_service_pb2 as pb

MAX_BATCH = 32
Item = tuple[list[int], "asyncio.Future[list[float]]"]


class Instances:
    """Queued token ids, taken whole (up to ``MAX_BATCH``) by whichever instance is free."""

    def __init__(self, model_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
        path = model_dir / "model.onnx"
        cores = default_threads()
        self.whole = ModelSession(path, providers=["CPUExecutionProvider"], threads=cores)
        lanes = batching_instances(None, cores=cores, on_cuda=False)
        self.loop = loop
        self.queue: collections.deque[Item] = collections.deque()
        self.arrived = threading.Condition()
        self.busy = 0
        for _ in range(lanes):
            session = ModelSession(path, providers=["CPUExecutionProvider"], threads=1)
            threading.Thread(target=self._serve, args=(session,), daemon=True).start()

    def submit(self, ids: list[int]) -> asyncio.Future[list[float]]:
        future: asyncio.Future[list[float]] = self.loop.create_future()
        with self.arrived:
            self.queue.append((ids, future))
            self.arrived.notify()
        return future

    def _serve(self, session: ModelSession) -> None:
        lower_thread_priority()  # as taskorch's instances
        while True:
            with self.arrived:
                while not self.queue:
                    self.arrived.wait()
                items = [self.queue.popleft() for _ in range(min(MAX_BATCH, len(self.queue)))]
                alone = len(items) == 1 and self.busy == 0 and not self.queue
                self.busy += 1
            vectors = self._run(self.whole if alone else session, items)
            with self.arrived:
                self.busy -= 1
            self.loop.call_soon_threadsafe(_deliver, items, vectors)

    @staticmethod
    def _run(session: ModelSession, items: list[Item]) -> list[list[float]]:
        width = max(len(ids) for ids, _ in items)
        ids = np.zeros((len(items), width), np.int64)
        for row, (tokens, _) in enumerate(items):
            ids[row, : len(tokens)] = tokens
        mask = (ids != 0).astype(np.int64)
        out = session.run(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        real = mask[..., None]
        pooled = (out["last_hidden_state"] * real).sum(1) / real.sum(1)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: list[list[float]] = pooled.tolist()
        return vectors


def _deliver(items: list[Item], vectors: list[list[float]]) -> None:
    for (_, future), vector in zip(items, vectors, strict=True):
        if not future.done():
            future.set_result(vector)


async def main(port: int, model_dir: Path) -> None:
    tokenizer = fast_tokenizer(model_dir)
    instances = Instances(model_dir, asyncio.get_running_loop())

    async def infer(request: pb.InferRequest, context: Any) -> pb.InferResponse:
        ids = tokenizer.encode(request.inputs.string_value).ids
        vector = await instances.submit(ids)
        return pb.InferResponse(
            model_name=request.model_name, task_type="feature_extraction", embedding=vector
        )

    handler = grpc.method_handlers_generic_handler(
        "taskorch.v1.ModelService",
        {
            "Infer": grpc.unary_unary_rpc_method_handler(
                infer,
                request_deserializer=pb.InferRequest.FromString,
                response_serializer=pb.InferResponse.SerializeToString,
            )
        },
    )
    await serve(handler, port)


if __name__ == "__main__":
    _loop.run(main(int(sys.argv[1]), Path(sys.argv[2])))
