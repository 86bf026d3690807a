"""What collections ask of the engine (core.collections.Embedder): which embedding model a
collection uses, and normalised embeddings through the model's dynamic batcher."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.engine import InferenceEngine
from taskorch.inference.task_types import TaskType

_PROBE = {"inputs": ["probe"]}


class EngineEmbedder:
    """Embeds texts with the feature_extraction models of an :class:`InferenceEngine`."""

    def __init__(self, engine: InferenceEngine) -> None:
        self.engine = engine

    def resolve(self, model_name: str) -> str:
        """The embedding model to use ("" = the default feature_extraction model).

        Raises:
            ModelNotFound: no such model (the message lists the models).
            InvalidArgument: not an embedding model (``model_name``).
            Unavailable: the model is loading or failed to load.
        """
        request = self.engine.check(TaskType.FEATURE_EXTRACTION, model_name, _PROBE, {})
        return request.model_name

    async def embed(
        self, model_name: str, texts: Sequence[str], *, field: str
    ) -> npt.NDArray[np.float32]:
        """L2-normalised embeddings, one row per text.

        Raises:
            InvalidArgument: a text is longer than the model reads (``field`` names it).
        """
        try:
            request = self.engine.check(
                TaskType.FEATURE_EXTRACTION,
                model_name,
                {"inputs": list(texts)},
                {"normalize": True},
            )
        except InvalidArgument as exc:
            if exc.violations and exc.violations[0].field.startswith("input_data"):
                raise InvalidArgument(exc.message, field=field) from None
            raise
        result = (await self.engine.run(request)).result
        return np.asarray(result["embeddings"], dtype=np.float32)
