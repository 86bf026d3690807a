"""A loaded model: its ONNX session(s), tokenizer or image processor, and batcher or generator.

``LoadedModel.load`` does the slow, blocking part (reading the graph, building the session,
loading the tokenizer) and is meant to run on a thread. Encoder families get a
``DynamicBatcher`` whose items are single tokenised inputs, and on a CPU with several cores one
more session per batching instance (``instances`` in model.yaml), each with its share of the
cores; causal LMs get a continuous-batching ``DecoderGenerator``; encoder-decoder models (seq2seq
LMs, Whisper, image captioners) a ``Seq2SeqGenerator``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InvalidArgument
from taskorch.inference.batching import DynamicBatcher
from taskorch.inference.config import ModelConfig, Pooling, Truncation
from taskorch.inference.generation import DecoderGenerator, Seq2SeqGenerator
from taskorch.inference.sessions import ModelSession, default_threads
from taskorch.inference.task_types import (
    IMAGE_FAMILIES,
    MEDIA_FAMILIES,
    OWN_PREPROCESSING_FAMILIES,
    SELF_RUN_FAMILIES,
    SEQ2SEQ_FAMILIES,
    ModelFamily,
    task_types_of,
)
from taskorch.inference.types import ModelInfo, ModelState

log = logging.getLogger(__name__)

Array = npt.NDArray[Any]
Feed = dict[str, Array]  # one input, no batch axis
Outputs = dict[str, Array]  # one input's outputs, no batch axis, padding removed


_IMPORT_LOCK = threading.Lock()


def _transformers() -> Any:
    """``transformers``, imported once under a lock (its lazy imports race across threads)."""
    from taskorch.inference.export import offline_environment

    offline_environment()
    with _IMPORT_LOCK:
        import transformers
        from transformers import AutoImageProcessor, AutoTokenizer  # noqa: F401

    return transformers


def folder_size(path: Path) -> int:
    """Bytes under ``path`` (following no symlinked folders)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class LoadedModel:
    """One model ready to serve."""

    def __init__(
        self,
        name: str,
        path: Path,
        config: ModelConfig,
        session: ModelSession,
        *,
        tokenizer: Any = None,
        image_processor: Any = None,
        feature_extractor: Any = None,
        extra_sessions: Mapping[str, ModelSession] | None = None,
        instance_sessions: Sequence[ModelSession] = (),
        hf_config: Mapping[str, Any] | None = None,
        load_seconds: float = 0.0,
    ) -> None:
        self.name = name
        self.path = path
        self.config = config
        self.session = session
        self.tokenizer = tokenizer
        self._fast: Any = None
        self.image_processor = image_processor
        self.feature_extractor = feature_extractor  # speech models' audio -> log-mel features
        self.extra_sessions = dict(extra_sessions or {})
        # Batching instances' own sessions; none: every batch runs on ``session``.
        self.instance_sessions = tuple(instance_sessions)
        self.hf_config = dict(hf_config or {})
        # What a media pipeline reads from the folder once (a voice config, a dictionary).
        self.media: dict[str, Any] = {}
        self.load_seconds = load_seconds
        self.size_bytes = folder_size(path)
        self.labels = self._labels()
        self.pad_id = self._pad_id()
        self.batcher: DynamicBatcher[Feed, Outputs] | None = None
        self.decoder: DecoderGenerator | None = None
        self.seq2seq: Seq2SeqGenerator | None = None
        self._sequence_outputs = {
            o.name for o in session.outputs if len(o.shape) >= 2 and _is_sequence_axis(o.shape[1])
        }
        family = config.family
        if family is ModelFamily.CAUSAL_LM:
            self.decoder = DecoderGenerator(
                name,
                session,
                tokenizer,
                eos_ids=self.eos_ids(),
                pad_id=self.pad_id,
                max_batch_size=config.max_batch_size,
                context_window=self.context_window,
                max_waiting=config.max_queue_size,
            )
        elif family in SEQ2SEQ_FAMILIES:
            speech = family is ModelFamily.SPEECH_SEQ2SEQ
            self.seq2seq = Seq2SeqGenerator(
                name,
                session,
                self.extra_sessions["decoder"],
                tokenizer,
                eos_ids=self.eos_ids(),
                decoder_start_id=int(self.hf_config.get("decoder_start_token_id") or self.pad_id),
                forced_bos_id=self._forced_bos_id(),
                suppress_ids=self._generation_ids("suppress_tokens") if speech else (),
                begin_suppress_ids=(
                    self._generation_ids("begin_suppress_tokens") if speech else ()
                ),
            )
        elif family not in SELF_RUN_FAMILIES:
            # Media families (and SpeechT5's decoding loop) run their graphs from their pipelines
            # (one request at a time per graph call, on a thread): their inputs are not token
            # sequences to pad together.
            self.batcher = DynamicBatcher(
                name,
                self._run_batch,
                max_batch_size=config.max_batch_size,
                max_queue_delay_ms=config.max_queue_delay_ms,
                max_queue_size=config.max_queue_size,
                instances=self.instances,
            )

    @property
    def instances(self) -> int:
        """Batching instances running side by side (1 for generators)."""
        return len(self.instance_sessions) or 1

    @property
    def capacity(self) -> int:
        """Requests it runs at once: a batch on each batching instance (a generator's batch is
        the sequences it decodes together)."""
        return self.config.max_batch_size * self.instances

    # --- loading -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        name: str,
        path: Path,
        config: ModelConfig,
        *,
        prefer_gpu: bool = True,
        threads: int | None = None,
    ) -> LoadedModel:
        """Build sessions and tokenizer for the model in ``path`` (blocking; run it on a thread).

        Raises:
            Exception: anything ONNX Runtime or transformers raise; the engine records it.
        """
        transformers: Any = (
            _transformers() if config.family not in OWN_PREPROCESSING_FAMILIES else None
        )
        started = time.perf_counter()
        hf_config: dict[str, Any] = {}
        if (path / "config.json").exists():
            hf_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        onnx_dir = path / config.onnx_subfolder if config.onnx_subfolder else path
        extra: dict[str, ModelSession] = {}
        if config.family in SEQ2SEQ_FAMILIES:
            main = ModelSession(
                onnx_dir / "encoder_model.onnx",
                providers=config.providers,
                prefer_gpu=prefer_gpu,
                threads=threads,
            )
            extra["decoder"] = ModelSession(
                onnx_dir / "decoder_model_merged.onnx",
                providers=config.providers,
                prefer_gpu=prefer_gpu,
                threads=threads,
            )
        elif config.family in MEDIA_FAMILIES or config.family is ModelFamily.SPEECHT5_TTS:
            # SpeechT5: the encoder is the main graph, the decoder and postnet + vocoder are
            # files of their roles (model.yaml ``files``).
            main = ModelSession(
                onnx_dir / config.onnx_file,
                providers=config.providers,
                prefer_gpu=prefer_gpu,
                threads=threads,
            )
            for role, file in (config.extra.get("files") or {}).items():
                if str(file).endswith(".onnx"):
                    extra[role] = ModelSession(
                        path / file,
                        providers=config.providers,
                        prefer_gpu=prefer_gpu,
                        threads=threads,
                    )
                elif not (path / file).exists():
                    raise FileNotFoundError(f"{role} file {path / file} is missing")
        else:
            onnx_file = onnx_dir / config.onnx_file
            if not onnx_file.exists():
                raise FileNotFoundError(f"ONNX file {onnx_file} is missing")
            main = ModelSession(
                onnx_file, providers=config.providers, prefer_gpu=prefer_gpu, threads=threads
            )
        instance_sessions: list[ModelSession] = []
        if config.family not in (
            ModelFamily.CAUSAL_LM,
            *SEQ2SEQ_FAMILIES,
            *SELF_RUN_FAMILIES,
        ):
            cores = threads or default_threads()
            count = batching_instances(config.instances, cores=cores, on_cuda=main.on_cuda)
            if count > 1:
                instance_sessions = [
                    ModelSession(
                        main.path,
                        providers=main.providers_active,
                        prefer_gpu=prefer_gpu,
                        threads=max(1, cores // count),
                    )
                    for _ in range(count)
                ]
        tokenizer = None
        image_processor = None
        feature_extractor = None
        if config.family is ModelFamily.SPEECH_SEQ2SEQ:
            feature_extractor = transformers.AutoFeatureExtractor.from_pretrained(path)
        if config.family is ModelFamily.IMAGE_CAPTIONING:  # pixels in, a tokenizer's text out
            image_processor = transformers.AutoImageProcessor.from_pretrained(path, use_fast=False)
        if config.family in OWN_PREPROCESSING_FAMILIES:
            pass  # no tokenizer: the pipelines bring their own pre-processing
        elif config.family in IMAGE_FAMILIES:
            image_processor = transformers.AutoImageProcessor.from_pretrained(path, use_fast=False)
        else:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            if tokenizer.pad_token is None and tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token
            if config.family is ModelFamily.SEQ2SEQ_LM:
                tokenizer.model_input_names = ["input_ids", "attention_mask"]
        return cls(
            name,
            path,
            config,
            main,
            tokenizer=tokenizer,
            image_processor=image_processor,
            feature_extractor=feature_extractor,
            extra_sessions=extra,
            instance_sessions=instance_sessions,
            hf_config=hf_config,
            load_seconds=time.perf_counter() - started,
        )

    def start(self) -> None:
        """Start the batcher / generation thread (on the running event loop)."""
        if self.batcher is not None:
            self.batcher.start()
        if self.decoder is not None:
            self.decoder.start()

    async def close(self) -> None:
        """Stop serving; queued requests fail with ``Unavailable``."""
        if self.batcher is not None:
            await self.batcher.close()
        if self.decoder is not None:
            await self.decoder.close()
        if self.seq2seq is not None:
            await self.seq2seq.close()

    # --- facts ---------------------------------------------------------------------------

    def _labels(self) -> tuple[str, ...]:
        if self.config.labels is not None:
            return self.config.labels
        id2label = self.hf_config.get("id2label")
        if isinstance(id2label, dict) and self.config.family in (
            ModelFamily.SEQUENCE_CLASSIFICATION,
            ModelFamily.TOKEN_CLASSIFICATION,
            ModelFamily.IMAGE_CLASSIFICATION,
            ModelFamily.OBJECT_DETECTION,
            ModelFamily.SEMANTIC_SEGMENTATION,
            ModelFamily.AUDIO_CLASSIFICATION,
        ):
            return tuple(str(id2label[k]) for k in sorted(id2label, key=int))
        return ()

    def generation_config(self) -> dict[str, Any]:
        """The folder's ``generation_config.json`` (empty when it has none)."""
        file = self.path / "generation_config.json"
        if not file.exists():
            return {}
        loaded = json.loads(file.read_text(encoding="utf-8"))
        return loaded if isinstance(loaded, dict) else {}

    def _generation_ids(self, key: str) -> tuple[int, ...]:
        value = self.generation_config().get(key) or self.hf_config.get(key) or ()
        return tuple(int(v) for v in value if isinstance(v, int))

    def _forced_bos_id(self) -> int | None:
        """The token a seq2seq model must produce first (generation config, then model config)."""
        gen_file = self.path / "generation_config.json"
        if gen_file.exists():
            gen = json.loads(gen_file.read_text(encoding="utf-8"))
            if "forced_bos_token_id" in gen:
                value = gen["forced_bos_token_id"]
                return int(value) if isinstance(value, int) else None
        value = self.hf_config.get("forced_bos_token_id")
        return int(value) if isinstance(value, int) else None

    def _pad_id(self) -> int:
        if self.tokenizer is not None and self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        return int(self.hf_config.get("pad_token_id") or 0)

    def eos_ids(self) -> frozenset[int]:
        """Token ids that end a generated sequence (generation config, model config, tokenizer)."""
        found: set[int] = set()
        sources: list[Any] = [self.hf_config.get("eos_token_id")]
        gen_file = self.path / "generation_config.json"
        if gen_file.exists():
            sources.append(json.loads(gen_file.read_text(encoding="utf-8")).get("eos_token_id"))
        if self.tokenizer is not None:
            sources.append(self.tokenizer.eos_token_id)
        for value in sources:
            if isinstance(value, int):
                found.add(value)
            elif isinstance(value, list):
                found.update(v for v in value if isinstance(v, int))
        return frozenset(found)

    @property
    def context_window(self) -> int:
        """Most tokens (prompt + generated) one sequence may hold."""
        if self.config.context_window is not None:
            return self.config.context_window
        positions = self.hf_config.get("max_position_embeddings") or self.hf_config.get(
            "n_positions"
        )
        return int(positions or self.config.max_input_length)

    def info(self) -> ModelInfo:
        """The READY description of this model."""
        sessions = [self.session, *self.extra_sessions.values()]
        return ModelInfo(
            name=self.name,
            task=self.config.task,
            family=self.config.family,
            state=ModelState.READY,
            path=self.path,
            providers_requested=self.session.providers_requested,
            providers_active=self.session.providers_active,
            inputs=tuple(i for s in sessions for i in s.inputs),
            outputs=tuple(o for s in sessions for o in s.outputs),
            max_batch_size=self.config.max_batch_size,
            max_queue_delay_ms=self.config.max_queue_delay_ms,
            max_input_length=self.config.max_input_length,
            quantization=self.config.quantization,
            quantization_check=self.config.quantization_check,
            labels=self.labels,
            default_for=self.config.default_for,
            task_types=tuple(task_types_of(self.config.family)),
            size_bytes=self.size_bytes,
            load_seconds=self.load_seconds,
            instances=self.instances,
        )

    # --- tokenisation --------------------------------------------------------------------

    def check_length(
        self,
        texts: Sequence[str],
        *,
        pairs: Sequence[str] | None = None,
        field: str,
        truncate_side: str = "longest_first",
    ) -> None:
        """Refuses over-long inputs when the model's policy is ``refuse`` (tokenising them);
        under ``truncate`` there is nothing to check before the request runs.

        Raises:
            InvalidArgument: an input is longer than ``max_input_length``.
        """
        if self.config.truncation is Truncation.REFUSE:
            self.tokenize(texts, pairs=pairs, field=field, truncate_side=truncate_side)

    def tokenize(
        self,
        texts: Sequence[str],
        *,
        pairs: Sequence[str] | None = None,
        field: str,
        truncate_side: str = "longest_first",
        offsets: bool = False,
    ) -> list[Feed]:
        """Tokenise inputs under the model's length policy (truncate or refuse).

        Args:
            texts: first segments.
            pairs: second segments (question answering context, NLI hypothesis).
            field: the request field to name when refusing.
            truncate_side: the tokenizer's ``truncation`` strategy for pairs.
            offsets: also return each token's character span (``offset_mapping``) and, for
                pairs, which segment it belongs to (``sequence_ids``, -1 for special tokens);
                pop them before ``infer``.

        Raises:
            InvalidArgument: an input is longer than ``max_input_length`` and the policy is
                ``refuse``.
        """
        limit = self.config.max_input_length
        refuse = self.config.truncation is Truncation.REFUSE
        if pairs is None and not offsets and self._fast_encoder() is not None:
            return self._fast_tokenize(texts, field=field)
        kwargs: dict[str, Any] = {}
        if not refuse:
            kwargs = {"truncation": truncate_side if pairs else True, "max_length": limit}
        if offsets:
            kwargs["return_offsets_mapping"] = True
        tok = self.tokenizer
        encoded = tok(list(texts), list(pairs), **kwargs) if pairs else tok(list(texts), **kwargs)
        names = [n for n in encoded if n in self.session.input_names]
        feeds: list[Feed] = []
        for index in range(len(texts)):
            feed = {n: np.asarray(encoded[n][index], dtype=np.int64) for n in names}
            length = int(feed["input_ids"].shape[0])
            if refuse and length > limit:
                raise InvalidArgument(
                    f"input is {length} tokens long; model {self.name!r} accepts at most {limit} "
                    "(its truncation policy is refuse)",
                    field=field,
                )
            if offsets:
                feed["offset_mapping"] = np.asarray(encoded["offset_mapping"][index], np.int64)
                if pairs:
                    ids = encoded.sequence_ids(index)
                    feed["sequence_ids"] = np.array([-1 if i is None else i for i in ids])
            feeds.append(feed)
        return feeds

    def _fast_encoder(self) -> Any:
        """The tokenizer's Rust core, set up like ``tokenizer(texts, truncation=…)`` for single
        segments. Calling it directly costs ~20 times less than the transformers wrapper per request
        (measured on MiniLM), which matters when every request holds the event loop."""
        if self._fast is None:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if backend is None:
                self._fast = False
                return None
            from tokenizers import Tokenizer

            fast = Tokenizer.from_str(backend.to_str())
            fast.no_padding()
            if self.config.truncation is Truncation.REFUSE:
                fast.no_truncation()
            else:
                fast.enable_truncation(self.config.max_input_length)
            self._fast = fast
        return self._fast or None

    def _fast_tokenize(self, texts: Sequence[str], *, field: str) -> list[Feed]:
        limit = self.config.max_input_length
        refuse = self.config.truncation is Truncation.REFUSE
        wanted = set(self.session.input_names)
        feeds: list[Feed] = []
        # One text is encoded on this thread: encode_batch hands even a single text to the
        # tokenizer's thread pool, which costs a thread wake-up per request.
        encodings = (
            [self._fast.encode(texts[0])]
            if len(texts) == 1
            else self._fast.encode_batch(list(texts))
        )
        for encoding in encodings:
            length = len(encoding.ids)
            if refuse and length > limit:
                raise InvalidArgument(
                    f"input is {length} tokens long; model {self.name!r} accepts at most {limit} "
                    "(its truncation policy is refuse)",
                    field=field,
                )
            feed = {"input_ids": np.asarray(encoding.ids, dtype=np.int64)}
            if "attention_mask" in wanted:
                feed["attention_mask"] = np.asarray(encoding.attention_mask, dtype=np.int64)
            if "token_type_ids" in wanted:
                feed["token_type_ids"] = np.asarray(encoding.type_ids, dtype=np.int64)
            feeds.append(feed)
        return feeds

    # --- batched encoder inference ---------------------------------------------------------

    async def infer(self, feeds: Sequence[Feed]) -> list[Outputs]:
        """Run inputs through the dynamic batcher; one output mapping per input."""
        assert self.batcher is not None, f"{self.name} is not an encoder model"
        futures = self.batcher.submit_many([(f, _length(f)) for f in feeds])
        try:
            return [await fut for fut in futures]
        finally:
            for fut in futures:
                fut.cancel()

    def _run_batch(self, items: list[Feed], instance: int | None) -> list[Outputs]:
        lengths = [_length(item) for item in items]
        width = max(lengths)
        feed: dict[str, Array] = {}
        for key in items[0]:
            if items[0][key].ndim == 1:
                pad = self.pad_id if key == "input_ids" else 0
                batch = np.full((len(items), width), pad, dtype=items[0][key].dtype)
                for row, item in enumerate(items):
                    batch[row, : item[key].shape[0]] = item[key]
                feed[key] = batch
            else:
                feed[key] = np.stack([item[key] for item in items])
        session = self.session
        if instance is not None and self.instance_sessions:
            session = self.instance_sessions[instance]
        out = session.run(feed)
        if self.config.family is ModelFamily.TEXT_ENCODER:
            vectors = sentence_embeddings(out, feed, self.config.pooling)
            return [{"sentence_embedding": vector} for vector in vectors]
        results: list[Outputs] = []
        for row, length in enumerate(lengths):
            results.append(
                {
                    k: (v[row, :length] if k in self._sequence_outputs else v[row])
                    for k, v in out.items()
                }
            )
        return results


MAX_AUTO_INSTANCES = 4


def batching_instances(configured: int | None, *, cores: int, on_cuda: bool) -> int:
    """How many batching instances a batched model runs: ``configured`` when model.yaml sets
    it, else one per core on a CPU (at most 4, each then gets ``cores // instances`` threads)
    and one on a GPU, which batches better than it shares."""
    if configured is not None:
        return configured
    if on_cuda or cores < 2:
        return 1
    return min(cores, MAX_AUTO_INSTANCES)


def sentence_embeddings(out: Outputs, feed: Feed, pooling: Pooling) -> Array:
    """One float32 vector per input of a text encoder's batch: the model's own
    ``sentence_embedding`` output, else its token embeddings pooled over the real tokens
    (padding excluded), in one vectorised step for the whole batch."""
    if "sentence_embedding" in out:
        return np.asarray(out["sentence_embedding"], dtype=np.float32)
    tokens = out.get("last_hidden_state", out.get("token_embeddings"))
    if tokens is None:
        raise ValueError("the encoder has neither a sentence_embedding nor a last_hidden_state")
    tokens = np.asarray(tokens, dtype=np.float32)
    if pooling is Pooling.CLS:
        return tokens[:, 0]
    mask = feed.get("attention_mask")
    real = (mask if mask is not None else np.ones(tokens.shape[:2], np.int64))[..., None] > 0
    if pooling is Pooling.MAX:
        return np.asarray(np.where(real, tokens, -np.inf).max(axis=1), dtype=np.float32)
    counts = np.maximum(real.sum(axis=1), 1)
    return np.asarray(np.where(real, tokens, 0.0).sum(axis=1) / counts, dtype=np.float32)


def _is_sequence_axis(dim: int | str) -> bool:
    return isinstance(dim, str) and "sequence" in dim


def _length(feed: Feed) -> int:
    ids = feed.get("input_ids")
    return int(ids.shape[0]) if ids is not None else 1
