"""Token generation on ONNX Runtime with past key/values, streamed as text deltas.

``DecoderGenerator`` serves a causal LM with *continuous batching*: one thread runs a loop
that, at every step, admits waiting sequences (prefilled together, left-padded), then decodes
one token for every running sequence in a single ``session.run``. Sequences join and leave
the running batch between steps; each keeps its own slice of the KV cache (rows of the batched
past tensors, left-padded to a common length, with an attention mask and true position ids),
so aggregate tokens/s grows with concurrency while greedy outputs stay those of a lone run.

``Seq2SeqGenerator`` runs encoder-decoder models (merged decoder with ``use_cache_branch``)
one sequence at a time.

Deltas are handed to the event loop with ``call_soon_threadsafe``; a request that is cancelled
(its ``cancel`` event set or its coroutine cancelled) is dropped from the batch at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from taskorch.domain.errors import InternalError, TaskorchError, Unavailable
from taskorch.inference.sampling import SamplingSettings, TokenSampler
from taskorch.inference.sessions import ModelSession
from taskorch.inference.streaming import IncrementalDecoder, StopFilter

log = logging.getLogger(__name__)

OnText = Callable[[str], Awaitable[None]]
Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

# Prompts are prefilled together while their padded size stays under this many tokens.
PREFILL_TOKEN_BUDGET = 1024


@dataclass(frozen=True)
class GenerationSettings:
    """What one generation request asked for."""

    max_new_tokens: int = 128
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationOutcome:
    """The finished sequence: its text is exactly the concatenation of the streamed deltas."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finish_reason: str  # "eos" | "stop" | "length" | "cancelled"
    time_to_first_token: float | None
    seconds: float

    @property
    def tokens_generated(self) -> int:
        """Tokens the model produced for this sequence."""
        return len(self.token_ids)


class _Sequence:
    """One request's state, shared by the event loop and the generation thread."""

    def __init__(
        self,
        prompt_ids: Sequence[int],
        settings: GenerationSettings,
        tokenizer: Any,
        eos_ids: frozenset[int],
        max_total: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.prompt_ids = list(prompt_ids)
        self.settings = settings
        self.sampler = TokenSampler(settings.sampling)
        self.decoder = IncrementalDecoder(tokenizer)
        self.stop_filter = StopFilter(settings.stop)
        self.eos_ids = eos_ids
        self.max_total = max_total
        self.loop = loop
        self.generated: list[int] = []
        self.pieces: list[str] = []
        self.deltas: asyncio.Queue[str | None] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.next_token: int = -1  # sampled but not yet fed to the model

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def _emit(self, text: str) -> None:
        if text:
            self.pieces.append(text)
            self.loop.call_soon_threadsafe(self.deltas.put_nowait, text)

    def accept(self, logits: FloatArray) -> None:
        """Choose the next token from ``logits`` and stream what it completes (thread side)."""
        if self.cancelled.is_set():
            self.finish("cancelled")
            return
        token = self.sampler.choose(logits, seen=(*self.prompt_ids, *self.generated))
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if token in self.eos_ids:
            self.finish("eos")
            return
        self.generated.append(token)
        self.next_token = token
        self._emit(self.stop_filter.feed(self.decoder.push(token)))
        if self.stop_filter.stopped:
            self.finish("stop")
        elif (
            len(self.generated) >= self.settings.max_new_tokens
            or len(self.prompt_ids) + len(self.generated) >= self.max_total
        ):
            self.finish("length")

    def finish(self, reason: str, error: BaseException | None = None) -> None:
        """End the sequence (thread side): flush held-back text, wake the waiting coroutine."""
        if self.done:
            return
        if error is None and reason != "cancelled":
            self._emit(self.stop_filter.feed(self.decoder.flush()))
            self._emit(self.stop_filter.finish())
        self.finish_reason = reason
        self.error = error
        self.loop.call_soon_threadsafe(self.deltas.put_nowait, None)

    def outcome(self) -> GenerationOutcome:
        ttft = None if self.first_token_at is None else self.first_token_at - self.started
        return GenerationOutcome(
            text="".join(self.pieces),
            token_ids=tuple(self.generated),
            prompt_tokens=len(self.prompt_ids),
            finish_reason=self.finish_reason or "cancelled",
            time_to_first_token=ttft,
            seconds=time.perf_counter() - self.started,
        )


async def _stream(
    seq: _Sequence, on_output: OnText | None, cancel: asyncio.Event | None
) -> GenerationOutcome:
    """Forward a sequence's deltas to ``on_output`` until it ends; cancel it on request."""
    watcher: asyncio.Task[bool] | None = None
    if cancel is not None:
        watcher = asyncio.ensure_future(cancel.wait())
        watcher.add_done_callback(lambda _: seq.cancelled.set())
    try:
        while True:
            delta = await seq.deltas.get()
            if delta is None:
                break
            if on_output is not None:
                await on_output(delta)
    except BaseException:
        seq.cancelled.set()
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
    if seq.error is not None:
        raise seq.error
    return seq.outcome()


def _model_error(name: str, exc: BaseException) -> BaseException:
    if isinstance(exc, TaskorchError):
        return exc
    return InternalError(f"model {name!r} failed during generation: {type(exc).__name__}: {exc}")


class DecoderGenerator:
    """Continuous batching for a decoder-only (causal) LM exported with past key/values."""

    def __init__(
        self,
        name: str,
        session: ModelSession,
        tokenizer: Any,
        *,
        eos_ids: frozenset[int],
        pad_id: int,
        max_batch_size: int,
        context_window: int,
        max_waiting: int = 256,
    ) -> None:
        self.name = name
        self.session = session
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.max_batch_size = max_batch_size
        self.context_window = context_window
        self.max_waiting = max_waiting
        self._past_names = [n for n in session.input_names if n.startswith("past_key_values")]
        self._present_names = [n.replace("past_key_values", "present") for n in self._past_names]
        self._has_positions = "position_ids" in session.input_names
        first = session.input(self._past_names[0])
        self._kv_heads = int(first.shape[1])
        self._head_dim = int(first.shape[3])
        self._kv_dtype = np.float16 if first.dtype == "float16" else np.float32
        self._waiting: queue.Queue[_Sequence] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"generate-{name}", daemon=True)
        self._thread_started = False
        self._lock = threading.Lock()
        self.steps = 0
        self.tokens = 0
        # Running batch: rows, past tensors [B, H, L, D], attention mask [B, L], next positions [B].
        self._rows: list[_Sequence] = []
        self._past: list[FloatArray] = []
        self._mask: Int64Array = np.zeros((0, 0), dtype=np.int64)
        self._positions: Int64Array = np.zeros((0,), dtype=np.int64)

    def start(self) -> None:
        """Start the generation thread (idempotent)."""
        with self._lock:
            if not self._thread_started:
                self._thread.start()
                self._thread_started = True

    async def close(self) -> None:
        """Stop the thread; sequences still running end with ``Unavailable``."""
        self._closed.set()
        if self._thread_started:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)
        while not self._waiting.empty():
            self._waiting.get_nowait().finish(
                "cancelled", Unavailable(f"model {self.name!r} was unloaded")
            )

    @property
    def running(self) -> int:
        """Sequences in the running batch."""
        return len(self._rows)

    async def generate(
        self,
        prompt_ids: Sequence[int],
        settings: GenerationSettings,
        *,
        on_output: OnText | None = None,
        cancel: asyncio.Event | None = None,
    ) -> GenerationOutcome:
        """Generate a continuation of ``prompt_ids``, streaming text deltas to ``on_output``.

        Raises:
            Unavailable: too many sequences are waiting, or the model is closing.
            InternalError: ONNX Runtime failed on the batch this sequence was in.
        """
        if self._closed.is_set():
            raise Unavailable(f"model {self.name!r} is not serving")
        if self._waiting.qsize() >= self.max_waiting:
            raise Unavailable(f"model {self.name!r} has {self.max_waiting} generations waiting")
        self.start()
        seq = _Sequence(
            prompt_ids,
            settings,
            self.tokenizer,
            self.eos_ids,
            self.context_window,
            asyncio.get_running_loop(),
        )
        self._waiting.put(seq)
        return await _stream(seq, on_output, cancel)

    # --- the generation thread -----------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                admitted = self._admit()
                if not admitted and not self._rows:
                    continue
                if self._rows:
                    self._decode_step()
            except BaseException as exc:  # a model crash fails the sequences in flight only
                # BaseException too: one that ended this thread would leave every caller of
                # the model waiting for ever.
                log.exception("generation step failed for model %s", self.name)
                error = _model_error(self.name, exc)
                for seq in self._rows:
                    seq.finish("error", error)
                self._reset()
        for seq in self._rows:
            seq.finish("cancelled", Unavailable(f"model {self.name!r} was unloaded"))
        self._reset()

    def _reset(self) -> None:
        self._rows = []
        self._past = []
        self._mask = np.zeros((0, 0), dtype=np.int64)
        self._positions = np.zeros((0,), dtype=np.int64)

    def _admit(self) -> bool:
        """Move waiting sequences into the batch (prefilling them); block briefly when idle."""
        room = self.max_batch_size - len(self._rows)
        group: list[_Sequence] = []
        longest = 0
        while room > len(group):
            try:
                timeout = 0.05 if not self._rows and not group else None
                seq = self._waiting.get(timeout=timeout) if timeout else self._waiting.get_nowait()
            except queue.Empty:
                break
            if seq.cancelled.is_set():
                seq.finish("cancelled")
                continue
            longest = max(longest, len(seq.prompt_ids))
            group.append(seq)
            if longest * len(group) >= PREFILL_TOKEN_BUDGET:
                break
        if not group:
            return False
        try:
            self._prefill(group)
        except BaseException as exc:  # as in _loop
            log.exception("prefill failed for model %s", self.name)
            for seq in group:
                seq.finish("error", _model_error(self.name, exc))
        return True

    def _empty_past(self, batch: int) -> list[FloatArray]:
        shape = (batch, self._kv_heads, 0, self._head_dim)
        return [np.zeros(shape, dtype=self._kv_dtype) for _ in self._past_names]

    def _prefill(self, group: list[_Sequence]) -> None:
        width = max(len(s.prompt_ids) for s in group)
        ids = np.full((len(group), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(group), width), dtype=np.int64)
        for row, seq in enumerate(group):
            n = len(seq.prompt_ids)
            ids[row, width - n :] = seq.prompt_ids
            mask[row, width - n :] = 1
        feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if self._has_positions:
            feed["position_ids"] = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        feed.update(zip(self._past_names, self._empty_past(len(group)), strict=True))
        out = self.session.run(feed, ["logits", *self._present_names])
        logits = out["logits"][:, -1, :]
        for row, seq in enumerate(group):
            seq.accept(logits[row])
        self._merge(group, [out[n] for n in self._present_names], mask)
        self._drop_finished()

    def _merge(self, group: list[_Sequence], past: list[FloatArray], mask: Int64Array) -> None:
        """Append prefilled rows to the running batch, left-padding the shorter side."""
        positions = mask.sum(axis=1).astype(np.int64)
        if not self._rows:
            self._rows, self._past, self._mask, self._positions = group, past, mask, positions
            return
        length = max(self._mask.shape[1], mask.shape[1])

        def pad(array: npt.NDArray[Any], axis: int) -> npt.NDArray[Any]:
            extra = length - array.shape[axis]
            if extra == 0:
                return array
            widths = [(0, 0)] * array.ndim
            widths[axis] = (extra, 0)
            return np.pad(array, widths)

        self._past = [
            np.concatenate([pad(old, 2), pad(new, 2)], axis=0)
            for old, new in zip(self._past, past, strict=True)
        ]
        self._mask = np.concatenate([pad(self._mask, 1), pad(mask, 1)], axis=0)
        self._positions = np.concatenate([self._positions, positions])
        self._rows = [*self._rows, *group]

    def _decode_step(self) -> None:
        batch = len(self._rows)
        ids = np.array([[s.next_token] for s in self._rows], dtype=np.int64)
        mask = np.concatenate([self._mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if self._has_positions:
            feed["position_ids"] = self._positions[:, None]
        feed.update(zip(self._past_names, self._past, strict=True))
        out = self.session.run(feed, ["logits", *self._present_names])
        self.steps += 1
        self.tokens += batch
        self._past = [out[n] for n in self._present_names]
        self._mask = mask
        self._positions = self._positions + 1
        logits = out["logits"][:, -1, :]
        for row, seq in enumerate(self._rows):
            seq.accept(logits[row])
        self._drop_finished()

    def _drop_finished(self) -> None:
        keep = [i for i, s in enumerate(self._rows) if not s.done and not s.cancelled.is_set()]
        for seq in self._rows:
            if seq.cancelled.is_set() and not seq.done:
                seq.finish("cancelled")
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset()
            return
        index = np.array(keep)
        self._rows = [self._rows[i] for i in keep]
        mask = self._mask[index]
        # Columns that are padding for every remaining row can go.
        start = int(np.argmax(mask.any(axis=0))) if mask.size else 0
        self._mask = mask[:, start:]
        self._past = [p[index][:, :, start:, :] for p in self._past]
        self._positions = self._positions[index]


class Seq2SeqGenerator:
    """Greedy/sampled generation for encoder-decoder models, one sequence at a time."""

    def __init__(
        self,
        name: str,
        encoder: ModelSession,
        decoder: ModelSession,
        tokenizer: Any,
        *,
        eos_ids: frozenset[int],
        decoder_start_id: int,
        forced_bos_id: int | None = None,
        suppress_ids: Sequence[int] = (),
        begin_suppress_ids: Sequence[int] = (),
        max_output_tokens: int = 512,
    ) -> None:
        self.name = name
        self.encoder = encoder
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.decoder_start_id = decoder_start_id
        # BART-family models (TAPEX, bart-large-cnn) always produce this token first; as
        # transformers' ForcedBOSTokenLogitsProcessor, it is fed after the start token and not
        # counted as generated.
        self.forced_bos_id = forced_bos_id
        # Whisper's generation config: tokens never produced, and tokens not produced first
        # (transformers' SuppressTokens and SuppressTokensAtBegin logits processors).
        self.suppress_ids = np.array(sorted(set(suppress_ids)), dtype=np.int64)
        self.begin_suppress_ids = np.array(sorted(set(begin_suppress_ids)), dtype=np.int64)
        self.max_output_tokens = max_output_tokens
        self._past_names = [n for n in decoder.input_names if n.startswith("past_key_values")]
        self._lock = threading.Lock()

    async def close(self) -> None:
        """Nothing to release beyond the sessions (kept for symmetry with the decoder)."""

    async def generate(
        self,
        prompt_ids: Sequence[int],
        settings: GenerationSettings,
        *,
        on_output: OnText | None = None,
        cancel: asyncio.Event | None = None,
        encoder_feed: dict[str, npt.NDArray[Any]] | None = None,
    ) -> GenerationOutcome:
        """Encode ``prompt_ids`` and decode an output, streaming deltas to ``on_output``.

        With ``encoder_feed`` (a speech model's ``input_features``, batch of one), the encoder
        runs on it instead and ``prompt_ids`` are the decoder's first tokens (Whisper's
        start-of-transcript, language, task and no-timestamps tokens).
        """
        loop = asyncio.get_running_loop()
        seq = _Sequence(
            prompt_ids,
            settings,
            self.tokenizer,
            self.eos_ids,
            len(prompt_ids) + self.max_output_tokens,
            loop,
        )
        worker = loop.run_in_executor(None, self._run, seq, encoder_feed)
        try:
            return await _stream(seq, on_output, cancel)
        finally:
            seq.cancelled.set()
            with contextlib.suppress(Exception):
                await worker

    def _run(self, seq: _Sequence, encoder_feed: dict[str, npt.NDArray[Any]] | None) -> None:
        with self._lock:
            try:
                self._decode(seq, encoder_feed)
            except BaseException as exc:  # as in DecoderGenerator._loop
                log.exception("seq2seq generation failed for model %s", self.name)
                seq.finish("error", _model_error(self.name, exc))

    def _decode(self, seq: _Sequence, encoder_feed: dict[str, npt.NDArray[Any]] | None) -> None:
        feed: dict[str, Any] = {"use_cache_branch": np.array([False])}
        if encoder_feed is None:
            ids = np.array([seq.prompt_ids], dtype=np.int64)
            mask = np.ones_like(ids)
            encoder_feed = {"input_ids": ids, "attention_mask": mask}
            start = [self.decoder_start_id]
            if self.forced_bos_id is not None:
                start.append(self.forced_bos_id)
            if "encoder_attention_mask" in self.decoder.input_names:
                feed["encoder_attention_mask"] = mask
        else:
            start = list(seq.prompt_ids)
        feed["encoder_hidden_states"] = self.encoder.run(encoder_feed)[self.encoder.output_names[0]]
        feed["input_ids"] = np.array([start], dtype=np.int64)
        first = True
        for name in self._past_names:
            info = self.decoder.input(name)
            feed[name] = np.zeros((1, int(info.shape[1]), 0, int(info.shape[3])), np.float32)
        encoder_past: dict[str, Any] = {}
        while not seq.done:
            out = self.decoder.run(feed)
            logits = out["logits"][0, -1, :]
            if self.suppress_ids.size or (first and self.begin_suppress_ids.size):
                logits = logits.copy()
                logits[self.suppress_ids[self.suppress_ids < logits.shape[0]]] = -np.inf
                if first:
                    begin = self.begin_suppress_ids
                    logits[begin[begin < logits.shape[0]]] = -np.inf
            first = False
            seq.accept(logits)
            if seq.done:
                break
            for name in self._past_names:
                present = out[name.replace("past_key_values", "present")]
                if ".encoder." in name:
                    encoder_past.setdefault(name, present)
                    feed[name] = encoder_past[name]
                else:
                    feed[name] = present
            feed["input_ids"] = np.array([[seq.next_token]], dtype=np.int64)
            feed["use_cache_branch"] = np.array([True])
