"""The vector index of one collection: a FAISS index over its chunks' vectors, a cache that
is rebuilt from the database whenever it is missing or behind.

Below ``HNSW_MIN_VECTORS`` vectors the index is exact (``IndexFlatIP``: every query reads
every vector; 10k x 384 takes ~1 ms); from there on it is an HNSW graph (M=32), whose
recall@10 against exact search ``bench/retrieval.py`` measures. Vectors are L2-normalised,
so inner product is cosine similarity. HNSW cannot remove vectors: removed ids are hidden
from results and the graph is rebuilt once they are a tenth of it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# faiss's loader logs at INFO which of its builds it tried (an AVX2 build it does not ship,
# then the generic one): noise in every server's start-up log.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
import faiss  # noqa: E402

Vectors = npt.NDArray[np.float32]

HNSW_MIN_VECTORS = 10_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
# Searched candidates per query: at least this, and at least 2 x top_k.
HNSW_EF_SEARCH = 96
REBUILD_FRACTION = 0.1
# OpenMP threads: one for a query (measured on 30k vectors, 2 cores: 0.21 ms p50 against
# 0.51 ms with both cores, whose threads spin-wait for each other), all for building.
# omp_set_num_threads applies to the calling thread.
BUILD_THREADS = faiss.omp_get_max_threads()


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float


def as_matrix(blobs: Iterable[bytes], dimensions: int) -> Vectors:
    data = b"".join(blobs)
    return np.frombuffer(data, dtype="<f4").reshape(-1, dimensions).astype(np.float32)


class VectorIndex:
    """The FAISS index of one collection at one revision of its chunks."""

    def __init__(self, dimensions: int, revision: int) -> None:
        self.dimensions = dimensions
        self.revision = revision
        self._index: faiss.Index = self._flat()
        self._hnsw = False
        self._ids: set[int] = set()
        self._hidden: set[int] = set()

    @classmethod
    def build(
        cls, dimensions: int, revision: int, ids: Sequence[int], vectors: Vectors
    ) -> VectorIndex:
        index = cls(dimensions, revision)
        index._fill(np.asarray(ids, dtype=np.int64), vectors)
        return index

    @property
    def kind(self) -> str:
        """ "hnsw" (approximate) or "flat" (exact)."""
        return "hnsw" if self._hnsw else "flat"

    def __len__(self) -> int:
        return len(self._ids)

    def _flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimensions))

    def _fill(self, ids: npt.NDArray[np.int64], vectors: Vectors) -> None:
        faiss.omp_set_num_threads(BUILD_THREADS)
        self._hidden = set()
        self._ids = {int(i) for i in ids}
        self._hnsw = len(ids) >= HNSW_MIN_VECTORS
        if self._hnsw:
            graph = faiss.IndexHNSWFlat(self.dimensions, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            self._index = faiss.IndexIDMap2(graph)
        else:
            self._index = self._flat()
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors), ids)

    def _all(self) -> tuple[npt.NDArray[np.int64], Vectors]:
        ids = np.asarray(sorted(self._ids), dtype=np.int64)
        vectors = self._index.reconstruct_batch(ids) if len(ids) else self._empty()
        return ids, vectors

    def _empty(self) -> Vectors:
        return np.zeros((0, self.dimensions), dtype=np.float32)

    def apply(
        self, revision: int, added: Sequence[tuple[int, Vectors]], removed: Sequence[int]
    ) -> None:
        """Applies one write's changes and moves the index to ``revision``."""
        faiss.omp_set_num_threads(BUILD_THREADS)
        gone = [i for i in removed if i in self._ids]
        if gone:
            self._ids.difference_update(gone)
            if self._hnsw:
                self._hidden.update(gone)
            else:
                # (faiss's Python wrapper takes an array of ids; its stubs know only
                # the selector.)
                self._index.remove_ids(np.asarray(gone, dtype=np.int64))  # type: ignore[arg-type]
        if added:
            ids = np.asarray([chunk_id for chunk_id, _ in added], dtype=np.int64)
            vectors = np.vstack([v for _, v in added]).astype(np.float32)
            self._index.add_with_ids(vectors, ids)
            self._ids.update(int(i) for i in ids)
        total = int(self._index.ntotal)
        if (not self._hnsw and total >= HNSW_MIN_VECTORS) or (
            self._hnsw and len(self._hidden) > REBUILD_FRACTION * max(total, 1)
        ):
            self._fill(*self._all())
        self.revision = revision

    def search(self, query: Vectors, k: int) -> list[Hit]:
        """The ``k`` nearest chunks to ``query`` (one normalised vector), best first."""
        if len(self) == 0 or k <= 0:
            return []
        faiss.omp_set_num_threads(1)
        asked = min(k + len(self._hidden), int(self._index.ntotal))
        params = None
        if self._hnsw:
            params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                efSearch=max(HNSW_EF_SEARCH, 2 * asked)
            )
        scores, ids = self._index.search(query.reshape(1, -1), asked, params=params)
        hits = [
            Hit(int(i), float(s))
            for s, i in zip(scores[0], ids[0], strict=True)
            if i >= 0 and int(i) not in self._hidden
        ]
        return hits[:k]

    def search_among(self, query: Vectors, chunk_ids: Sequence[int], k: int) -> list[Hit]:
        """Exact search among the given chunks only (a metadata filter's candidates)."""
        # (Chunks added after this index's revision are not in it yet.)
        wanted = np.asarray([i for i in chunk_ids if i in self._ids], dtype=np.int64)
        if not len(wanted) or k <= 0:
            return []
        vectors = self._index.reconstruct_batch(wanted)
        scores = vectors @ query.reshape(-1)
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(int(wanted[i]), float(scores[i])) for i in order]
