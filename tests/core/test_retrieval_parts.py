"""The parts of retrieval that need no server: the splitter, rank fusion and the vector
index (exact below HNSW_MIN_VECTORS, HNSW above, removals hidden and rebuilt)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from taskorch.core import vectors
from taskorch.core.collections import fuse, split_text
from taskorch.core.vectors import VectorIndex


def test_a_short_text_is_one_chunk() -> None:
    assert split_text("  a short text \n", 100, 10) == ["a short text"]
    assert split_text("   ", 100, 10) == []


def test_a_long_text_is_split_at_words_with_overlap() -> None:
    words = [f"word{i}" for i in range(200)]
    text = " ".join(words)
    chunks = split_text(text, 100, 30)
    assert len(chunks) > 5
    assert all(len(chunk) <= 100 for chunk in chunks)
    for chunk in chunks:  # no word is cut
        assert all(piece in words for piece in chunk.split())
    for before, after in itertools.pairwise(chunks):
        assert after.split()[0] in before.split()  # the next chunk repeats the end
    assert {w for c in chunks for w in c.split()} == set(words)


def test_sentences_end_chunks_when_they_can() -> None:
    text = "First sentence is here. " * 20
    chunks = split_text(text, 120, 0)
    assert all(chunk.endswith(".") for chunk in chunks)


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    fused = fuse([[1, 2, 3], [3, 1, 4]])
    assert [chunk_id for chunk_id, _ in fused][:2] == [1, 3]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def _unit(rows: int, dims: int, seed: int = 0) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((rows, dims)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_a_small_index_is_exact_and_follows_changes() -> None:
    data = _unit(50, 8)
    index = VectorIndex.build(8, 1, list(range(100, 150)), data)
    assert index.kind == "flat" and len(index) == 50
    hits = index.search(data[7], 3)
    assert hits[0].chunk_id == 107 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    index.apply(2, [], [107])
    assert 107 not in [h.chunk_id for h in index.search(data[7], 50)]
    index.apply(3, [(500, data[7])], [])
    assert index.search(data[7], 1)[0].chunk_id == 500
    assert next(h.chunk_id for h in index.search_among(data[7], [101, 102, 500, 999], 2)) == 500
    assert index.revision == 3


def test_a_large_index_is_hnsw_and_hides_removed_vectors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vectors, "HNSW_MIN_VECTORS", 200)
    data = _unit(400, 16, seed=1)
    index = VectorIndex.build(16, 1, list(range(400)), data)
    assert index.kind == "hnsw"
    exact = np.argsort(-(data @ data[3]))[:10]
    assert len({h.chunk_id for h in index.search(data[3], 10)} & set(exact.tolist())) >= 9
    index.apply(2, [], [3])
    assert all(h.chunk_id != 3 for h in index.search(data[3], 10))
    index.apply(3, [], list(range(4, 60)))  # over a tenth removed: rebuilt without them
    assert len(index) == 343 and all(h.chunk_id >= 60 for h in index.search(data[10], 10))


def test_an_index_that_grows_past_the_threshold_becomes_hnsw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vectors, "HNSW_MIN_VECTORS", 100)
    data = _unit(150, 8, seed=2)
    index = VectorIndex.build(8, 1, list(range(90)), data[:90])
    assert index.kind == "flat"
    index.apply(2, [(i, data[i]) for i in range(90, 150)], [])
    assert index.kind == "hnsw" and len(index) == 150
    assert index.search(data[120], 1)[0].chunk_id == 120
