"""A deterministic, dependency-free embedder for unit tests only (not semantic)."""

from __future__ import annotations

import hashlib
import itertools
import re

import numpy as np

from backend.embeddings._base import Embedder, Vectors, l2_normalise

__all__ = ["HashingEmbedder"]

_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder(Embedder):
    """Feature hashing of lower-cased word unigrams and bigrams into ``dim`` signed buckets.

    Identical texts give identical vectors and texts sharing words have positive cosine,
    which is enough to test storage and ranking plumbing quickly. It carries no meaning:
    never use it for retrieval quality (Weinberger et al. 2009, "Feature hashing").
    """

    def __init__(self, *, dim: int = 384) -> None:
        self.dim = dim
        self.model_id = f"hashing-{dim}"

    def _embed(self, texts: list[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            tokens = _TOKEN.findall(text.lower())
            features = tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)]
            for feature in features or ["<empty>"]:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                sign = 1.0 if digest[4] & 1 else -1.0
                out[row, bucket] += sign
        return l2_normalise(out)
