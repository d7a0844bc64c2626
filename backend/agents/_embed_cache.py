"""An embedder wrapper that serves texts embedded ahead of time in batches.

The decision loop embeds many short texts one at a time: each bar's recall query (its
bucketed situation text, when the store has not seen it yet) and each detected episode
when it is added. MiniLM is several times faster per text in batches (one padded
matrix product instead of many small ones: ~2-5 ms per text in a batch vs ~10-25 ms
alone on 2 cores), so the manager computes those texts for the next few hundred bars,
embeds them in one call (:meth:`PrimedEmbedder.prime`), and the store then finds them
here.

No look-ahead: a vector is a pure function of its text; a text computed ahead (from data
up to its own bar) is only ever embedded early, and it is used only when the store asks
for exactly that text — at its own bar, for the query or write of that bar. Nothing is
written to memory ahead of time.

The wrapper has the wrapped model's ``model_id`` and ``dim`` (the vectors are the
model's own), so Khala collections see the same model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from backend.embeddings import Embedder, Vectors

__all__ = ["PrimedEmbedder"]


class PrimedEmbedder(Embedder):
    """``inner`` plus a bounded table of vectors embedded in batches (module doc).

    Thread-safe (the store embeds queries on its retrieval threads). ``max_items``:
    oldest entries are evicted beyond it. ``hits``/``misses`` count served texts.
    """

    def __init__(self, inner: Embedder, *, max_items: int = 50_000, batch: int = 256) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.max_items = max_items
        self.batch = batch
        self._table: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def size(self) -> int:
        """Vectors held (not ``__len__``: an empty wrapper must stay truthy for callers
        that write ``embedder or default``)."""
        return len(self._table)

    def prime(self, texts: Iterable[str]) -> int:
        """Embed the given texts not yet known, in batches; returns how many were new."""
        with self._lock:
            new = list(dict.fromkeys(t for t in texts if t not in self._table))
        for start in range(0, len(new), self.batch):
            chunk = new[start : start + self.batch]
            vectors = self.inner.embed(chunk)
            with self._lock:
                for text, vector in zip(chunk, vectors, strict=True):
                    vector.setflags(write=False)
                    self._table[text] = vector
                self._evict()
        return len(new)

    def _evict(self) -> None:
        while len(self._table) > self.max_items:
            del self._table[next(iter(self._table))]

    def _embed(self, texts: list[str]) -> Vectors:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: list[int] = []
        with self._lock:
            for i, text in enumerate(texts):
                vector = self._table.get(text)
                if vector is None:
                    missing.append(i)
                else:
                    out[i] = vector
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            out[missing] = self.inner.embed([texts[i] for i in missing])
        return out
