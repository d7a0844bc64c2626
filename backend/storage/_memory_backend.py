"""The throwaway backend: rows in process memory, exact search, nothing on disk.

For runs that own their memory from start to end — a backtest without ``--store-path``,
an evaluation, a benchmark — chroma's costs buy nothing: a write call costs ~6-10 ms
whatever its size plus ~1.5 ms per record, and its HNSW answers are approximate. Here a
collection is a :class:`~backend.storage._lexical.LexicalIndex` holding every row with
its unit vector: dense search is exact cosine over a numpy matrix (rebuilt after a
write), BM25 is bm25s over the same rows, a write is a dict update. Nothing survives the
process and no other process can see it (``shared = False``: nothing to validate).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from backend.storage._backend import StoredRow, VectorBackend
from backend.storage._codec import meta_ts
from backend.storage._lexical import Filter, LexicalIndex, Row, Stemmer

__all__ = ["MemoryBackend"]


class MemoryBackend(VectorBackend):
    """In-process collections with exact numpy dense search and bm25s (module doc)."""

    kind = "memory"
    shared = False
    max_batch = 100_000

    def __init__(self, *, stemmer: Stemmer | None) -> None:
        self._stemmer = stemmer
        self._cols: dict[str, tuple[dict[str, Any], LexicalIndex]] = {}
        self._lock = threading.RLock()

    def _index(self, name: str) -> LexicalIndex:
        with self._lock:
            return self._cols[name][1]

    def open(self, name: str, *, create: Mapping[str, Any] | None) -> dict[str, Any] | None:
        with self._lock:
            held = self._cols.get(name)
            if held is None:
                if create is None:
                    return None
                held = self._cols[name] = (dict(create), LexicalIndex(stemmer=self._stemmer))
            return dict(held[0])

    def collections(self, prefix: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {n: dict(m) for n, (m, _) in self._cols.items() if n.startswith(prefix)}

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        texts: Sequence[str],
        metas: Sequence[dict[str, Any]],
    ) -> None:
        self._index(name).put(
            [
                (rid, text, meta_ts(meta), dict(meta))
                for rid, text, meta in zip(ids, texts, metas, strict=True)
            ],
            list(np.asarray(vectors, dtype=np.float32)),
        )

    def update(self, name: str, ids: Sequence[str], metas: Sequence[dict[str, Any]]) -> None:
        index = self._index(name)
        old = index.lookup(ids)
        index.put(
            (rid, old[rid][0], meta_ts(meta), dict(meta))
            for rid, meta in zip(ids, metas, strict=True)
            if rid in old
        )

    def delete(self, name: str, ids: Sequence[str]) -> None:
        self._index(name).remove(ids)

    def rows(
        self, name: str, ids: Sequence[str], *, embeddings: bool = False
    ) -> dict[str, StoredRow]:
        index = self._index(name)
        vectors = index.vectors(ids) if embeddings else {}
        return {
            rid: (text, dict(meta), vectors.get(rid))
            for rid, (text, _, meta) in index.lookup(ids).items()
        }

    def lookup(self, name: str, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        return {rid: (text, meta) for rid, (text, _, meta) in self._index(name).lookup(ids).items()}

    def scan(
        self, name: str, *, where: Filter, as_of_ts: float
    ) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            (rid, text, dict(meta))
            for rid, text, ts, meta in self._index(name).items()
            if ts <= as_of_ts and where.matches(meta)
        ]

    def count(self, name: str, *, as_of_ts: float | None) -> int:
        index = self._index(name)
        if as_of_ts is None:
            return index.size
        return sum(1 for _, _, ts, _ in index.items() if ts <= as_of_ts)

    def dense(
        self, name: str, vec: np.ndarray, *, n: int, where: Filter, as_of_ts: float
    ) -> list[Row]:
        return self._index(name).dense(vec, top_k=n, as_of_ts=as_of_ts, where=where)

    def lexical(
        self, name: str, query: str, *, n: int, where: Filter, as_of_ts: float
    ) -> list[Row]:
        return self._index(name).search(query, top_k=n, as_of_ts=as_of_ts, where=where)
