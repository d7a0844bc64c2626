"""An embedder that remembers every vector it computed, shared by the runs of an evaluation.

The ablation runs the same bars through several memory modes and windows; most texts
embedded (recall queries of the same bars, the detected episodes loaded at each window
start) repeat from run to run. A vector is a pure function of its text, so serving it
from a table changes nothing in the results, only the time.
"""

from __future__ import annotations

import threading

import numpy as np

from backend.embeddings import Embedder, Vectors

__all__ = ["MemoEmbedder"]


class MemoEmbedder(Embedder):
    """``inner`` with an unbounded-until-``max_items`` text -> vector table (thread-safe).

    Same ``model_id`` and ``dim`` as ``inner``; ``hits``/``misses`` count texts served."""

    def __init__(self, inner: Embedder, *, max_items: int = 500_000) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.max_items = max_items
        self._table: dict[str, Vectors] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _embed(self, texts: list[str]) -> Vectors:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            missing = [i for i, text in enumerate(texts) if text not in self._table]
            for i, text in enumerate(texts):
                if text in self._table:
                    out[i] = self._table[text]
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            fresh = self.inner.embed([texts[i] for i in missing])
            out[missing] = fresh
            with self._lock:
                if len(self._table) + len(missing) > self.max_items:
                    self._table.clear()
                for i, vector in zip(missing, fresh, strict=True):
                    self._table[texts[i]] = vector.copy()
        return out
