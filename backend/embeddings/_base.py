"""The embedding-function interface every provider implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from backend.errors import EmbeddingError

__all__ = ["Embedder", "Vectors", "l2_normalise"]

Vectors = npt.NDArray[np.float32]
"""A ``(n, dim)`` float32 array, one L2-normalised row per input text."""


def l2_normalise(matrix: npt.NDArray[np.floating]) -> Vectors:
    """Return ``matrix`` (n, d) as float32 with unit-length rows (zero rows stay zero)."""
    out = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return np.asarray(out / norms, dtype=np.float32)


class Embedder(ABC):
    """Turns texts into L2-normalised vectors; cosine similarity is then a dot product.

    Subclasses set ``model_id`` (recorded in every Khala collection, so a store built
    with one model is never queried with another) and ``dim``.
    """

    model_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` into a ``(len(texts), dim)`` float32 array of unit rows, in order.

        Raises :class:`EmbeddingError` if a text is not a string or the provider fails.
        An empty sequence returns a ``(0, dim)`` array.
        """
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise EmbeddingError(f"text {i} is {type(text).__name__}, expected str")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._embed(list(texts))
        if vectors.shape != (len(texts), self.dim):
            raise EmbeddingError(
                f"{self.model_id} returned shape {vectors.shape}, "
                f"expected ({len(texts)}, {self.dim})"
            )
        if not np.all(np.isfinite(vectors)):
            raise EmbeddingError(f"{self.model_id} returned non-finite values")
        return vectors

    def embed_one(self, text: str) -> Vectors:
        """Embed one text; returns a ``(dim,)`` float32 unit vector."""
        vector: Vectors = self.embed([text])[0]
        return vector

    def prime(self, texts: Iterable[str]) -> int:
        """Embed ahead, in batches, texts that will be asked for one at a time (a decision
        loop's next queries and episodes): an embedder that keeps vectors (the disk cache,
        :class:`~backend.embeddings.CachedEmbedder`) stores them and returns how many it
        embedded; one that keeps nothing does nothing and returns 0."""
        return 0

    @abstractmethod
    def _embed(self, texts: list[str]) -> Vectors:
        """Provider-specific: ``(n, dim)`` float32, L2-normalised, same order as ``texts``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r}, dim={self.dim})"
